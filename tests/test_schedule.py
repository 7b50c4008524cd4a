"""Popular / non-popular scheduling: same samples per epoch, only the order changes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hotpipe.config import load_config
from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.layout import TableLayout
from hotpipe.data.loader import BatchLoader, TrainTrace, split_loaders
from hotpipe.data.schedule import (
    MIXED,
    NON_POPULAR,
    POPULAR,
    Schedule,
    ScheduledLoader,
    build_schedule,
    top_rows,
    window_order,
)
from hotpipe.errors import ConfigError
from hotpipe.model.sparse_optim import make_row_optimizer
from hotpipe.plan.planner import Planner
from hotpipe.storage.backing import HostBacking
from hotpipe.storage.slots import SlotStore
from hotpipe.storage.tiered import TieredStore
from hotpipe.train.checkpoint import load_checkpoint
from hotpipe.train.run import train
from hotpipe.train.tiered_feed import TieredFeed
from tests.conftest import make_dataset

CARDS = (50, 7, 300, 20)
BASE = ["train.progress=false", "train.log_every=5", "model.embedding_dim=4",
        "model.bottom=[8,4]", "model.top=[8,1]", "data.val_fraction=0.2", "data.batch_size=32",
        "train.threads=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("sched") / "d", rows=2048, cards=CARDS, seed=1)


def _loader(data: Path, epochs: int = 1) -> tuple[BatchLoader, TableLayout]:
    ds = ColumnarDataset.open(data)
    return split_loaders(ds, batch_size=32, val_fraction=0.2, epochs=epochs)[0], TableLayout.of(ds)


def _epoch_rows_ok(loader: BatchLoader) -> bool:
    """Every epoch trains each row of the trained range exactly once (the checker)."""
    want = np.arange(loader.start, loader.start + loader.steps_per_epoch * loader.batch_size)
    assert isinstance(loader, ScheduledLoader)
    for e in range(loader.num_steps // loader.steps_per_epoch):
        steps = range(e * loader.steps_per_epoch, (e + 1) * loader.steps_per_epoch)
        rows = np.concatenate([loader.rows(k) for k in steps])
        if not np.array_equal(np.sort(rows), want):
            return False
    return True


def _run(data: Path, out: Path, *extra: str) -> tuple[list[float], np.ndarray, dict]:
    m = train(load_config(overrides=[*BASE, f"data.path={data}", *extra]), out)
    _, records = load_checkpoint(out)
    return json.loads((out / "losses.json").read_text()), np.array(records), m


# -- the order itself --------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(b=st.integers(1, 6), w=st.integers(1, 8), mode=st.sampled_from(["fae", "hotline"]),
       seed=st.integers(0, 2**16), p=st.floats(0, 1))
def test_window_order_regroups_by_kind(b, w, mode, seed, p):
    popular = np.random.default_rng(seed).random(w * b) < p
    order, kinds = window_order(popular, b, mode)
    assert np.array_equal(np.sort(order), np.arange(w * b))  # a permutation
    batches = popular[order].reshape(w, b)
    assert batches[kinds == POPULAR].all()
    assert not batches[kinds == NON_POPULAR].any()
    assert (kinds == MIXED).sum() <= 1 and (~batches[kinds == MIXED]).any(axis=1).all()
    assert (kinds == POPULAR).sum() == popular.sum() // b
    for k in (POPULAR, NON_POPULAR, MIXED):  # each kind keeps the data's order inside
        rows = order.reshape(w, b)[kinds == k].reshape(-1)
        assert np.array_equal(rows, np.sort(rows))
    if (kinds == POPULAR).any():
        assert kinds[0] == POPULAR  # popular work leads: the first fetch overlaps it
    if mode == "fae":
        assert np.all(np.diff(kinds.astype(int)) >= 0)  # popular phase, then the rest, mixed last
    else:
        # Interleaved: never two non-popular batches in a row while popular ones remain
        # after them, when there are at least as many popular ones.
        n_p, n_q = (kinds == POPULAR).sum(), (kinds != POPULAR).sum()
        if n_p >= n_q:
            q = np.flatnonzero(kinds != POPULAR)
            assert np.all(np.diff(q) >= 2)


def test_top_rows_breaks_ties_by_id():
    assert top_rows(np.array([0, 3, 1, 3, 0, 2]), 3).tolist() == [1, 3, 5]
    assert top_rows(np.array([0, 3, 0]), 5).tolist() == [1]  # unseen rows are never hot


@pytest.mark.parametrize("mode", ["fae", "hotline"])
@pytest.mark.parametrize("refresh", [0, 5])
def test_every_sample_once_per_epoch_and_deterministic(data, mode, refresh):
    base, lay = _loader(data, epochs=2)
    s = build_schedule(base, lay, mode=mode, window=3, hot_rows=60, refresh=refresh, sample=0.3, seed=4)
    loader = ScheduledLoader(base, s)
    assert len(loader) == len(base) and _epoch_rows_ok(loader)
    again = build_schedule(base, lay, mode=mode, window=3, hot_rows=60, refresh=refresh, sample=0.3, seed=4)
    assert np.array_equal(s.order, again.order) and np.array_equal(s.kinds, again.kinds)
    assert s.hot_sets == (1 if not refresh else -(-base.steps_per_epoch // 6))  # refresh 5 -> 2 windows
    assert not np.array_equal(s.order, np.arange(s.order.size))  # it did reorder
    # The checker catches a duplicated sample.
    bad = s.order.copy()
    bad[1] = bad[0]
    assert not _epoch_rows_ok(ScheduledLoader(base, Schedule(**{**s.__dict__, "order": bad})))


@pytest.mark.parametrize("mode", ["fae", "hotline"])
def test_popular_batches_touch_only_hot_rows(data, mode):
    base, lay = _loader(data)
    hot_rows = 60
    loader = ScheduledLoader(base, build_schedule(base, lay, mode=mode, window=4, hot_rows=hot_rows,
                                                  sample=1.0))
    # Reference hot set, counted the obvious way over every training row.
    all_ids = np.concatenate([base.sparse_ids(k) + lay.offsets for k in range(len(base))])
    counts = np.bincount(all_ids.ravel(), minlength=lay.num_rows)
    ranked = sorted(np.flatnonzero(counts), key=lambda r: (-counts[r], r))[:hot_rows]
    hot = np.zeros(lay.num_rows, dtype=bool)
    hot[ranked] = True
    kinds = [loader.kind(k) for k in range(len(loader))]
    assert kinds.count(POPULAR) > 0 and kinds.count(POPULAR) < len(kinds)
    popular = 0
    for k in range(len(loader)):
        sample_hot = hot[loader.sparse_ids(k) + lay.offsets].all(axis=1)  # (B,)
        popular += int(sample_hot.sum())
        if kinds[k] == POPULAR:
            assert sample_hot.all()
        elif kinds[k] == NON_POPULAR:
            assert not sample_hot.any()
        else:
            assert not sample_hot.all()
    assert popular == loader.schedule.popular


@pytest.mark.parametrize("mode", ["fae", "hotline"])
def test_rows_are_resident_when_a_non_popular_batch_runs(data, mode):
    base, lay = _loader(data)
    loader = ScheduledLoader(base, build_schedule(base, lay, mode=mode, window=4, hot_rows=40,
                                                  sample=0.5))
    opt = make_row_optimizer("sgd", lr=0.1, dim=4)
    cap = 180  # < 377 rows: the lookahead planner must move rows
    backing = HostBacking(cardinalities=list(CARDS), dim=4, optimizer=opt, seed=0)
    tiers = TieredStore(cache=SlotStore.allocate(cap, 4, opt), backing=backing, layout=lay)
    feed = TieredFeed(tiers=tiers, planner=Planner(num_rows=lay.num_rows, capacity=cap, window=8,
                                                   depth=2, policy="lookahead"), layout=lay)
    reference = backing.read(torch.arange(lay.num_rows))[:, :4].clone()  # nothing is updated below
    checked = 0
    try:
        for inp in feed.steps(loader, 0, len(loader)):
            ids = loader.sparse_ids(inp.step) + lay.offsets  # (B, T) the scheduled step's rows
            assert np.array_equal(inp.batch.sparse.numpy(), ids - lay.offsets)
            resident = feed.store.weights[inp.slots]  # (B, T, D) what compute reads
            assert np.array_equal(resident.numpy(), reference[ids].numpy()), inp.step
            checked += loader.kind(inp.step) != POPULAR
            feed.step_done(inp.step)
    finally:
        feed.close()
    assert checked > 0 and feed.stats.misses > cap  # rows really moved


def test_trace_sees_the_scheduled_order(data):
    base, lay = _loader(data)
    s = build_schedule(base, lay, mode="hotline", window=4, hot_rows=60, sample=0.5)
    trace = TrainTrace(ColumnarDataset.open(data), batch_size=32, val_fraction=0.2,
                       order=lambda ld: ScheduledLoader(ld, s))
    want = ScheduledLoader(base, s)
    for k, ids in enumerate(trace):
        assert np.array_equal(ids, want.sparse_ids(k) + lay.offsets)


# -- end to end -------------------------------------------------------------


def test_mode_none_is_todays_run(data, tmp_path):
    a_loss, a_rec, a = _run(data, tmp_path / "a", "train.max_steps=12")
    b_loss, b_rec, b = _run(data, tmp_path / "b", "train.max_steps=12", "schedule.mode=none")
    assert a_loss == b_loss and np.array_equal(a_rec, b_rec)
    assert "schedule" not in a and "schedule" not in b


@pytest.mark.parametrize("mode", ["fae", "hotline"])
def test_tiered_equals_untiered_under_a_schedule(data, tmp_path, mode):
    sched = [f"schedule.mode={mode}", "schedule.window=4", "schedule.sample=0.5", "cache.capacity=200"]
    ref_loss, ref_rec, ref = _run(data, tmp_path / "ref", *sched)
    loss, rec, m = _run(data, tmp_path / "t", *sched, "cache.policy=lookahead", "cache.window=8",
                        "cache.depth=2", "cache.backing=file")
    assert loss == ref_loss and np.array_equal(rec, ref_rec)
    plain_loss, _, _ = _run(data, tmp_path / "plain")
    assert plain_loss != loss  # the schedule did change the run
    s = m["schedule"]
    assert s["mode"] == mode and 0 < s["popular_fraction"] < 1
    assert sum(s["batches"].values()) == m["steps"] and s["batches"]["popular"] > 0
    assert set(s["stall_seconds"]) == {"popular", "non_popular", "mixed"}
    assert {k: v for k, v in ref["schedule"].items() if k != "stall_seconds"} == \
        {k: v for k, v in s.items() if k != "stall_seconds"}


def test_resume_is_exact_under_a_schedule(data, tmp_path):
    sched = ["schedule.mode=hotline", "schedule.window=3", "schedule.refresh=7", "cache.capacity=150",
             "cache.policy=lookahead", "cache.window=6", "train.epochs=2"]
    full, _, m = _run(data, tmp_path / "full", *sched, "train.max_steps=70")
    _run(data, tmp_path / "part", *sched, "train.max_steps=30")
    resumed = train(load_config(overrides=[*BASE, f"data.path={data}", *sched, "train.max_steps=70"]),
                    tmp_path / "part", resume=True)
    b = json.loads((tmp_path / "part" / "losses.json").read_text())
    assert len(b) == 70 and full == b
    assert m["val_auc"] == resumed["val_auc"]
    assert m["schedule"]["hot_set_refreshes"] > 0


@pytest.mark.parametrize("override, key", [
    ("schedule.mode=bogus", "schedule.mode"),
    ("schedule.window=0", "schedule.window"),
    ("schedule.refresh=-1", "schedule.refresh"),
    ("schedule.sample=0", "schedule.sample"),
    ("schedule.window=true", "schedule.window"),
    ("schedule.windw=4", "schedule.windw"),
])
def test_bad_schedule_config_names_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=[override])
    assert e.value.key == key
