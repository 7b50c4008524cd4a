"""`hotpipe simulate` and the library functions behind it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hotpipe.cli import main
from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.loader import TrainTrace
from hotpipe.plan.simulate import replay


def test_simulate_cli_writes_records_and_plot(tiny_data: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim"
    rc = main(["simulate", "--data", str(tiny_data), "--out", str(out),
               "--policy", "lookahead,lru,lfu,static", "--capacity", "0.01,0.5,100",
               "--batch-size", "32", "--window", "64", "--depth", "1"])
    assert rc == 0
    records = json.loads((out / "simulate.json").read_text())
    assert (out / "miss_ratio_curve.png").stat().st_size > 1000
    assert len(records) == 3 * 4
    by = {(r["capacity_rows"], r["policy"]): r for r in records}
    num_rows = 50 + 7 + 300 + 20
    # 1% of 377 rows cannot hold two in-flight steps: recorded, not fatal.
    tiny = by[(4, "lru")]
    assert "need at least" in tiny["error"]
    assert "error" in capsys.readouterr().out
    for rows in (round(0.5 * num_rows), 100):
        lru, best = by[(rows, "lru")], by[(rows, "lookahead")]
        # The training steps only: 461 of 512 rows train (val_fraction 0.1), 14 full batches.
        assert lru["error"] is None and lru["steps"] == 14 and lru["lookups"] == 14 * 32 * 4
        # The window covers all 14 steps, so lookahead is Belady's MIN.
        others = [by[(rows, p)]["rows_fetched"] for p in ("lru", "lfu", "static")]
        assert best["rows_fetched"] <= min(others)
        for r in (lru, best):
            assert r["rows_fetched_per_1k_samples"] == pytest.approx(1000 * r["rows_fetched"] / 448)
            assert 0 <= r["hit_rate"] <= 1 and r["capacity"] == pytest.approx(rows / num_rows)
            assert set(r) >= {"window", "depth", "rows_evicted", "seconds", "lookups_per_s"}


def test_simulate_cli_rejects_an_unknown_policy(tiny_data: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["simulate", "--data", str(tiny_data), "--out", str(tmp_path / "x"),
               "--policy", "lru,fifo"])
    assert rc == 2 and "fifo" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_train_trace_is_the_training_steps(tiny_data: Path) -> None:
    ds = ColumnarDataset.open(tiny_data)
    trace = TrainTrace(ds, batch_size=100, val_fraction=0.1)
    steps = list(trace)
    # 461 training rows: 4 full batches; the validation rows and the short batch are not trained.
    assert len(trace) == len(steps) == 4 and all(s.shape == (100, 4) for s in steps)
    np.testing.assert_array_equal(steps[1][:, 2], ds.sparse[100:200, 2] + 50 + 7)
    assert trace.num_rows == 377
    assert len(TrainTrace(ds, batch_size=100, val_fraction=0.1, max_steps=2)) == 2
    assert len(TrainTrace(ds, batch_size=100, val_fraction=0.1, epochs=3)) == 12


@pytest.mark.parametrize("mode", ["none", "fae", "hotline"])
def test_simulate_counts_what_training_moves(tiny_data: Path, tmp_path: Path, mode: str) -> None:
    """`hotpipe simulate` and `hotpipe train` plan the same steps: same rows fetched,
    under every schedule.mode (the scheduled order, its hot set the fast tier's rows)."""
    from hotpipe.config import load_config
    from hotpipe.plan.simulate import simulate
    from hotpipe.train.run import train

    over = ["data.batch_size=16", "cache.policy=lru", "cache.capacity=80", "cache.window=8",
            "train.progress=false", "model.embedding_dim=4", "model.bottom=[4]",
            f"schedule.mode={mode}", "schedule.window=4", "schedule.sample=0.5", "train.seed=3"]
    cfg = load_config(None, over, values={"data.path": str(tiny_data)})
    m = train(cfg, tmp_path / "run")
    out = tmp_path / "sim"
    assert main(["simulate", "--data", str(tiny_data), "--out", str(out), "--policy", "lru",
                 "--capacity", "80,100", "--window", "8", *over]) == 0
    sim, other = json.loads((out / "simulate.json").read_text())
    assert sim["rows_fetched"] == m["cache"]["rows_fetched"] > 0 and sim["steps"] == m["steps"]
    plain = simulate(tiny_data, policies=["lru"], capacities=[80, 100], window=8, depth=1,
                     batch_size=16)
    if mode == "none":
        assert [sim["rows_fetched"], other["rows_fetched"]] == [r.rows_fetched for r in plain]
    else:  # the order changed what moves (else this test could not tell the orders apart)
        assert sim["rows_fetched"] != plain[0].rows_fetched
        # capacity 100 plans the order a run at 100 trains (its own hot set)
        cfg100 = load_config(None, [*over, "cache.capacity=100"], values={"data.path": str(tiny_data)})
        m100 = train(cfg100, tmp_path / "run100")
        assert other["rows_fetched"] == m100["cache"]["rows_fetched"]


def test_replay_measures_a_generator_too() -> None:
    steps = (np.array([[i % 7, 7 + i % 3]]) for i in range(30))
    r = replay(steps, num_rows=10, capacity_rows=4, policy="static", window=8, depth=1)
    assert r.error is None and r.steps == 30 and r.samples == 30 and r.lookups == 60
    assert r.rows_fetched >= r.misses and r.seconds >= 0
