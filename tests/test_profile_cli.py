"""`hotpipe profile | plan | calibrate` in-process: reports render, errors exit 2."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from PIL import Image

from hotpipe.cli import main
from tests.conftest import make_dataset
from tests.test_profile_costmodel import fake_hardware


@pytest.mark.parametrize("exact", [True, False])
def test_profile_report_renders(tmp_path: Path, capsys: pytest.CaptureFixture[str], exact: bool):
    data = make_dataset(tmp_path / "d", rows=1500, cards=(50, 7, 300, 20))
    out = tmp_path / "report"
    argv = ["profile", "--data", str(data), "--out", str(out), "--budget", "1KiB,8KiB", "--dim", "8",
            "--batch-size", "64"]
    assert main([*argv, "--exact"] if exact else [*argv, "--sample", "0.3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed["budgets"]) == 2
    prof = json.loads((out / "profile.json").read_text())
    assert len(prof["tables"]) == 4 and prof["settings"]["exact"] is exact
    md = (out / "profile.md").read_text()
    assert "Hot set per budget" in md and "| C3 |" in md
    for png in ("access_cdf.png", "hot_set.png", "reuse.png", "drift.png"):
        with Image.open(out / png) as im:
            assert im.size[0] > 100 and im.size[1] > 100


def test_plan_prints_the_best_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    data = make_dataset(tmp_path / "d", rows=2048, cards=(50, 7, 300, 20))
    hw = fake_hardware()
    hw = dataclasses.replace(hw, compute=dataclasses.replace(hw.compute, model={}))  # fits any model
    hw.save(tmp_path / "hw.json")
    rc = main(["plan", "--data", str(data), "--memory", "16KiB", "--hw", str(tmp_path / "hw.json"),
               "--top", "3", "--steps", "10", "--windows", "4,16", "--depths", "1",
               "--json", str(tmp_path / "plan.json"), "data.batch_size=64", "model.embedding_dim=8",
               "model.bottom=[16,8]"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "best configurations" in out and " 1  " in out
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["predictions"][0]["samples_per_s"] >= plan["predictions"][-1]["samples_per_s"]
    assert all(p["memory"]["fast"] <= 16 * 1024 for p in plan["predictions"])
    rc = main(["plan", "--data", str(data), "--memory", "16KiB", "--hw", str(tmp_path / "hw.json"),
               "--ranks", "2", "--steps", "6", "--windows", "4", "--depths", "1", "--tiers", "host",
               "data.batch_size=64", "model.embedding_dim=8", "model.bottom=[16,8]"])
    assert rc == 0 and "unvalidated" in capsys.readouterr().out


def test_plan_with_nothing_that_fits_exits_2_naming_the_memory_needed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    data = make_dataset(tmp_path / "d", rows=2048, cards=(50, 7, 300, 20))
    hw = fake_hardware()
    dataclasses.replace(hw, compute=dataclasses.replace(hw.compute, model={})).save(tmp_path / "hw.json")
    args = ["--hw", str(tmp_path / "hw.json"), "--steps", "10", "--windows", "4", "--depths", "1",
            "data.batch_size=64", "model.embedding_dim=8", "model.bottom=[16,8]"]
    rc = main(["plan", "--data", str(data), "--memory", "1KiB", *args])
    err = capsys.readouterr().err
    assert rc == 2 and "no configuration fits" in err and "try --memory" in err
    mib = int(err.split("try --memory ")[1].split("MiB")[0])
    assert main(["plan", "--data", str(data), "--memory", f"{mib}MiB", *args]) == 0


def test_bad_inputs_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    data = make_dataset(tmp_path / "d", rows=256)
    assert main(["profile", "--data", str(data), "--out", str(tmp_path / "r"), "--budget", "lots"]) == 2
    assert "--budget" in capsys.readouterr().err
    assert main(["profile", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    (tmp_path / "hw.json").write_text("{}")
    assert main(["plan", "--data", str(data), "--memory", "1MiB", "--hw", str(tmp_path / "hw.json")]) == 2
    assert "hardware file" in capsys.readouterr().err


def test_calibrate_writes_a_usable_hardware_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from hotpipe.placement.hardware import Hardware

    rc = main(["calibrate", "--out", str(tmp_path / "hw.json"), "--steps", "3", "--repeats", "1",
               "--tables", "3", "--rows-per-table", "2048", "--rank-compute", "data.batch_size=64",
               "train.threads=1"])
    assert rc == 0
    hw = Hardware.load(tmp_path / "hw.json")
    # --rank-compute: one rank of the runtime timed and kept for `plan --ranks`
    assert hw.rank_compute is not None and hw.rank_compute.step_s(32) > 0
    assert hw.rank_compute.model["tables"] == 3
    assert set(hw.tiers) == {"host", "file"} and set(hw.planner) == {"lookahead", "lru", "lfu", "static"}
    assert hw.compute.step_s(64) > 0 and 0 < hw.overlap.compute_rate <= 1
    assert hw.compute.model["tables"] == 3 and hw.compute.model["threads"] == 1
