"""The cost model: rows moved equal the simulator's and training's; time is monotone where physics says."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotpipe.config import validate
from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.loader import TrainTrace
from hotpipe.errors import CapacityError, ConfigError, DataFormatError
from hotpipe.placement.costmodel import Candidate, Workload, predict
from hotpipe.placement.hardware import ComputeFit, Hardware, Overlap, PlannerFit, TierRates
from hotpipe.placement.pipeline import replay_pipeline
from hotpipe.placement.ranks import hottest_rows, predict_ranks
from hotpipe.placement.search import SearchSpace, enumerate_candidates, search
from hotpipe.plan.movement import StepTrace, trace_movement
from tests.conftest import make_dataset

WORK = Workload(batch_size=32, num_rows=600, state_width=1,
                model={"embedding_dim": 8, "tables": 3}, dense_params=1000)


def fake_hardware(fetch_s: float = 2e-7, overlap: float = 0.6) -> Hardware:
    """Plausible rates without measuring (tests never time anything)."""
    planner = PlannerFit(per_step_s=1e-4, per_lookup_s=5e-8, per_miss_s=2e-7)
    return Hardware(
        compute=ComputeFit(per_step_s=2e-3, per_sample_s=1e-5, model={"embedding_dim": 8, "tables": 3}),
        tiers={"host": TierRates(1e-4, fetch_s, fetch_s), "file": TierRates(1e-3, 4 * fetch_s, 8 * fetch_s)},
        planner=dict.fromkeys(("lookahead", "lru", "lfu", "static"), planner),
        batch_read_per_sample_s=2e-8, overlap=Overlap(overlap, overlap))


def zipf_steps(steps: int, batch: int = 32, cards: tuple[int, ...] = (300, 200, 100),
               seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    offsets = np.cumsum([0, *cards])[:-1]
    ids = np.stack([(rng.zipf(1.3, steps * batch) * 31) % c for c in cards], axis=1) + offsets
    return [ids[s * batch:(s + 1) * batch].astype(np.int64) for s in range(steps)]


class _Unsized:
    def __init__(self, steps: list[np.ndarray]) -> None:
        self.steps = steps

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.steps)


@settings(max_examples=15, deadline=None)
@given(st.sampled_from(["lookahead", "lru", "lfu", "static"]), st.integers(70, 600),
       st.integers(1, 12), st.integers(0, 2), st.integers(0, 3))
def test_prediction_prices_the_counted_rows(policy, capacity, window, depth, seed):
    # simulate and the cost model share one counter (plan/movement.py); what is left to
    # check is that the prediction prices exactly those rows.
    steps = _Unsized(zipf_steps(12, seed=seed))
    try:
        st_ = trace_movement(steps, num_rows=600, capacity=capacity, window=window, depth=depth,
                             policy=policy)
    except CapacityError:
        return
    p = predict(Candidate(policy, capacity, window, depth, "host"), st_, WORK, fake_hardware())
    assert p.rows_fetched == st_.totals()["rows_fetched"]
    assert p.bytes_moved == (p.rows_fetched + p.rows_written_back) * WORK.row_bytes


@pytest.mark.parametrize("policy,backing", [("lookahead", "host"), ("static", "file")])
def test_rows_moved_equal_what_training_moves(tmp_path: Path, policy: str, backing: str):
    from hotpipe.train.run import train

    data = make_dataset(tmp_path / "d", rows=1024, cards=(50, 7, 300, 20))
    cfg = validate({"data": {"path": str(data), "batch_size": 64, "val_fraction": 0.1},
                    "train": {"progress": False, "threads": 1},
                    "cache": {"policy": policy, "capacity": 150, "window": 4, "depth": 1,
                              "backing": backing, "backing_dir": str(tmp_path / "tables")}})
    m = train(cfg, tmp_path / "run")
    ds = ColumnarDataset.open(data)
    trace = TrainTrace(ds, batch_size=64, val_fraction=0.1)
    st_ = trace_movement(trace, num_rows=trace.num_rows, capacity=150, window=4, depth=1, policy=policy)
    assert st_.totals()["rows_fetched"] == m["cache"]["rows_fetched"]
    assert st_.totals()["rows_written_back"] == m["cache"]["rows_written_back"]


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(["lookahead", "lru"]), st.integers(80, 500), st.integers(1, 300),
       st.integers(1, 8), st.integers(0, 2))
def test_more_capacity_never_predicts_more_bytes_moved(policy, cap, extra, window, seed):
    # Both are stack algorithms (Belady's MIN, LRU): a bigger cache holds a superset.
    # `static` is not: a bigger hot set is preloaded, so it can fetch more rows.
    steps = zipf_steps(10, seed=seed)
    work = dataclasses.replace(WORK)
    hw = fake_hardware()

    def moved(c: int) -> int | None:
        try:
            st_ = trace_movement(steps, num_rows=600, capacity=c, window=window, depth=1, policy=policy)
        except CapacityError:
            return None
        return predict(Candidate(policy, c, window, 1, "host"), st_, work, hw).bytes_moved

    small, big = moved(cap), moved(min(cap + extra, 600))
    if small is not None:
        assert big is not None and big <= small


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 0.01), st.floats(0, 0.02), st.floats(1e-4, 0.02)),
                min_size=1, max_size=30),
       st.integers(0, 3), st.floats(0.05, 1.0), st.floats(0.05, 1.0), st.floats(0.0, 1.0))
def test_faster_mover_never_predicts_slower_steps(work, depth, rc, rm, speedup):
    plan, move, compute = (np.array(x) for x in zip(*work, strict=True))
    ov = Overlap(rc, rm)
    slow = replay_pipeline(plan, move, compute, depth=depth, overlap=ov).total_s
    fast = replay_pipeline(plan * speedup, move * speedup, compute, depth=depth, overlap=ov).total_s
    assert fast <= slow * (1 + 1e-9) + 1e-12


def test_faster_backing_tier_never_predicts_slower_steps():
    steps = zipf_steps(15)
    st_ = trace_movement(steps, num_rows=600, capacity=120, window=4, depth=1, policy="lookahead")
    c = Candidate("lookahead", 120, 4, 1, "host")
    rates = [predict(c, st_, WORK, fake_hardware(fetch_s=f)).samples_per_s for f in (1e-4, 1e-5, 1e-6, 0)]
    assert rates == sorted(rates)
    file = predict(dataclasses.replace(c, backing="file"), st_, WORK, fake_hardware()).samples_per_s
    assert file <= predict(c, st_, WORK, fake_hardware()).samples_per_s


def test_pipeline_limits():
    n, c, m = 20, 0.01, 0.004
    plan, move, comp = np.zeros(n), np.full(n, m), np.full(n, c)
    perfect = replay_pipeline(plan, move, comp, depth=2, overlap=Overlap(1.0, 1.0))
    assert perfect.total_s == pytest.approx(m + n * c)  # only the first fetch is exposed
    serial = replay_pipeline(plan, move, comp, depth=0, overlap=Overlap(1.0, 1.0))
    assert serial.total_s == pytest.approx(n * (m + c))  # depth 0: fetch s waits for step s-1
    shared = replay_pipeline(plan, move, comp, depth=2, overlap=Overlap(0.5, 0.5))
    assert shared.total_s == pytest.approx(n * (m + c))  # one machine shared half and half
    untiered = predict(Candidate("none", 600), StepTrace.untiered(np.full(n, 32)), WORK, fake_hardware())
    assert untiered.samples_per_s == pytest.approx(32 / (2e-3 + 32e-5))
    assert untiered.rows_fetched == 0


def test_hardware_json_roundtrip_median_and_errors(tmp_path: Path):
    hw = fake_hardware()
    hw.save(tmp_path / "hw.json")
    assert Hardware.load(tmp_path / "hw.json") == hw
    med = Hardware.median([fake_hardware(1e-7), fake_hardware(3e-7), fake_hardware(2e-7)])
    assert med.tiers["host"].per_fetch_s == pytest.approx(2e-7)
    (tmp_path / "bad.json").write_text('{"tiers": {}}')
    with pytest.raises(DataFormatError, match="bad.json"):
        Hardware.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="no rates for tier"):
        hw.tier("ssd")
    other = dataclasses.replace(WORK, model={"embedding_dim": 64, "tables": 3})
    with pytest.raises(ConfigError, match="embedding_dim"):
        predict(Candidate("none", 600), StepTrace.untiered(np.full(2, 32)), other, hw)


def test_search_ranks_and_skips(tmp_path: Path):
    data = make_dataset(tmp_path / "d", rows=2048, cards=(50, 7, 300, 20))
    ds = ColumnarDataset.open(data)
    trace = TrainTrace(ds, batch_size=64, val_fraction=0.1, max_steps=10)
    work = Workload(batch_size=64, num_rows=trace.num_rows, state_width=1,
                    model={"embedding_dim": 8, "tables": 3})
    space = SearchSpace(memory=200 * work.row_bytes, windows=(4,), depths=(1,), tiers=("host", "file"),
                        capacity_fractions=(1.0, 0.2))
    cands = enumerate_candidates(space, work)
    assert all(c.capacity <= 200 for c in cands)
    preds, skipped = search(trace, space, work, fake_hardware())
    assert preds and skipped  # 40 rows cannot hold two steps' rows
    assert [p.samples_per_s for p in preds] == sorted((p.samples_per_s for p in preds), reverse=True)
    roomy = SearchSpace(memory=10**6, windows=(4,), depths=(1,))
    assert search(trace, roomy, work, fake_hardware())[0][0].candidate.policy == "none"


def test_multi_rank_estimate_is_marked_unvalidated():
    steps = zipf_steps(8)
    hot = hottest_rows(steps, 600, 20)
    p = predict_ranks(Candidate("lru", 200, 4, 1, "host", ranks=2, replicated=20), steps, WORK,
                      fake_hardware(), hot)
    assert not p.validated and "unvalidated" in p.notes[0]
    assert p.samples_per_s > 0 and p.memory["fast"] == 200 * WORK.row_bytes
    with pytest.raises(ConfigError):
        predict_ranks(Candidate("lru", 200, ranks=1), steps, WORK, fake_hardware(), hot)


def test_skip_model_shrinks_compute_of_the_steps_it_decides():
    from hotpipe.placement.costmodel import SkipModel, step_work

    steps = zipf_steps(40)
    tr = trace_movement(steps, num_rows=600, capacity=300, window=8, depth=1, policy="lookahead")
    hw, c = fake_hardware(), Candidate("lookahead", 300, 8, 1)
    skip = dataclasses.replace(WORK, skip=SkipModel(share=0.3, first_step=10))
    plan0, move0, comp0 = step_work(tr, c, WORK, hw)
    plan1, move1, comp1 = step_work(tr, c, skip, hw)
    assert np.array_equal(plan0, plan1) and np.array_equal(move0, move1)  # rows: the whole trace
    assert np.array_equal(comp1[:10], comp0[:10])
    per_sample = hw.compute.per_sample_s * 32 * 0.3  # the skipped samples' compute, no more
    np.testing.assert_allclose(comp0[10:] - comp1[10:], per_sample)
    fast, slow = predict(c, tr, skip, hw), predict(c, tr, WORK, hw)
    assert fast.compute_s < slow.compute_s and fast.rows_fetched == slow.rows_fetched
    assert fast.samples_per_s >= slow.samples_per_s


@pytest.mark.parametrize("mode", ["none", "hotline"])
def test_predict_run_moves_what_training_moves(tmp_path: Path, mode: str) -> None:
    from hotpipe.config import load_config
    from hotpipe.placement.costmodel import predict_run
    from hotpipe.train.run import train

    data = make_dataset(tmp_path / "d")
    over = ["data.batch_size=16", "cache.policy=lru", "cache.capacity=80", "cache.window=8",
            "train.progress=false", "model.embedding_dim=8", "model.bottom=[8]", "train.seed=3",
            f"schedule.mode={mode}", "schedule.window=4", "schedule.sample=0.5",
            "skip.mode=slipstream", "skip.warmup=5", "skip.interval=4", "skip.target_drop=0.3",
            "skip.lag=0"]
    cfg = load_config(None, over, values={"data.path": str(data)})
    m = train(cfg, tmp_path / "run")
    hw = dataclasses.replace(fake_hardware(), compute=ComputeFit(2e-3, 1e-5, {}))
    p = predict_run(cfg, ColumnarDataset.open(data), hw)  # skip.lag=0 read from the config
    # lag 0: the planner saw every sample, so training moved exactly the planned rows
    assert p.rows_fetched == m["cache"]["rows_fetched"] > 0 and p.steps == m["steps"]
    assert any("skip.mode" in n for n in p.notes)
    assert (mode != "none") == any("schedule.mode" in n for n in p.notes)
    exact = predict_run(load_config(None, [*over, "skip.mode=none"], values={"data.path": str(data)}),
                        ColumnarDataset.open(data), hw)
    assert exact.compute_s > p.compute_s
