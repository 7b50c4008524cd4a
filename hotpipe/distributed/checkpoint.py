"""Checkpoints of a sharded run, in the single-process format (``train/checkpoint.py``).

One format for every world size: a distributed checkpoint *is* an ordinary
checkpoint (``dense.pt`` + ``emb_records.npy`` of all R rows + integrity,
written atomically by ``save_checkpoint``). So a run resumes with the same
world size, another one (rows re-partitioned on load), or as one process
(``hotpipe train --resume``), and a single-process checkpoint resumes on W
ranks — with no converter.

Saving (every rank calls it)::

    each rank   flush its tiered store, replicas into its shard, then
                its shard (n_r, D+W) -> RUN/checkpoints/.dist-stage-N/shard-r.npy
                (streamed chunk by chunk: a file-backed shard is never loaded whole)
    barrier
    rank 0      save_checkpoint(records = the shards interleaved back into
                global row order, read chunk by chunk), remove the stage
    barrier

Needs a run directory every rank can read (one host, or a shared file
system); rank 0 writes the full table once, so the checkpoint's size is
bounded by its disk, not its memory.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hotpipe.config import RunConfig
from hotpipe.distributed.context import DistContext
from hotpipe.distributed.exchange import RowExchange
from hotpipe.errors import CheckpointError
from hotpipe.storage.slots import RowSource
from hotpipe.train.checkpoint import load_checkpoint, save_checkpoint
from hotpipe.train.loop import LoopState

_CHUNK = 1 << 16


class _InterleavedShards:
    """(R, D+W) records in global row order from W shards: row g is shard g % W, row g // W.

    A ``RowSource``: ``save_checkpoint`` reads it one row chunk at a time.
    """

    dtype = np.float32

    def __init__(self, shards: list[np.ndarray]) -> None:
        self.shards = shards
        self.shape = (sum(len(s) for s in shards), int(shards[0].shape[1]))

    def __getitem__(self, rows: slice) -> np.ndarray:
        lo, hi, _ = rows.indices(self.shape[0])
        w = len(self.shards)
        out = np.empty((max(0, hi - lo), self.shape[1]), dtype=np.float32)
        for r, shard in enumerate(self.shards):
            first = lo + (r - lo) % w  # first global row >= lo that shard r holds
            if first < hi:
                out[first - lo::w] = shard[first // w:(hi - 1 - r) // w + 1]
        return out


def save_dist_checkpoint(run_dir: str | Path, *, ctx: DistContext, rows: RowExchange,
                         dense: dict[str, Any], dataset: str, step: int) -> None:
    """Write checkpoint ``step`` of the whole run (every rank calls it).

    Args:
        dense: rank 0's model/optimizer/loop state, as ``train/run.py`` saves it.
        dataset: the dataset's fingerprint.
    """
    rows.write_back()  # flushed, replicas into their owners' shards: each shard complete
    stage = Path(run_dir) / "checkpoints" / f".dist-stage-{step:08d}"
    stage.mkdir(parents=True, exist_ok=True)
    _save_rows(stage / f"shard-{ctx.rank}.npy", rows.shard.export())
    ctx.barrier(f"checkpoint {step} (shards written)")
    if ctx.is_main:
        shards = [np.load(stage / f"shard-{r}.npy", mmap_mode="r") for r in range(ctx.world_size)]
        save_checkpoint(Path(run_dir), step, dense, _InterleavedShards(shards), dataset=dataset)
        del shards
        shutil.rmtree(stage, ignore_errors=True)
    ctx.barrier(f"checkpoint {step} (published)")


def _save_rows(path: Path, src: RowSource) -> None:
    """(n, D+W) records -> a .npy file, one row chunk at a time."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=tuple(src.shape))
    for i in range(0, src.shape[0], _CHUNK):
        out[i:i + _CHUNK] = src[i:i + _CHUNK]
    out.flush()
    del out


def dense_state(model: torch.nn.Module, dense_opt: torch.optim.Optimizer, state: LoopState,
                cfg: RunConfig) -> dict[str, Any]:
    """What ``train/run.py`` saves besides the rows (so it can resume this checkpoint)."""
    return {"model": model.state_dict(), "dense_opt": dense_opt.state_dict(),
            "loop": asdict(state), "rng": torch.get_rng_state(), "config": cfg.model_dump()}


def load_dist_checkpoint(run_dir: str | Path, *, rows: RowExchange,
                         dataset: str) -> dict[str, Any]:
    """Load the latest checkpoint (of any world size) into this rank's rows and replicas.

    Returns:
        the dense dict (model, dense_opt, loop, rng, config).

    Raises:
        CheckpointError: none, damaged, another dataset, or another table shape.
    """
    dense, records = load_checkpoint(Path(run_dir), dataset=dataset)
    st = rows.store
    want = (rows.sharding.layout.num_rows, st.dim + st.state.shape[1])
    if tuple(records.shape) != want:
        raise CheckpointError(f"checkpoint in {run_dir} holds rows of shape {tuple(records.shape)}; "
                              f"this run's tables need {want} (rows, dim + optimizer state)")
    # Before the first step: a tiered shard's cache is empty, so its backing is all of it.
    _fill(rows.shard.write, records, rows.sharding.owned_rows().numpy())
    rows.shard.flush()
    if rows.replicas is not None:
        rep = rows.replicas.store
        d = rep.dim

        def put(slots: torch.Tensor, rec: torch.Tensor) -> None:
            rep.weights.index_copy_(0, slots, rec[:, :d])
            rep.state.index_copy_(0, slots, rec[:, d:])

        _fill(put, records, rows.replicas.rows.numpy())
    return dense


def _fill(write: Callable[[torch.Tensor, torch.Tensor], None], records: np.ndarray,
          global_rows: np.ndarray) -> None:
    """write(slots i.., records[global_rows[i..]]), a chunk of rows at a time (memory-mapped source)."""
    for i in range(0, len(global_rows), _CHUNK):
        rec = torch.from_numpy(np.asarray(records[global_rows[i:i + _CHUNK]], dtype=np.float32))
        write(torch.arange(i, i + len(rec), dtype=torch.int64), rec)
