"""Skipped samples' rows left out of the plan (a lagged stale set), and hotline + slipstream
together: exact where they must be (tiered == untiered, resume), and what they save."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hotpipe.config import RunConfig, load_config
from hotpipe.data.schedule import ScheduledLoader
from hotpipe.train.checkpoint import load_checkpoint
from hotpipe.train.run import build_components, train
from hotpipe.train.skip import StaleSkipper, current_rows, plan_lag
from tests.conftest import make_dataset
from tests.test_skip import _math

CARDS = (50, 7, 300, 20)
BASE = ["train.progress=false", "train.log_every=5", "model.embedding_dim=4",
        "model.bottom=[8,4]", "model.top=[8,1]", "data.val_fraction=0.2", "data.batch_size=32",
        "train.threads=1"]
SKIP = ["skip.mode=slipstream", "skip.warmup=6", "skip.interval=6", "skip.hot_rows=150",
        "skip.target_drop=0.5", "cache.capacity=110", "cache.window=4", "cache.depth=1"]
TIERED = ["cache.policy=lookahead", "cache.backing=file"]  # the lag is the same without them
HOTLINE = ["schedule.mode=hotline", "schedule.window=4", "schedule.sample=0.5"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("modes") / "d", rows=2048, cards=CARDS, seed=1)


def _cfg(data: Path, *extra: str) -> RunConfig:
    return load_config(overrides=[*BASE, f"data.path={data}", *extra])


def _run(data: Path, out: Path, *extra: str, lag: bool = True, plan_filter: bool = True,
         resume: bool = False, flush: bool = False,
         check: bool = False) -> tuple[list[float], np.ndarray, dict[str, Any]]:
    """Train with the skipper's stale sets lagged by plan_lag (so the planner sees them) and
    snapshots read without a flush (``flush``: the flushing reader; ``check``: both, compared)."""
    cfg = _cfg(data, *extra)
    c = build_components(cfg, out)
    assert c.skipper is not None
    fast = current_rows(c.feed)

    def flushed(ids: torch.Tensor) -> torch.Tensor:  # the backing tier complete, then read
        c.feed.flush()
        return c.feed.read_rows(ids.reshape(-1, 1)).reshape(ids.numel(), -1)

    def checked(ids: torch.Tensor) -> torch.Tensor:
        got = fast(ids)
        assert torch.equal(got, flushed(ids))  # flushed(): the backing tier complete, then read
        checks.append(ids.numel())
        return got

    checks: list[int] = []
    c.skipper = c.skipper.with_lag(plan_lag(cfg.cache) if lag else 0, plan_filter=plan_filter,
                                   read_rows=checked if check else flushed if flush else fast)
    m = train(cfg, out, components=c, resume=resume)
    assert not check or len(checks) >= 2
    _, records = load_checkpoint(out)
    return json.loads((out / "losses.json").read_text()), np.array(records), m


def test_planned_ids_leave_out_exactly_the_samples_keep_mask_drops():
    rows, t, b = 40, 3, 16
    sk = StaleSkipper(warmup=1, interval=1, target_drop=0.5, hot_rows=40, lag=2,
                      offsets=torch.zeros(t, dtype=torch.int64), num_rows=rows,
                      read_rows=lambda ids: torch.zeros(ids.numel(), 2))
    stale = torch.arange(0, 20)  # rows 0..19 are stale, decided from step 5 on
    sk.sets = [(5, stale)]
    g = np.random.default_rng(0)
    ids = g.integers(0, rows, (b, t))
    ids[:6] = g.integers(0, 20, (6, t))  # six all-stale samples
    sk.done = 2  # step 5 may still get another set (an estimate at 3 would decide it)
    assert sk.planned_ids(5, ids) is ids
    sk.done = 3
    out = sk.planned_ids(5, ids)
    drop = np.isin(ids, stale.numpy()).all(axis=1)
    assert drop.sum() >= 6
    first_kept = ids[np.flatnonzero(~drop)[0]]
    assert np.array_equal(out[~drop], ids[~drop]) and (out[drop] == first_kept).all()
    assert sk._unplanned[5] == drop.sum()
    # all dropped: the first sample stays planned
    all_stale = g.integers(0, 20, (b, t))
    assert sk.planned_ids(6, all_stale) is all_stale  # needs 4 steps done
    sk.done = 4
    out = sk.planned_ids(6, all_stale)
    assert (out == all_stale[0]).all() and sk._unplanned[6] == b - 1
    assert sk.planned_ids(4, ids) is ids  # no set decides step 4
    # what the loop then drops is what the plan left out
    from hotpipe.data.batch import Batch
    from hotpipe.train.feed import StepInput
    t_ids = torch.from_numpy(ids)
    keep = sk.keep_mask(StepInput(5, Batch(torch.zeros(b, 1), t_ids, torch.zeros(b)), t_ids))
    assert keep is not None and np.array_equal(~keep.numpy(), drop)


def test_snapshots_read_without_a_flush_see_the_current_weights(data, tmp_path):
    # small fast tier, so hot rows are evicted and re-fetched while snapshots are read
    _, _, m = _run(data, tmp_path / "c", *SKIP, *TIERED, "train.max_steps=30", check=True)
    assert m["skip"]["samples_skipped"] > 0 and m["cache"]["rows_written_back"] > 0


@pytest.mark.slow
def test_lagged_skipping_plans_fewer_rows_and_stays_exact(data, tmp_path):
    mode = [*SKIP, "train.max_steps=40"]
    ref_loss, ref_rec, ref = _run(data, tmp_path / "ref", *mode)  # untiered, same lag
    loss, rec, m = _run(data, tmp_path / "t", *mode, *TIERED)
    assert np.array_equal(loss, ref_loss, equal_nan=True) and np.array_equal(rec, ref_rec)
    assert _math(m["skip"]) == _math(ref["skip"]) and m["skip"]["samples_skipped"] > 0
    assert m["skip"]["lag"] == 4 + 1 + 2 and ref["skip"]["samples_not_planned"] == 0
    # every skipped sample was left out of its plan (bar the first of an all-skipped step)
    skipped, unplanned = m["skip"]["samples_skipped"], m["skip"]["samples_not_planned"]
    all_skipped = sum(1 for x in loss if x is None)
    assert unplanned == skipped - all_skipped > 0
    # the same run with the planner seeing every sample: same math, more rows fetched
    loss2, rec2, whole = _run(data, tmp_path / "w", *mode, *TIERED, plan_filter=False)
    assert np.array_equal(loss2, loss, equal_nan=True) and np.array_equal(rec2, rec)
    assert whole["skip"]["samples_not_planned"] == 0
    assert m["cache"]["rows_fetched"] < whole["cache"]["rows_fetched"]
    # the flushing snapshot reader: same run, more write-backs
    loss3, _, flushing = _run(data, tmp_path / "f", *mode, *TIERED, flush=True)
    assert np.array_equal(loss3, loss, equal_nan=True)
    assert flushing["cache"]["rows_written_back"] > m["cache"]["rows_written_back"]
    # lag 0 is Slipstream's order: the planner sees no decision in time
    _, _, now = _run(data, tmp_path / "z", *mode, *TIERED, lag=False)
    assert now["skip"]["samples_not_planned"] == 0 and now["skip"]["samples_skipped"] > 0


@pytest.mark.slow
def test_hotline_and_slipstream_together(data, tmp_path):
    mode = [*SKIP, *HOTLINE, "train.epochs=2"]
    ref_loss, ref_rec, ref = _run(data, tmp_path / "ref", *mode)
    loss, rec, m = _run(data, tmp_path / "t", *mode, *TIERED)
    assert np.array_equal(loss, ref_loss, equal_nan=True) and np.array_equal(rec, ref_rec)
    assert _math(m["skip"]) == _math(ref["skip"]) and m["skip"]["samples_skipped"] > 0
    assert m["schedule"]["popular_fraction"] > 0 and m["skip"]["samples_not_planned"] > 0
    # the run report says what each mode changed, with the run's own numbers
    from hotpipe.train.report import write_report

    text = write_report(tmp_path / "t").read_text()
    assert "## Sample order (schedule.mode)" in text and "## Stale-sample skipping (skip.mode)" in text
    sk, sc = m["skip"], m["schedule"]
    assert f"| samples skipped | {sk['samples_skipped']:,} of {sk['samples_seen']:,}" in text
    assert f"| popular samples | {sc['popular_fraction']:.1%} |" in text
    assert f"| popular | {sc['batches']['popular']:,} |" in text
    assert f"| skipped samples left out of the plans | {sk['samples_not_planned']:,} (" in text
    from hotpipe.train.mode_report import mode_sections

    assert mode_sections({"val_auc": 0.7}) == []  # an exact run's report has neither section
    # Every epoch passes over each trained row once in the scheduled order; the rows
    # trained are those minus the skipped ones (recomputed from the stale sets).
    cfg = _cfg(data, *mode)
    c = build_components(cfg, tmp_path / "probe")
    try:
        loader = c.train_loader
        assert isinstance(loader, ScheduledLoader)
        spe, b = loader.steps_per_epoch, loader.batch_size
        want = np.arange(loader.start, loader.start + spe * b)
        for e in range(2):
            rows = np.concatenate([loader.rows(k) for k in range(e * spe, (e + 1) * spe)])
            assert np.array_equal(np.sort(rows), want)
    finally:
        c.close()
    n_steps = len(loss)
    assert n_steps == 2 * spe and sum(p["samples"] for p in m["skip"]["periods"]) <= n_steps * b
    plain, _, _ = _run(data, tmp_path / "plain", *HOTLINE, *SKIP, "skip.target_drop=0",
                       "train.epochs=2")
    assert plain != loss  # skipping changed the hotline run


@pytest.mark.slow
def test_resume_is_exact_with_a_pending_stale_set(data, tmp_path):
    # lag 7, estimates after steps 12, 18, 24 (applying from 19, 25, 31): the checkpoint at
    # step 22 holds one set applying and one pending; hotline order on top.
    mode = [*SKIP, *HOTLINE, *TIERED, "train.epochs=2"]
    full, _, m = _run(data, tmp_path / "full", *mode, "train.max_steps=50")
    _run(data, tmp_path / "part", *mode, "train.max_steps=22")
    _, _, r = _run(data, tmp_path / "part", *mode, "train.max_steps=50", resume=True)
    part = json.loads((tmp_path / "part" / "losses.json").read_text())
    assert len(part) == 50 and np.array_equal(full, part, equal_nan=True)
    assert m["val_auc"] == r["val_auc"] and _math(m["skip"]) == _math(r["skip"])
    assert m["skip"]["samples_skipped"] > 0
