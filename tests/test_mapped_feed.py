"""The memory-mapped baseline feed trains exactly like the in-RAM reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import hotpipe.train.run as run_mod
from hotpipe.config import load_config
from hotpipe.errors import ConfigError
from hotpipe.model.sparse_optim import make_row_optimizer
from hotpipe.storage.backing import FileBacking
from hotpipe.train.checkpoint import load_checkpoint
from hotpipe.train.mapped_feed import MappedFeed
from hotpipe.train.run import train
from tests.conftest import make_dataset

BASE = ["train.progress=false", "train.log_every=5", "model.embedding_dim=4",
        "model.bottom=[8,4]", "model.top=[8,1]", "data.val_fraction=0.2", "data.batch_size=16"]


def _run(data: Path, out: Path, *extra: str) -> tuple[list[float], np.ndarray, dict]:
    m = train(load_config(overrides=[*BASE, f"data.path={data}", *extra]), out)
    _, records = load_checkpoint(out)
    return json.loads((out / "losses.json").read_text()), np.array(records), m


@pytest.mark.parametrize("opt", ["sgd", "rowwise_adagrad", "adagrad"])
def test_mapped_feed_equals_direct_feed(tmp_path, monkeypatch, opt):
    data = make_dataset(tmp_path / "d", rows=600, cards=(500,), seed=7)
    extra = (f"optim.embedding={opt}", "train.epochs=2")
    ref_loss, ref_rec, ref_m = _run(data, tmp_path / "ref", *extra)

    made: list[MappedFeed] = []

    def mapped(cfg, ds, optimizer, run_dir):
        backing = FileBacking(directory=run_dir / "tables", cardinalities=ds.cardinalities,
                              dim=cfg.model.embedding_dim, optimizer=optimizer, seed=cfg.train.seed)
        made.append(MappedFeed(backing=backing, dim=cfg.model.embedding_dim))
        return made[-1]

    monkeypatch.setattr(run_mod, "make_feed", mapped)
    loss, rec, m = _run(data, tmp_path / "mapped", *extra)
    assert made, "train() did not use the mapped feed"
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
