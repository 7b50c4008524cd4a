"""Nothing lost, nothing silently wrong: locks, crash-safe checkpoints, NaN stops,
full disks, integrity checks, and clear errors instead of tracebacks."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hotpipe._fs import DirLock
from hotpipe.cli import main
from hotpipe.config import load_config
from hotpipe.errors import CheckpointError, DivergedError, LockError, ResourceError
from hotpipe.train import checkpoint as ckpt
from hotpipe.train.checkpoint import load_checkpoint, save_checkpoint
from hotpipe.train.run import train
from hotpipe.train.rundir import RunExistsError
from tests.conftest import make_dataset

BASE = ["train.progress=false", "train.log_every=1", "model.embedding_dim=4",
        "model.bottom=[8,4]", "model.top=[8,1]", "data.val_fraction=0.2", "data.batch_size=16"]
TIERS = {"untiered": [], "host": ["cache.policy=lookahead", "cache.capacity=0.5", "cache.window=4"],
         "file": ["cache.policy=lookahead", "cache.capacity=0.5", "cache.window=4",
                  "cache.backing=file"]}


def _cfg(data: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(overrides=[*BASE, *extra], values={"data.path": str(data)})


def _losses(run: Path) -> list[float]:
    return json.loads((run / "losses.json").read_text())


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("rs") / "d", rows=400, cards=(40, 7, 90), seed=4)


class Crash(Exception):
    """An injected failure standing in for a kill at that syscall."""


def _inject(monkeypatch: pytest.MonkeyPatch, target: Any, name: str, at: int) -> list[int]:
    calls = [0]
    real = getattr(target, name)

    def failing(*a: Any, **k: Any) -> Any:
        calls[0] += 1
        if calls[0] == at:
            raise Crash(f"{name} call {at}")
        return real(*a, **k)

    monkeypatch.setattr(target, name, failing)
    return calls


# --------------------------------------------------------------- crash safety

def _fault_injection(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tier: str,
                     syscalls: tuple[str, ...]) -> int:
    extra = [*TIERS[tier], "train.checkpoint_every=4"]
    ref = tmp_path / "ref"
    train(_cfg(data, *extra, "train.max_steps=12"), ref)
    crashes = 0
    for name in syscalls:
        target = shutil if name == "rmtree" else os
        for at in range(1, 200):
            run = tmp_path / f"{name}-{at}"
            with monkeypatch.context() as m:
                _inject(m, target, name, at)
                try:
                    train(_cfg(data, *extra, "train.max_steps=8"), run)
                except Crash:
                    crashes += 1
                else:
                    break  # fewer calls than `at`: every call has been interrupted once
            resume = (run / "checkpoints" / "LATEST").is_file()
            train(_cfg(data, *extra, "train.max_steps=12"), run, resume=resume,
                  overwrite=not resume)
            assert _losses(run) == _losses(ref), (name, at)
            steps = [r["step"] for r in map(json.loads, (run / "history.jsonl").read_text().splitlines())
                     if r["kind"] == "train"]
            assert steps == sorted(set(steps)), (name, at, steps)  # no step listed twice
            shutil.rmtree(run)
    return crashes


@pytest.mark.slow
def test_fault_injection_untiered(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _fault_injection(data, tmp_path, monkeypatch, "untiered", ("fsync", "replace")) > 10


@pytest.mark.slow
@pytest.mark.parametrize("tier", ["untiered", "host", "file"])
def test_fault_injection_every_syscall(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       tier: str) -> None:
    assert _fault_injection(data, tmp_path, monkeypatch, tier, ("fsync", "replace", "rmtree")) > 10


def test_rewrite_at_the_same_step_never_loses_the_checkpoint(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = np.zeros((6, 3), np.float32), np.ones((6, 3), np.float32)
    save_checkpoint(tmp_path, 5, {"x": 1}, a)
    for name, target in (("fsync", os), ("replace", os), ("rmtree", shutil)):
        for at in range(1, 12):
            with monkeypatch.context() as m, contextlib.suppress(Crash):
                _inject(m, target, name, at)
                save_checkpoint(tmp_path, 5, {"x": 2}, b)
            dense, rec = load_checkpoint(tmp_path)
            assert (dense["x"], np.array(rec).tolist()) in ((1, a.tolist()), (2, b.tolist()))
            save_checkpoint(tmp_path, 5, {"x": 1}, a)  # back to the first state
    assert len(list((tmp_path / "checkpoints").glob("step-*"))) == 1


def test_a_full_disk_is_a_clear_error_and_resume_works_after(data: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    train(_cfg(data, "train.max_steps=4"), run)
    real = ckpt._save_npy

    def full(path: Path, rows: Any) -> str:
        real(path, rows)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "_save_npy", full)
    with pytest.raises(ResourceError, match="disk is full"):
        train(_cfg(data, "train.max_steps=8"), run, resume=True)
    assert not [p for p in (run / "checkpoints").iterdir() if ".tmp-" in p.name]  # nothing left behind
    monkeypatch.undo()
    train(_cfg(data, "train.max_steps=8"), run, resume=True)
    ref = tmp_path / "ref"
    train(_cfg(data, "train.max_steps=8"), ref)
    assert _losses(run) == _losses(ref)


def test_file_tables_on_a_full_disk(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(*a: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(ResourceError, match="disk is full"):
        train(_cfg(data, *TIERS["file"]), tmp_path / "run")
    assert not list((tmp_path / "run" / "tables").glob("*.f32"))


# ------------------------------------------------------------ locks, re-runs

@pytest.mark.slow
def test_a_second_writer_is_refused_and_the_first_finishes_exactly(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "d", rows=12000, cards=(300, 20, 900), seed=1)
    args = ["--data", str(data), "--no-progress", "--no-report", *BASE, "train.threads=1"]
    ref = tmp_path / "ref"
    assert main(["train", "--out", str(ref), *args]) == 0
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "hotpipe", "train", "--out", str(run), *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = run / ".lock"
    deadline = time.time() + 60
    while time.time() < deadline and not (lock.is_file() and lock.read_text()):
        time.sleep(0.05)
    with pytest.raises(LockError, match=f"pid {first.pid}"):
        train(_cfg(data), run)
    assert first.wait(120) == 0, first.stderr.read() if first.stderr else ""
    assert _losses(run) == _losses(ref)


def test_shared_table_files_are_locked(tmp_path: Path, data: Path) -> None:
    holder = DirLock(tmp_path / "tables" / ".lock", "table files")
    try:
        with pytest.raises(LockError, match="table files"):
            train(_cfg(data, *TIERS["file"], f"cache.backing_dir={tmp_path / 'tables'}"), tmp_path / "b")
    finally:
        holder.release()


def test_a_finished_run_is_not_replaced_silently(tmp_path: Path, data: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    train(_cfg(data, "train.max_steps=3"), run)
    before = (run / "metrics.json").read_text()
    with pytest.raises(RunExistsError, match="--resume .* or --overwrite"):
        train(_cfg(data, "train.max_steps=3"), run)
    assert (run / "metrics.json").read_text() == before
    rc = main(["train", "--data", str(data), "--out", str(run), "--overwrite", *BASE,
               "train.max_steps=2"])
    assert rc == 0 and json.loads((run / "metrics.json").read_text())["steps"] == 2


# ---------------------------------------------------------- NaN, integrity

def test_a_diverging_run_stops_at_the_first_non_finite_loss(tmp_path: Path, data: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(DivergedError, match="step") as e:
        train(_cfg(data, "optim.embedding=sgd", "optim.embedding_lr=1e30", "optim.dense=sgd",
                   "optim.dense_lr=1e30", "train.checkpoint_every=1"), run)
    for line in (run / "history.jsonl").read_text().splitlines():
        json.loads(line)  # strict JSON, no NaN tokens
    assert not (run / "metrics.json").exists()
    dense, rec = load_checkpoint(run)  # the last good checkpoint verifies (finite rows)
    assert dense["loop"]["step"] <= e.value.step


def test_undefined_metrics_are_null_not_nan(tmp_path: Path, data: Path) -> None:
    m = train(_cfg(data, "data.val_fraction=0", "train.max_steps=2"), tmp_path / "run")
    text = (tmp_path / "run" / "metrics.json").read_text()
    assert "NaN" not in text and json.loads(text)["val_auc"] is None and m["val_auc"] is None


def _corrupt(run: Path, what: str) -> None:
    ck = run / "checkpoints" / (run / "checkpoints" / "LATEST").read_text()
    if what == "flip":
        raw = bytearray((ck / "emb_records.npy").read_bytes())
        raw[-5] ^= 0x01
        (ck / "emb_records.npy").write_bytes(bytes(raw))
    elif what == "nan":
        rec = np.load(ck / "emb_records.npy", mmap_mode="r+")
        rec[3, 0] = np.nan
        rec.flush()
    elif what == "empty_dense":
        (ck / "dense.pt").write_bytes(b"")
    elif what == "garbled_npy":
        (ck / "emb_records.npy").write_bytes(b"not a numpy file")
    elif what == "no_latest_target":
        shutil.rmtree(ck)


@pytest.mark.parametrize(("what", "message"), [
    ("flip", "sha256 does not match"), ("nan", "non-finite"), ("empty_dense", "damaged"),
    ("garbled_npy", "unreadable"), ("no_latest_target", "does not exist")])
def test_damaged_checkpoints_are_refused(tmp_path: Path, data: Path, what: str, message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    train(_cfg(data, "train.max_steps=3"), run)
    _corrupt(run, what)
    rc = main(["train", "--data", str(data), "--out", str(run), "--resume", *BASE,
               "train.max_steps=5"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err


def test_resume_refuses_another_dataset(tmp_path: Path, data: Path) -> None:
    other = make_dataset(tmp_path / "other", rows=400, cards=(40, 7, 90), seed=99)  # same sizes
    run = tmp_path / "run"
    train(_cfg(data, "train.max_steps=3"), run)
    with pytest.raises(CheckpointError, match="another dataset"):
        train(_cfg(other, "train.max_steps=5"), run, resume=True)


# ------------------------------------------------- clear errors, not tracebacks

@pytest.mark.parametrize(("args", "message"), [
    (["model.bottom=[]"], "model.bottom"),
    (["model.bottom=[64,8]"], "model.bottom"),
    (["model.top=[64,2]"], "model.top"),
    (["cache.window=true"], "cache.window"),
    (["cache.capacity=true"], "cache.capacity"),
    (["cache.windw=3"], "cache.windw"),
])
def test_bad_config_is_exit_2_naming_the_key(tmp_path: Path, data: Path, args: list[str],
                                            message: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "r"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err


def test_out_that_is_a_file(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    for extra in ([], ["--overwrite"]):
        assert main(["train", "--data", str(data), "--out", str(f), *extra]) == 2
        assert "is a file" in capsys.readouterr().err


def test_data_paths_are_not_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("2024", "d #1"):
        make_dataset(tmp_path / name, rows=200, cards=(9, 5))
        assert main(["train", "--data", str(tmp_path / name), "--out", str(tmp_path / f"r{name}"),
                     "--no-report", *BASE]) == 0


def test_overrides_after_resume_are_accepted(tmp_path: Path, data: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--no-report", *BASE,
                 "train.max_steps=2"]) == 0
    assert main(["train", "--data", str(data), "--out", str(run), "--resume", "train.max_steps=4",
                 "--no-report", *BASE]) == 0
    assert json.loads((run / "metrics.json").read_text())["steps"] == 4


def test_a_table_too_big_for_ram_is_refused_before_allocating(tmp_path: Path) -> None:
    from hotpipe.data.columnar import ColumnarWriter, TableSpec

    path = tmp_path / "big"
    with ColumnarWriter(path, tables=[TableSpec("C1", 10**9)], num_dense=2) as w:
        w.append(np.zeros(64, np.float32), np.zeros((64, 2), np.float32), np.zeros((64, 1), np.int32))
        w.finish(encoding={"kind": "test"}, sources=[])
    with pytest.raises(ResourceError, match="needs .* GiB of RAM"):
        train(_cfg(path, "model.embedding_dim=64", "model.bottom=[8,64]"), tmp_path / "r")


def test_a_checkpoint_from_before_new_keys_still_resumes(tmp_path: Path, data: Path) -> None:
    """Config keys added later (schedule.*, model.arch, dist.*) take their defaults."""
    import torch

    run = tmp_path / "run"
    train(_cfg(data, "train.max_steps=3"), run)
    ck = run / "checkpoints" / (run / "checkpoints" / "LATEST").read_text()
    dense = torch.load(ck / "dense.pt", weights_only=False)
    for section in ("schedule", "dist"):
        dense["config"].pop(section, None)
    dense["config"]["model"].pop("arch", None)
    torch.save(dense, ck / "dense.pt")
    (ck / "integrity.json").unlink()  # as written before integrity records existed
    train(_cfg(data, "train.max_steps=5"), run, resume=True)
    assert json.loads((run / "metrics.json").read_text())["steps"] == 5


def test_resume_and_overwrite_together_are_refused(tmp_path: Path, data: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "r"), "--resume", "--overwrite"])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err


def test_table_files_bigger_than_the_free_disk_are_refused(tmp_path: Path, data: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import collections

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 100, 100))
    with pytest.raises(ResourceError, match="need .* of disk"):
        train(_cfg(data, *TIERS["file"]), tmp_path / "run")
