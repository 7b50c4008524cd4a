"""`hotpipe simulate` and the library functions behind it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hotpipe.cli import main
from hotpipe.data.columnar import ColumnarDataset
from hotpipe.errors import ConfigError
from hotpipe.plan.simulate import DatasetTrace, parse_capacity, replay


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
        assert lru["error"] is None and lru["steps"] == 16 and lru["lookups"] == 512 * 4
        # The window covers all 16 steps, so lookahead is Belady's MIN.
        others = [by[(rows, p)]["rows_fetched"] for p in ("lru", "lfu", "static")]
        assert best["rows_fetched"] <= min(others)
        for r in (lru, best):
            assert r["rows_fetched_per_1k_samples"] == pytest.approx(1000 * r["rows_fetched"] / 512)
            assert 0 <= r["hit_rate"] <= 1 and r["capacity"] == pytest.approx(rows / num_rows)
            assert set(r) >= {"window", "depth", "rows_evicted", "seconds", "lookups_per_s"}


def test_simulate_cli_rejects_an_unknown_policy(tiny_data: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["simulate", "--data", str(tiny_data), "--out", str(tmp_path / "x"),
               "--policy", "lru,fifo"])
    assert rc == 2 and "fifo" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_dataset_trace_offsets_ids_by_table(tiny_data: Path) -> None:
    ds = ColumnarDataset.open(tiny_data)
    trace = DatasetTrace(ds, batch_size=100, max_steps=None)
    steps = list(trace)
    assert len(trace) == len(steps) == 6 and steps[-1].shape == (12, 4)
    np.testing.assert_array_equal(steps[1][:, 2], ds.sparse[100:200, 2] + 50 + 7)
    assert trace.num_rows == 377 and len(DatasetTrace(ds, 100, max_steps=2)) == 2


def test_parse_capacity() -> None:
    assert parse_capacity("0.1", 1000) == 100
    assert parse_capacity("1", 1000) == 1000
    assert parse_capacity("250", 1000) == 250
    assert parse_capacity("5000", 1000) == 1000
    assert parse_capacity("0.0001", 1000) == 1
    for bad in ("0", "-3", "2.5", "lots"):
        with pytest.raises(ConfigError, match="capacity"):
            parse_capacity(bad, 1000)


def test_replay_measures_a_generator_too() -> None:
    steps = (np.array([[i % 7, 7 + i % 3]]) for i in range(30))
    r = replay(steps, num_rows=10, capacity_rows=4, policy="static", window=8, depth=1)
    assert r.error is None and r.steps == 30 and r.samples == 30 and r.lookups == 60
    assert r.rows_fetched >= r.misses and r.seconds >= 0
