"""`hotpipe plan --ranks`: the exchange it predicts is the one the runtime makes, rank by rank.

The counter (placement/exchange_model.py) is checked three ways: against a
per-rank brute force written from the runtime's description, against
``distributed/traffic.py``'s totals, and against a real 2-rank run's
metrics.json (exact equality of every rank's rows and bytes, both ways,
and of the all-reduce payloads).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotpipe.config import RunConfig, validate
from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.loader import TrainTrace
from hotpipe.errors import ConfigError
from hotpipe.placement.costmodel import Candidate, Workload, workload_from_config
from hotpipe.placement.exchange_model import (
    DENSE_COUNT_MAX_ROWS,
    count_exchange,
    hottest_rows,
    replicated_set,
    small_table_rows,
)
from hotpipe.placement.hardware import ComputeFit, Hardware, Link, RouteFit
from hotpipe.placement.ranks import predict_ranks, rank_times
from tests.conftest import make_dataset


def brute_force(steps: list[np.ndarray], w: int, hot: np.ndarray, dim: int) -> list[dict[str, int]]:
    """Per rank, from the runtime's description, one rank and one peer at a time."""
    out = [{"rows_sent": 0, "rows_received": 0, "touched": 0, "after": 0} for _ in range(w)]
    prev: set[int] = set()  # ids of the previous step: its update changes them
    for ids in steps:
        b = len(ids) // w
        need = [set(int(g) for g in ids[s * b:(s + 1) * b].ravel()) - set(hot.tolist()) for s in range(w)]
        touched = set()
        for s in range(w):
            touched |= set(int(g) for g in ids[s * b:(s + 1) * b].ravel()) & set(hot.tolist())
        for r in range(w):
            recv = sum(1 for g in need[r] if g % w != r)  # rows r fetches (then returns grads)
            serve = sum(1 for s in range(w) if s != r for g in need[s] if g % w == r)
            out[r]["rows_sent"] += serve + recv
            out[r]["rows_received"] += recv + serve
            out[r]["touched"] += len(touched)
            out[r]["after"] += sum(1 for g in need[r] if g % w != r and g in prev)
        prev = set(int(g) for g in ids.ravel())
    return out


def zipf_steps(steps: int, batch: int, cards: tuple[int, ...], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    offsets = np.cumsum([0, *cards])[:-1]
    ids = np.stack([(rng.zipf(1.3, steps * batch) * 31) % c for c in cards], axis=1) + offsets
    return [ids[s * batch:(s + 1) * batch].astype(np.int64) for s in range(steps)]


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([1, 2, 3, 4]), st.integers(1, 6), st.integers(0, 30), st.integers(0, 99))
def test_count_matches_brute_force(w: int, per_rank: int, n_hot: int, seed: int) -> None:
    steps = zipf_steps(3, w * per_rank, (40, 25, 9), seed)
    hot = hottest_rows(steps, 74, n_hot)
    c = count_exchange(steps, world_size=w, dim=4, replicated=hot, dense_params=10)
    ref = brute_force(steps, w, hot, 4)
    for r, p in enumerate(c.per_rank()):
        assert p["rows_sent"] == ref[r]["rows_sent"] and p["rows_received"] == ref[r]["rows_received"]
        assert p["rows_fetched_after_update"] == ref[r]["after"]
        assert p["bytes_sent"] == 16 * ref[r]["rows_sent"]
        assert p["allreduce_bytes"] == 3 * 11 * 4 + ref[r]["touched"] * 16
    stale = count_exchange(steps, world_size=w, dim=4, replicated=hot, staleness=1)
    assert stale.forward_after.sum() == 0 and np.array_equal(stale.forward_recv, c.forward_recv)
    one = count_exchange(steps, world_size=w, dim=4, replicated=hot, fetch_ahead=False)
    assert one.forward_after.sum() == 0 and np.array_equal(one.forward_recv, c.forward_recv)
    if w == 1:
        assert c.rows_sent().sum() == 0


def test_brute_force_catches_a_wrong_owner() -> None:
    # The reference must be able to fail: owning rows by g // 2 instead of g % W changes counts.
    steps = zipf_steps(2, 8, (40, 25, 9), 0)
    ref = brute_force(steps, 2, np.empty(0, dtype=np.int64), 4)
    wrong = count_exchange([s // 2 for s in steps], world_size=2, dim=4).per_rank()
    assert [p["rows_sent"] for p in wrong] != [r["rows_sent"] for r in ref]


def test_count_equals_the_runtime_side_counter() -> None:
    # distributed/traffic.py counts totals for the bytes benchmark; both must agree.
    from hotpipe.distributed.traffic import count_traffic

    steps = zipf_steps(5, 12, (40, 25, 9), 3)
    for w in (2, 3, 4):
        hot = hottest_rows(steps, 74, 6)
        c = count_exchange(steps, world_size=w, dim=8, replicated=hot)
        t = count_traffic(steps, world_size=w, replicated=hot)
        assert c.forward_recv.sum() == t.hotpipe_rows
        assert c.totals()["bytes_sent"] == t.bytes(8)["hotpipe_bytes"]
        assert int(c.touched.sum()) * w == t.replica_rows


def test_hottest_rows_sparse_equals_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = zipf_steps(4, 16, (40, 25, 9), 1)
    for k in (0, 1, 5, 30, 74):  # 74: more than were seen, the lowest unseen ids fill up
        dense = hottest_rows(steps, 74, k)
        monkeypatch.setattr("hotpipe.placement.exchange_model.DENSE_COUNT_MAX_ROWS", 10)
        sparse = hottest_rows(steps, 74, k)
        monkeypatch.setattr("hotpipe.placement.exchange_model.DENSE_COUNT_MAX_ROWS", DENSE_COUNT_MAX_ROWS)
        assert dense.tolist() == sparse.tolist(), k


def test_small_tables_are_replicated() -> None:
    assert small_table_rows([5, 3, 2, 7], 4).tolist() == [5, 6, 7, 8, 9]
    assert replicated_set(np.array([0, 6]), [5, 3, 2, 7], 4).tolist() == [0, 5, 6, 7, 8, 9]
    assert replicated_set(None, None, 4).tolist() == []


def test_count_refuses_a_batch_not_divisible() -> None:
    with pytest.raises(ConfigError, match="data.batch_size"):
        count_exchange([np.zeros((5, 2), dtype=np.int64)], world_size=2, dim=4)


def _hw(link_bps: float = 1e9) -> Hardware:
    return Hardware(compute=ComputeFit(1e-3, 1e-5, {"embedding_dim": 8, "tables": 3}), tiers={}, planner={},
                    batch_read_per_sample_s=1e-7, link=Link(bytes_per_s=link_bps, latency_s=1e-4, measured=True),
                    route=RouteFit(0.0, 0.0, 1e-9, True), machine={"cpus": 2, "torch_threads": 1})


WORK = Workload(batch_size=48, num_rows=74, state_width=1, model={"embedding_dim": 8, "tables": 3},
                dense_params=500)


def test_time_terms_follow_the_model() -> None:
    steps = zipf_steps(4, 48, (40, 25, 9), 0)
    c = count_exchange(steps, world_size=4, dim=8, dense_params=500)
    one = rank_times(c, WORK, _hw(), ranks_per_host=4, fetch_ahead=False)
    assert one.share == 2.0  # 4 one-thread ranks on 2 cpus
    np.testing.assert_allclose(one.compute, 1e-3 + 1e-5 * 12)

    def a2a(sent: np.ndarray, recv: np.ndarray) -> np.ndarray:
        return 3 * 1e-4 + np.maximum(sent, recv).max(axis=1) * 32 / 1e9

    rest = a2a(c.forward_sent, c.forward_recv) + (6 * 1e-4 + 1.5 * 501 * 4 / 1e9)  # grads, dense
    np.testing.assert_allclose(one.link, a2a(c.forward_sent, c.forward_recv) + rest)
    np.testing.assert_allclose(one.step, (one.compute + one.read + one.route) * 2 + one.link)
    # fetch ahead: step s's unchanged rows hide under step s-1's compute (the first's under
    # nothing), the changed ones follow in a second all-to-all
    t = rank_times(c, WORK, _hw(), ranks_per_host=4)
    ahead = a2a(c.forward_sent - c.forward_sent_after, c.forward_recv - c.forward_after)
    after = a2a(c.forward_sent_after, c.forward_after)
    under = np.r_[0.0, (t.compute * 2)[:-1]]
    np.testing.assert_allclose(t.link, np.maximum(ahead - under, 0) + np.r_[0.0, after[1:]] + rest)
    assert t.link[0] == pytest.approx(one.link[0]) and (t.link[1:] < one.link[1:]).all()
    # a slow link makes the link the limit; a cluster (1 rank a host) shares no cores
    assert rank_times(c, WORK, _hw(1e3), ranks_per_host=1).limit() == "link"
    assert rank_times(c, WORK, _hw(), ranks_per_host=1).share == 1.0


def test_rank_compute_replaces_the_process_step() -> None:
    import dataclasses

    steps = zipf_steps(4, 48, (40, 25, 9), 0)
    c = count_exchange(steps, world_size=2, dim=8, dense_params=500)
    hw = dataclasses.replace(_hw(), rank_compute=ComputeFit(2e-3, 3e-5, {}))
    t = rank_times(c, WORK, hw, ranks_per_host=1)
    np.testing.assert_allclose(t.compute, 2e-3 + 3e-5 * 24)
    # the W = 1 measurement already routed its own 24 * 3 lookups
    np.testing.assert_allclose(t.route, hw.route.route_s(2, 144.0) - hw.route.route_s(1, 72.0))
    assert Hardware.from_dict(hw.to_dict()).rank_compute == hw.rank_compute  # saved and loaded


def test_prediction_reports_memory_limit_and_validation() -> None:
    steps = zipf_steps(4, 48, (40, 25, 9), 0)
    p = predict_ranks(Candidate("none", 74, ranks=2), steps, WORK, _hw(), hottest_rows(steps, 74, 5),
                      cardinalities=[40, 25, 9], memory_budget=10)
    assert p.validated and p.limit == "memory" and p.replicated_rows == 5
    assert p.memory_per_rank == (37 + 5) * WORK.row_bytes
    assert p.exchange["bytes_sent"] == sum(r["bytes_sent"] for r in p.exchange["per_rank"])
    assert p.samples_per_s > 0


# ----------------------------------------------------------- a real 2-rank run

STEPS, BATCH, DIM = 6, 48, 8


def _cfg(data: Path) -> RunConfig:
    return validate({
        "data": {"path": str(data), "batch_size": BATCH, "val_fraction": 0.2},
        "model": {"embedding_dim": DIM, "bottom": [16, DIM], "top": [16, 1]},
        "optim": {"embedding": "rowwise_adagrad", "embedding_lr": 0.1},
        "train": {"max_steps": STEPS, "progress": False, "log_every": 2, "threads": 1},
    })


def _rank(ctx: Any, cfg: RunConfig, out: str, hot: np.ndarray) -> dict[str, Any]:
    from hotpipe.distributed.run import train_distributed

    return train_distributed(cfg, out, ctx, replicate=hot)


@pytest.mark.parametrize("num_hot", [12, pytest.param(0, marks=pytest.mark.slow)])
def test_prediction_equals_a_real_run(num_hot: int, tmp_path: Path) -> None:
    from hotpipe.distributed.spawn import run_ranks

    data = make_dataset(tmp_path / "data", rows=600)
    cfg = _cfg(data)
    ds = ColumnarDataset.open(str(data))
    trace = TrainTrace(ds, batch_size=BATCH, val_fraction=0.2, max_steps=STEPS)
    steps = list(trace)
    hot = hottest_rows(steps[:2], trace.num_rows, num_hot)
    out = tmp_path / "run"
    results = run_ranks(_rank, 2, args=(cfg, str(out), hot), timeout=60)
    assert [r.exitcode for r in results] == [0, 0], [r.error for r in results]
    d = json.loads((out / "metrics.json").read_text())["dist"]

    work = workload_from_config(cfg, ds.cardinalities, ds.num_dense)
    c = count_exchange(steps, world_size=2, dim=DIM,
                       replicated=replicated_set(hot, ds.cardinalities, 2),
                       dense_params=work.dense_params)
    assert d["replicated_rows"] == len(replicated_set(hot, ds.cardinalities, 2))
    for key in ("rows_sent", "bytes_sent", "bytes_received"):
        assert d[key] == c.totals()[key], key
    assert d["bytes_per_sample"] == pytest.approx(c.totals()["bytes_per_sample"])
    for measured, predicted in zip(d["per_rank"], c.per_rank(), strict=True):
        for key in ("steps", "rows_sent", "rows_received", "bytes_sent", "bytes_received",
                    "allreduce_bytes", "rows_fetched_ahead", "rows_fetched_after_update"):
            assert measured[key] == predicted[key], (measured["rank"], key)
    assert c.totals()["rows_sent"] > 0 and (num_hot == 0) == (c.touched.sum() == 0)
    # Both halves of the split fetch carry rows in this run (else the split is untested).
    assert c.forward_after.sum() > 0 and (c.forward_recv - c.forward_after).sum() > 0


# --------------------------------------------------------------------- the CLI


def test_plan_ranks_list_prints_one_line_per_world_size(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import dataclasses

    from hotpipe.cli import main

    data = make_dataset(tmp_path / "d", rows=2048, cards=(50, 7, 300, 20))
    hw = dataclasses.replace(_hw(), compute=ComputeFit(1e-3, 1e-5, {}))  # fits any model
    hw.save(tmp_path / "hw.json")
    rc = main(["plan", "--data", str(data), "--memory", "1MiB", "--hw", str(tmp_path / "hw.json"),
               "--ranks", "2,4", "--steps", "6", "--policies", "none", "--replicate", "0,0.01",
               "--json", str(tmp_path / "plan.json"), "data.batch_size=64", "model.embedding_dim=8",
               "model.bottom=[16,8]"])
    out = capsys.readouterr().out
    assert rc == 0 and "best configuration per world size" in out
    lines = [ln.split() for ln in out.splitlines() if ln.strip().startswith(("2 ", "4 "))]
    assert [ln[0] for ln in lines] == ["2", "4"] and all(ln[-1] in ("compute", "route", "link")
                                                         for ln in lines)
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert set(plan["world_sizes"]) == {"2", "4"}
    best = plan["world_sizes"]["2"]["predictions"][0]
    assert best["validated"] and best["exchange"]["bytes_sent"] > 0
    # a rank holding more than --memory is flagged, not dropped
    rc = main(["plan", "--data", str(data), "--memory", "1KiB", "--hw", str(tmp_path / "hw.json"),
               "--ranks", "2,4", "--steps", "6", "--policies", "none", "data.batch_size=64",
               "model.embedding_dim=8", "model.bottom=[16,8]"])
    assert rc == 0 and capsys.readouterr().out.rstrip().endswith("memory")
    assert main(["plan", "--data", str(data), "--memory", "1MiB", "--ranks", "2,0",
                 "--hw", str(tmp_path / "hw.json")]) == 2
    assert "--ranks" in capsys.readouterr().err


def test_synthetic_steps_are_seeded_and_in_range() -> None:
    from hotpipe.placement.synthetic_trace import synthetic_steps, table_set

    cards = [1000, 3, 70000]
    a = synthetic_steps(cards, batch_size=64, steps=3, zipf=1.1, seed=4)
    b = synthetic_steps(cards, batch_size=64, steps=3, zipf=1.1, seed=4)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    ids = np.concatenate(a)
    lo, hi = np.array([0, 1000, 1003]), np.array([1000, 1003, 71003])
    assert ((ids >= lo) & (ids < hi)).all()
    assert sum(table_set("terabyte")) == 187_767_399
    with pytest.raises(ConfigError):
        table_set("avazu")


def test_rank_compute_is_measured_on_the_runtime(tmp_path: Path) -> None:
    from hotpipe.distributed.calibrate import measure_rank_compute

    data = make_dataset(tmp_path / "data", rows=600)
    fit = measure_rank_compute(_cfg(data), data, [BATCH, 2 * BATCH], workdir=tmp_path)
    assert fit.per_step_s >= 0 and fit.per_sample_s >= 0 and fit.per_step_s + fit.per_sample_s > 0
    assert fit.model["embedding_dim"] == DIM and fit.model["tables"] == 4  # what it measured
    with pytest.raises(ConfigError, match="batches"):
        measure_rank_compute(_cfg(data), data, [BATCH, BATCH])


def test_a_hardware_file_with_the_old_routing_fit_is_refused(tmp_path: Path) -> None:
    import json

    d = _hw().to_dict()
    del d["route"]["per_scan_s"]  # as written before the vectorized routing
    path = tmp_path / "hw.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="route"):
        Hardware.load(path)
    _hw().save(tmp_path / "new.json")
    assert Hardware.load(tmp_path / "new.json").route == _hw().route
