"""train_distributed: rank 0 writes the run's files; losses and validation metrics match
``hotpipe.train.run.train``; the byte counters equal a count made here from the data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hotpipe.config import RunConfig, validate
from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.layout import TableLayout
from hotpipe.data.loader import split_loaders
from hotpipe.distributed.context import DistContext
from hotpipe.distributed.run import train_distributed
from hotpipe.distributed.spawn import run_ranks
from hotpipe.distributed.traffic import count_traffic
from hotpipe.train.run import train
from tests.conftest import make_dataset

STEPS, BATCH, DIM = 5, 48, 8


def _cfg(data: Path) -> RunConfig:
    return validate({
        "data": {"path": str(data), "batch_size": BATCH, "val_fraction": 0.2},
        "model": {"embedding_dim": DIM, "bottom": [16, DIM], "top": [16, 1]},
        "optim": {"embedding": "rowwise_adagrad", "embedding_lr": 0.1},
        "train": {"max_steps": STEPS, "progress": False, "log_every": 2},
    })


def _run(ctx: DistContext, cfg: RunConfig, out: str, hot: np.ndarray) -> dict[str, Any]:
    return train_distributed(cfg, out, ctx, replicate=hot)


def _steps(data: Path) -> list[np.ndarray]:
    ds = ColumnarDataset.open(str(data))
    loader = split_loaders(ds, batch_size=BATCH, val_fraction=0.2)[0]
    return [loader.sparse_ids(k) + TableLayout.of(ds).offsets for k in range(STEPS)]


def _expected_remote_rows(data: Path, world: int, hot: np.ndarray) -> int:
    """Rows each rank must receive, summed over ranks and steps, counted from the data:
    the distinct, non-replicated ids of a rank's b samples that another rank owns (id % W)."""
    b, total = BATCH // world, 0
    for gids in _steps(data):
        for s in range(world):
            u = np.setdiff1d(np.unique(gids[s * b:(s + 1) * b]), hot)
            total += int((u % world != s).sum())
    return total


@pytest.mark.parametrize(("world", "num_hot"), [(2, 0), (3, 0), (2, 10)])
def test_train_distributed_matches_train(world: int, num_hot: int, tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", rows=600)
    cfg = _cfg(data)
    counts = np.bincount(np.concatenate([g.ravel() for g in _steps(data)]))
    hot = np.sort(np.argsort(-counts, kind="stable")[:num_hot])  # the most looked-up rows
    single = train(cfg, tmp_path / "single")
    out = tmp_path / "dist"
    results = run_ranks(_run, world, args=(cfg, str(out), hot), timeout=60)
    assert [r.exitcode for r in results] == [0] * world, [r.error for r in results]

    metrics = json.loads((out / "metrics.json").read_text())
    assert results[0].value == metrics  # rank 0 returns what it wrote
    assert all(r.value["dist"] == metrics["dist"] for r in results)  # everyone got the gather
    losses = json.loads((out / "losses.json").read_text())
    ref_losses = json.loads((tmp_path / "single" / "losses.json").read_text())
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    assert metrics["steps"] == single["steps"] == STEPS
    for key in ("final_loss", "val_auc", "val_logloss"):
        assert metrics[key] == pytest.approx(single[key], rel=1e-5, abs=1e-6), key
    assert metrics["val_rows"] == single["val_rows"]

    d = metrics["dist"]
    assert d["world_size"] == world and d["local_batch"] == BATCH // world
    assert [p["rank"] for p in d["per_rank"]] == list(range(world))
    assert d["replicated_rows"] == num_hot
    remote = _expected_remote_rows(data, world, hot)
    assert remote > 0
    # each remote row crosses once forward (the row) and once backward (its gradient)
    assert d["rows_sent"] == sum(p["rows_received"] for p in d["per_rank"]) == 2 * remote
    assert d["bytes_sent"] == d["bytes_received"] == 2 * remote * DIM * 4
    predicted = count_traffic(_steps(data), world_size=world, replicated=hot)
    assert predicted.hotpipe_rows == remote  # the planner-side count equals the runtime's
    assert predicted.bytes(DIM)["hotpipe_bytes"] == d["bytes_sent"]
    assert d["bytes_per_sample"] == pytest.approx(2 * remote * DIM * 4 / (STEPS * BATCH))
    assert all(p["steps"] == STEPS for p in d["per_rank"])
    assert d["stall_seconds"] >= d["exchange_seconds"] > 0
    assert (out / "checkpoints" / "LATEST").is_file()  # the final checkpoint
