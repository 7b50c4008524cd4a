"""`hotpipe fl run`: writes metrics + plot; bad input exits 2 with a message, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hotpipe.cli import main as _main


def test_fl_run_writes_metrics_and_plot(tmp_path, capsys):
    out = tmp_path / "run"
    rc = _main(["fl", "run", "--task", "digits", "--method", "fedavg,invariant", "--rounds", "3",
                "--out", str(out)])
    assert rc == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert set(doc["methods"]) == {"fedavg", "invariant"}
    inv = doc["methods"]["invariant"]
    assert [r["round"] for r in inv["rounds"]] == [0, 1, 2, 3]
    last = inv["rounds"][-1]
    for key in ("accuracy", "round_time", "sim_clock", "r", "invariant_fraction", "clients"):
        assert key in last
    assert set(last["clients"]["0"]) == {"sim_time", "cpu_time", "r", "examples"}
    assert inv["summary"]["sim_time"] < doc["methods"]["fedavg"]["summary"]["sim_time"]
    assert (out / "accuracy_vs_time.png").stat().st_size > 1000
    assert json.loads(capsys.readouterr().out)["invariant"]["rounds"] == 3


@pytest.mark.parametrize("args, message", [
    (["--r", "1.5"], "'r'"),
    (["--r", "0"], "'r'"),
    (["--speeds", "1,1"], "'speeds'"),
    (["--speeds", "1,x,1,1,1"], "'speeds'"),
    (["--speeds", "1,1,1,1,-1"], "'speeds'"),
    (["--method", "dropout"], "'method'"),
    (["--rounds", "0"], "'rounds'"),
])
def test_bad_input_exits_2_with_the_key(tmp_path, capsys, args, message):
    rc = _main(["fl", "run", "--task", "digits", "--out", str(tmp_path), *args])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_leaf_data_is_a_clear_error(tmp_path, capsys):
    rc = _main(["fl", "run", "--task", "femnist", "--out", str(tmp_path / "o"),
                "--data-dir", str(tmp_path)])
    assert rc == 2
    assert "0_test.json" in capsys.readouterr().err


def test_fl_cmds_imports_nothing_heavy():
    code = ("import sys, hotpipe.cli.fl_cmds; "
            "print([m for m in ('torch', 'flwr', 'ray', 'matplotlib', 'sklearn') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_report_handles_flower_records_without_a_clock(tmp_path):
    from hotpipe.fl.report import write_run

    recs = [{"round": 0, "accuracy": 0.1, "loss": 2.3},
            {"round": 1, "accuracy": 0.2, "loss": 2.0, "round_time": 10.0, "r": 0.5, "kept": {}},
            {"round": 2, "accuracy": 0.3, "loss": 1.8, "round_time": 6.0, "r": 0.5,
             "kept": {"fc1": 3}, "failures": {"7": "boom"}}]
    doc = write_run(tmp_path, {"invariant": recs}, {"task": "digits"})
    s = doc["methods"]["invariant"]["summary"]
    assert s["sim_time"] == 16.0 and s["r"] == 0.5 and s["failures"] == 1
    assert (tmp_path / "accuracy_vs_time.png").is_file()
