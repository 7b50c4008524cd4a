"""Exactness: a tiered run equals the untiered run, bit for bit (CPU, fp32)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hotpipe.config import load_config
from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.loader import split_loaders
from hotpipe.errors import CapacityError
from hotpipe.model.sparse_optim import make_row_optimizer
from hotpipe.plan.planner import min_capacity
from hotpipe.storage.backing import FileBacking, HostBacking
from hotpipe.train.checkpoint import load_checkpoint
from hotpipe.train.run import train
from tests.conftest import make_dataset

BASE = ["train.progress=false", "train.log_every=5", "model.embedding_dim=4",
        "model.bottom=[8,4]", "model.top=[8,1]", "data.val_fraction=0.2"]


def _run(data: Path, out: Path, *extra: str) -> tuple[list[float], np.ndarray, dict]:
    m = train(load_config(overrides=[*BASE, f"data.path={data}", *extra]), out)
    losses = json.loads((out / "losses.json").read_text())
    _, records = load_checkpoint(out)
    return losses, np.array(records), m


def _min_cap(data: Path, batch: int, depth: int) -> int:
    ds = ColumnarDataset.open(data)
    tr, _ = split_loaders(ds, batch_size=batch, val_fraction=0.2)
    return min_capacity(tr.id_stream(np.cumsum([0, *ds.cardinalities[:-1]])), depth)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cards=st.lists(st.integers(2, 60), min_size=1, max_size=4),
    batch=st.sampled_from([8, 16, 32]),
    policy=st.sampled_from(["lookahead", "lru", "lfu", "static"]),
    window=st.integers(1, 12),
    depth=st.integers(1, 3),
    slack=st.integers(0, 40),
    opt=st.sampled_from(["sgd", "rowwise_adagrad"]),
    backing=st.sampled_from(["host", "file"]),
)
def test_tiered_equals_untiered(tmp_path_factory, cards, batch, policy, window, depth, slack, opt, backing):
    tmp = tmp_path_factory.mktemp("ex")
    data = make_dataset(tmp / "d", rows=400, cards=tuple(cards), seed=len(cards) + batch)
    common = [f"data.batch_size={batch}", f"optim.embedding={opt}"]
    ref_loss, ref_rec, _ = _run(data, tmp / "ref", *common)
    total = sum(cards)
    cap = min(total, _min_cap(data, batch, depth) + slack)
    if policy == "static":
        cap = min(total, cap + batch * len(cards))  # static also keeps a hot set resident
    loss, rec, m = _run(data, tmp / "tiered", *common, f"cache.policy={policy}", f"cache.capacity={cap}",
                        f"cache.window={window}", f"cache.depth={depth}", f"cache.backing={backing}")
    assert loss == ref_loss
    assert np.array_equal(rec, ref_rec)
    c = m["cache"]
    assert c["hits"] + c["misses"] > 0
    assert c["rows_fetched"] >= c["misses"]


def test_small_cache_really_moves_rows_and_stays_exact(tmp_path):
    data = make_dataset(tmp_path / "d", rows=2000, cards=(400, 30, 900, 50), seed=3)
    common = ["data.batch_size=32", "optim.embedding=rowwise_adagrad", "train.epochs=2"]
    ref_loss, ref_rec, _ = _run(data, tmp_path / "ref", *common)
    cap = _min_cap(data, 32, 2) + 10
    loss, rec, m = _run(data, tmp_path / "t", *common, "cache.policy=lookahead",
                        f"cache.capacity={cap}", "cache.window=16", "cache.depth=2")
    assert loss == ref_loss and np.array_equal(rec, ref_rec)
    c = m["cache"]
    assert c["rows_written_back"] > 0 and c["rows_fetched"] > cap  # evictions happened
    assert 0.0 < c["hit_rate"] < 1.0
    assert set(c["per_table"]) and sum(t["misses"] for t in c["per_table"].values()) == c["misses"]


def test_capacity_too_small_is_a_clear_error(tmp_path):
    data = make_dataset(tmp_path / "d", rows=400, cards=(50, 60), seed=1)
    need = _min_cap(data, 32, 1)
    with pytest.raises(CapacityError) as e:
        _run(data, tmp_path / "t", "data.batch_size=32", "cache.policy=lookahead",
             f"cache.capacity={need - 1}")
    assert e.value.needed == need and str(need) in str(e.value)


def test_tiered_resume_is_exact(tmp_path):
    data = make_dataset(tmp_path / "d", rows=1200, cards=(300, 40, 500), seed=5)
    common = ["data.batch_size=32", "cache.policy=lookahead", "cache.capacity=0.3", "cache.window=8"]
    full, _, _ = _run(data, tmp_path / "full", *common, "train.max_steps=24")
    _run(data, tmp_path / "part", *common, "train.max_steps=10")
    train(load_config(overrides=[*BASE, f"data.path={data}", *common, "train.max_steps=24"]),
          tmp_path / "part", resume=True)
    assert json.loads((tmp_path / "part" / "losses.json").read_text()) == full


@pytest.mark.parametrize("kind", ["host", "file"])
def test_backing_round_trip(tmp_path, kind):
    opt = make_row_optimizer("rowwise_adagrad", lr=0.1, dim=4)
    cards = [10, 3, 7]
    store = (FileBacking(directory=tmp_path, cardinalities=cards, dim=4, optimizer=opt, seed=1)
             if kind == "file" else HostBacking(cardinalities=cards, dim=4, optimizer=opt, seed=1))
    ids = torch.tensor([0, 9, 10, 12, 19, 15])
    rec = torch.arange(6 * 5, dtype=torch.float32).view(6, 5)
    store.write(ids, rec)
    assert torch.equal(store.read(ids), rec)
    store.flush()
    full = np.array(store.export()[0:20])
    assert np.array_equal(full[ids.numpy()], rec.numpy())
    store.close()
    if kind == "file":  # the data is on disk, not just in the map
        again = FileBacking(directory=tmp_path, cardinalities=cards, dim=4, optimizer=opt, seed=1,
                            reuse=True)
        assert torch.equal(again.read(ids), rec)
