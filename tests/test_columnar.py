"""The columnar format rejects damaged datasets with a clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hotpipe.data.columnar import ColumnarDataset, ColumnarWriter, TableSpec
from hotpipe.data.loader import BatchLoader
from hotpipe.errors import DataFormatError
from tests.conftest import make_dataset


def test_truncated_column_file_is_named(tmp_path):
    d = make_dataset(tmp_path / "d", rows=100)
    with open(d / "sparse.bin", "r+b") as f:
        f.truncate(100)
    with pytest.raises(DataFormatError) as e:
        ColumnarDataset.open(d)
    assert "sparse.bin" in str(e.value) and "expected" in str(e.value) and "100 bytes" in str(e.value)


def test_unknown_format_version(tmp_path):
    d = make_dataset(tmp_path / "d", rows=10)
    m = json.loads((d / "manifest.json").read_text())
    m["version"] = 99
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataFormatError, match="v99"):
        ColumnarDataset.open(d)


def test_writer_leaves_nothing_when_interrupted(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(RuntimeError), ColumnarWriter(out, tables=[TableSpec("C1", 5)], num_dense=2) as w:
        w.append(np.zeros(3, np.float32), np.zeros((3, 2), np.float32), np.zeros((3, 1), np.int32))
        raise RuntimeError("killed")
    assert not out.exists()
    assert not list(tmp_path.iterdir())


def test_loader_steps_and_epochs(tmp_path):
    ds = ColumnarDataset.open(make_dataset(tmp_path / "d", rows=100))
    ld = BatchLoader(ds, batch_size=32, drop_last=True, epochs=2)
    assert len(ld) == 6
    assert np.array_equal(ld.sparse_ids(0), ld.sparse_ids(3))  # epoch 2 repeats epoch 1
    assert len(ld.id_stream(np.zeros(ds.num_tables, np.int64), 1, 4)) == 3
    with pytest.raises(IndexError):
        ld.sparse_ids(6)
