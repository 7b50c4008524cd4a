"""Checkpoints of sharded runs are ordinary checkpoints: resuming with the same world
size, another one, or as one process (and a single-process checkpoint on W ranks)
equals the unbroken single-process run (allclose at fp32 reduction tolerance)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hotpipe.config import RunConfig, validate
from hotpipe.distributed.checkpoint import _InterleavedShards
from hotpipe.distributed.context import DistContext
from hotpipe.distributed.run import train_distributed
from hotpipe.distributed.spawn import run_ranks
from hotpipe.train.checkpoint import load_checkpoint
from hotpipe.train.run import train
from tests.conftest import make_dataset

RTOL, ATOL = 1e-5, 1e-6


def _cfg(data: Path, steps: int) -> RunConfig:
    return validate({
        "data": {"path": str(data), "batch_size": 48, "val_fraction": 0.2},
        "model": {"embedding_dim": 8, "bottom": [16, 8], "top": [16, 1]},
        "optim": {"embedding": "rowwise_adagrad", "embedding_lr": 0.1},
        "train": {"max_steps": steps, "progress": False},
    })


def _run(ctx: DistContext, cfg: RunConfig, out: str, resume: bool, replicate: int) -> dict[str, Any]:
    return train_distributed(cfg, out, ctx, resume=resume, replicate=replicate)


def _dist(world: int, cfg: RunConfig, out: Path, *, resume: bool = False, replicate: int = 0) -> None:
    results = run_ranks(_run, world, args=(cfg, str(out), resume, replicate), timeout=60)
    assert [r.exitcode for r in results] == [0] * world, [r.error for r in results]


def _same_run(a: Path, b: Path) -> None:
    """Losses of every step and the final checkpoint (rows, dense) of two run dirs."""
    np.testing.assert_allclose(json.loads((a / "losses.json").read_text()),
                               json.loads((b / "losses.json").read_text()), rtol=RTOL, atol=ATOL)
    (da, ra), (db, rb) = load_checkpoint(a), load_checkpoint(b)
    assert da["loop"]["step"] == db["loop"]["step"]
    np.testing.assert_allclose(ra, rb, rtol=RTOL, atol=ATOL)
    for k, v in da["model"].items():
        np.testing.assert_allclose(v.numpy(), db["model"][k].numpy(), rtol=RTOL, atol=ATOL)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    data = make_dataset(tmp_path / "data", rows=600)
    train(_cfg(data, 6), tmp_path / "unbroken")
    return data, tmp_path / "unbroken"


@pytest.mark.slow
@pytest.mark.parametrize(("first", "then", "replicate"), [(2, 2, 0), (2, 3, 6), (3, 2, 0)])
def test_resume_on_another_world_size(first: int, then: int, replicate: int,
                                      setup: tuple[Path, Path], tmp_path: Path) -> None:
    data, unbroken = setup
    out = tmp_path / "run"
    _dist(first, _cfg(data, 3), out, replicate=replicate)
    assert load_checkpoint(out)[0]["loop"]["step"] == 3
    _dist(then, _cfg(data, 6), out, resume=True, replicate=replicate)
    _same_run(out, unbroken)


@pytest.mark.slow
def test_one_process_resumes_a_two_rank_checkpoint(setup: tuple[Path, Path], tmp_path: Path) -> None:
    data, unbroken = setup
    out = tmp_path / "run"
    _dist(2, _cfg(data, 3), out)
    train(_cfg(data, 6), out, resume=True)
    _same_run(out, unbroken)


@pytest.mark.slow
def test_two_ranks_resume_a_single_process_checkpoint(setup: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    data, unbroken = setup
    out = tmp_path / "run"
    train(_cfg(data, 3), out)
    _dist(2, _cfg(data, 6), out, resume=True)
    _same_run(out, unbroken)
    # and the check can fail: a run stopped at 3 steps is not the unbroken one
    short = tmp_path / "short"
    train(_cfg(data, 3), short)
    with pytest.raises(AssertionError):
        _same_run(short, unbroken)


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_interleaved_shards_restore_global_order(world: int) -> None:
    rows = np.arange(23 * 3, dtype=np.float32).reshape(23, 3)
    src = _InterleavedShards([rows[r::world] for r in range(world)])
    assert src.shape == rows.shape
    for lo, hi in [(0, 23), (1, 7), (5, 6), (22, 23), (4, 4), (0, 100)]:
        np.testing.assert_array_equal(src[lo:hi], rows[lo:hi])
