"""The memory-mapped baseline feed trains exactly like the in-RAM reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hotpipe.config import load_config
from hotpipe.data.columnar import ColumnarDataset
from hotpipe.errors import ConfigError
from hotpipe.model.sparse_optim import make_row_optimizer
from hotpipe.storage.backing import FileBacking
from hotpipe.train.checkpoint import load_checkpoint
from hotpipe.train.mapped_feed import MappedFeed
from hotpipe.train.run import build_components, train
from tests.conftest import make_dataset

BASE = ["train.progress=false", "train.log_every=5", "model.embedding_dim=4",
        "model.bottom=[8,4]", "model.top=[8,1]", "data.val_fraction=0.2", "data.batch_size=16"]


def _run(data: Path, out: Path, *extra: str, components=None) -> tuple[list[float], np.ndarray, dict]:
    m = train(load_config(overrides=[*BASE, *extra], values={"data.path": str(data)}), out,
              components=components)
    _, records = load_checkpoint(out)
    return json.loads((out / "losses.json").read_text()), np.array(records), m


@pytest.mark.parametrize("opt", ["sgd", "rowwise_adagrad", "adagrad"])
def test_mapped_feed_equals_direct_feed(tmp_path, opt):
    data = make_dataset(tmp_path / "d", rows=600, cards=(500,), seed=7)
    extra = (f"optim.embedding={opt}", "train.epochs=2")
    ref_loss, ref_rec, ref_m = _run(data, tmp_path / "ref", *extra)

    # Another feed is handed in, not monkeypatched: the recipe's seam.
    cfg = load_config(overrides=[*BASE, *extra], values={"data.path": str(data)})
    ds = ColumnarDataset.open(data)
    optimizer = make_row_optimizer(opt, lr=cfg.optim.embedding_lr, dim=4)
    backing = FileBacking(directory=tmp_path / "mapped" / "tables", cardinalities=ds.cardinalities,
                          dim=4, optimizer=optimizer, seed=cfg.train.seed)
    feed = MappedFeed(backing=backing, dim=4)
    comps = build_components(cfg, tmp_path / "mapped", dataset=ds, row_opt=optimizer, feed=feed)
    loss, rec, m = _run(data, tmp_path / "mapped", *extra, components=comps)
    assert comps.feed is feed
    assert loss == ref_loss
    assert np.array_equal(rec, ref_rec)
    assert m["val_auc"] == ref_m["val_auc"] or np.isnan(ref_m["val_auc"])
    # The updates really went into the file (no RAM copy): the map equals the checkpoint.
    table = np.fromfile(tmp_path / "mapped" / "tables" / "table-000.f32", dtype=np.float32)
    assert np.array_equal(table.reshape(rec.shape), rec)


def test_mapped_feed_rejects_several_tables(tmp_path):
    opt = make_row_optimizer("sgd", lr=0.1, dim=4)
    backing = FileBacking(directory=tmp_path, cardinalities=[10, 20], dim=4, optimizer=opt, seed=0)
    with pytest.raises(ConfigError) as e:
        MappedFeed(backing=backing, dim=4)
    assert e.value.key == "cache.backing" and "2 tables" in str(e.value)
    backing.close()
