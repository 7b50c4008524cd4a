"""The distributed recipe: build one rank's components, check the ranks agree, train, report.

``torchrun --nproc-per-node W -m hotpipe train ...`` calls
:func:`train_distributed` on every rank with its :class:`DistContext`. Rank 0
owns the run directory (lock, config.yaml, losses.json, metrics.json); the
others write nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
import yaml

from hotpipe.config import RunConfig
from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.layout import TableLayout
from hotpipe.data.loader import BatchLoader, split_loaders
from hotpipe.distributed.checkpoint import dense_state, load_dist_checkpoint, save_dist_checkpoint
from hotpipe.distributed.context import DistContext
from hotpipe.distributed.exchange import RowExchange
from hotpipe.distributed.loop import dist_train_steps, local_batch
from hotpipe.distributed.replicas import ReplicaSet, choose_replicated, replica_count
from hotpipe.distributed.sharding import RowSharding, small_table_rows
from hotpipe.distributed.shards import build_owned_rows
from hotpipe.errors import CheckpointError, ConfigError
from hotpipe.model.base import RecModel
from hotpipe.model.embedding import SparseEmbedding
from hotpipe.model.sparse_optim import RowOptimizer
from hotpipe.train import builders
from hotpipe.train.evaluate import evaluate
from hotpipe.train.feed import Feed
from hotpipe.train.loop import LoopState
from hotpipe.train.run import (
    check_resumable,
    dataset_fingerprint,
    flat_config,
    refuse_bag_modes,
    torch_threads,
)
from hotpipe.train.rundir import RunDir, dump_json, write_atomic

# Keys ranks may disagree on: where each rank reads the data from.
_LOCAL_KEYS = {"data.path", "train.progress", "train.threads"}


@dataclass
class DistComponents:
    """One rank's share of a run: the same dense replica everywhere, its own rows."""

    dataset: ColumnarDataset
    layout: TableLayout
    train_loader: BatchLoader
    val_loader: BatchLoader
    model: RecModel
    dense_opt: torch.optim.Optimizer
    row_opt: RowOptimizer
    rows: RowExchange


def build_dist_components(cfg: RunConfig, ctx: DistContext, *,
                          dataset: ColumnarDataset | None = None,
                          replicate: int | np.ndarray | None = None,
                          profile_steps: int | None = None,
                          run_dir: str | os.PathLike[str] | None = None) -> DistComponents:
    """Build rank ``ctx.rank``'s components from the config sections.

    Args:
        cfg: the run's configuration (the same on every rank).
        ctx: this rank.
        dataset: an opened dataset (default: ``cfg.data.path``).
        replicate: hot rows held by every rank: a count (the most looked-up
            rows of the first ``profile_steps`` steps), the global row ids, or
            None: ``dist.replicate`` (a fraction, a row count, or a per-rank
            memory budget such as ``64MiB``; ``replicas.replica_count``).
            Tables with fewer rows than ranks are replicated in any case.
        profile_steps: steps counted to choose them (default:
            ``dist.profile_steps``, or 5% of the training steps, at least one;
            FAE profiles a 5% sample).
        run_dir: the run directory (file-backed tiered ranks put their table
            files in ``RUN/tables/rank-R`` unless ``cache.backing_dir`` is set).

    Each rank's own rows are resident or tiered as ``cache.policy`` says
    (``shards.py``; ``cache.capacity`` is per rank). The dense model and its
    optimizer are built exactly as ``train/run.py`` builds them (same seed,
    same order), so every replica starts with the single-process weights
    without a broadcast; only the rows are sharded.

    Raises:
        ConfigError: no dataset, B not a multiple of W, a replication budget
            larger than all rows, a schedule or skip mode (not distributed yet).
        ResourceError: a replication budget larger than the machine's memory.
    """
    if cfg.schedule.mode != "none":
        raise ConfigError("schedule.mode", f"distributed runs train in data order for now; "
                                           f"expected 'none', found {cfg.schedule.mode!r}")
    if cfg.skip.mode != "none":
        raise ConfigError("skip.mode", f"distributed runs train every sample for now; "
                                       f"expected 'none', found {cfg.skip.mode!r}")
    if dataset is None:
        if cfg.data.path is None:
            raise ConfigError("data.path", "no dataset given (use --data DIR)")
        dataset = ColumnarDataset.open(str(cfg.data.path))
    refuse_bag_modes(cfg, dataset, runtime="distributed runs")
    layout = TableLayout.of(dataset)
    local_batch(cfg.data.batch_size, ctx.world_size)
    sharding = RowSharding(layout, world_size=ctx.world_size, rank=ctx.rank)
    train_loader, val_loader = split_loaders(
        dataset, batch_size=cfg.data.batch_size, val_fraction=cfg.data.val_fraction,
        max_val_rows=cfg.data.max_val_rows, epochs=cfg.train.epochs)
    if len(train_loader) == 0:
        raise ConfigError("data.batch_size", f"{cfg.data.batch_size} leaves no full training batch "
                                             f"in {dataset.rows} rows")
    dim = cfg.model.embedding_dim
    torch.manual_seed(cfg.train.seed)  # as build_components: same seed, same weights
    model = builders.build_model(cfg.model, num_dense=dataset.num_dense, num_tables=layout.num_tables)
    dense_opt = builders.build_dense_optimizer(cfg.optim, model.parameters())
    row_opt = builders.build_row_optimizer(cfg.optim, dim)
    # Checked even when the caller resolved it (the CLI does): a budget beyond
    # all rows or the machine's memory is an error, never silently clamped.
    count = replica_count(cfg.dist, layout, dim, row_opt)
    if replicate is None:
        replicate = count
    if isinstance(replicate, int):
        steps = len(train_loader) if not cfg.train.max_steps else min(cfg.train.max_steps,
                                                                       len(train_loader))
        profile = profile_steps if profile_steps is not None else (cfg.dist.profile_steps
                                                                   or max(1, steps // 20))
        hot = choose_replicated(train_loader, layout, replicate, profile)
    else:
        hot = np.asarray(replicate, dtype=np.int64)
    # Tables with fewer rows than ranks: on every rank (sharding.small_table_rows).
    hot = np.union1d(hot, small_table_rows(layout, ctx.world_size)).astype(np.int64)
    replicas = ReplicaSet.build(hot, layout=layout, dim=dim, optimizer=row_opt, seed=cfg.train.seed)
    shard = build_owned_rows(cfg.cache, sharding=sharding, dim=dim, optimizer=row_opt,
                             seed=cfg.train.seed, replicated=hot,
                             run_dir=Path(run_dir) if run_dir is not None else None)
    embedding = SparseEmbedding(store=shard.store, optimizer=row_opt)
    embedding.warm()  # set-up, not the first step's time (callers set the thread count)
    rows = RowExchange(ctx=ctx, sharding=sharding, shard=shard, embedding=embedding,
                       replicas=replicas)
    return DistComponents(dataset, layout, train_loader, val_loader, model, dense_opt, row_opt, rows)


def check_same_run(cfg: RunConfig, ctx: DistContext, dataset: ColumnarDataset) -> None:
    """Raise :class:`ConfigError` on every rank when any rank's config or data differs from rank 0's.

    Ranks compute each other's routes without asking, so a rank on other
    data or another batch size would silently train something else.
    """
    mine = {k: v for k, v in flat_config(cfg.model_dump()).items() if k not in _LOCAL_KEYS}
    mine["dataset"] = dataset_fingerprint(dataset)
    everyone: list[Any] = [None] * ctx.world_size
    with ctx.guard("config check"):
        dist.all_gather_object(everyone, mine, group=ctx.group)
    ref = everyone[0]
    for r, theirs in enumerate(everyone[1:], start=1):
        for key in sorted(set(ref) | set(theirs)):
            if ref.get(key) != theirs.get(key):
                raise ConfigError(key, f"ranks disagree: rank 0 has {ref.get(key)!r}, rank {r} "
                                       f"has {theirs.get(key)!r}")


class _ShardedReader:
    """``read_rows`` for ``train/evaluate.py``: every rank fetches all rows of a
    validation batch and scores the whole batch (validation is small; this
    keeps one evaluation code path)."""

    def __init__(self, rows: RowExchange) -> None:
        self.rows = rows

    def read_rows(self, global_ids: torch.Tensor) -> torch.Tensor:
        routes = self.rows.route([global_ids] * self.rows.ctx.world_size)  # serve: local ids
        send = self.rows.shard.read_weights(routes.serve)  # flushed: the backing is complete
        return self.rows.fetch(routes, send).wait()


def train_distributed(cfg: RunConfig, run_dir: str | os.PathLike[str], ctx: DistContext, *,
                      resume: bool = False, overwrite: bool = False,
                      replicate: int | np.ndarray | None = None,
                      profile_steps: int | None = None,
                      components: DistComponents | None = None) -> dict[str, Any]:
    """Train as configured on ``ctx.world_size`` ranks; every rank calls it.

    ``replicate``/``profile_steps``: hot rows kept on every rank, as in
    :func:`build_dist_components` (ignored when ``components`` are given).

    Rank 0 writes ``config.yaml``, ``losses.json`` and ``metrics.json`` (with a
    ``dist`` section: every rank's exchange counters and their totals) and
    returns the metrics; the other ranks return the same dict. Checkpoints
    (every ``train.checkpoint_every`` steps and at the end) are in the
    single-process format (``distributed/checkpoint.py``): ``resume`` continues
    from one written by any world size, or by ``hotpipe train``.

    Raises:
        ConfigError: see :func:`build_dist_components`, :func:`check_same_run`; a
            resumed checkpoint of another config.
        CheckpointError: nothing valid to resume.
        PeerFailedError: another rank failed (named when it could say).
        DivergedError: a non-finite loss.
    """
    run: RunDir | None = None
    c = components
    try:
        try:
            # Inside the try: a refused run directory is reported to the peers too.
            run = RunDir(run_dir, resume=resume, overwrite=overwrite) if ctx.is_main else None
            if ctx.world_size > 1:
                # Rank 0's RunDir cleans a replaced run; no rank builds its
                # table files in the run directory before that.
                ctx.barrier("run directory")
            with torch_threads(cfg.train.threads):
                c = c or build_dist_components(cfg, ctx, replicate=replicate,
                                               profile_steps=profile_steps, run_dir=run_dir)
                check_same_run(cfg, ctx, c.dataset)
                metrics = _train(cfg, Path(run_dir), run, ctx, c, resume=resume)
        except BaseException as e:
            ctx.report_failure(e)
            raise
    finally:
        if c is not None:
            c.rows.close()  # the mover stops, table files are unlocked
        if run is not None:
            run.release()
    return metrics


def _cache_totals(cfg: RunConfig, caches: list[dict[str, Any]]) -> dict[str, Any]:
    """Every rank's tiered-store counters, their sums, and the policy (``cache.capacity`` is per rank)."""
    out: dict[str, Any] = {"policy": cfg.cache.policy, "capacity_per_rank": str(cfg.cache.capacity)}
    if cfg.cache.policy == "none":
        return out
    for key in ("hits", "misses", "rows_fetched", "rows_written_back", "bytes_fetched",
                "bytes_written_back", "evictions", "slots"):
        out[key] = sum(int(x.get(key, 0)) for x in caches)
    looks = out["hits"] + out["misses"]
    out["hit_rate"] = out["hits"] / looks if looks else 1.0
    # The slowest rank sets the pace: its wait for its own mover is the stall.
    out["stall_seconds"] = max(float(x.get("stall_seconds", 0.0)) for x in caches)
    out["per_rank"] = [{k: v for k, v in x.items() if k != "per_table"} for x in caches]
    return out


def _train(cfg: RunConfig, path: Path, run: RunDir | None, ctx: DistContext, c: DistComponents, *,
           resume: bool) -> dict[str, Any]:
    fingerprint = dataset_fingerprint(c.dataset)
    state = LoopState()
    if resume:
        dense = load_dist_checkpoint(path, rows=c.rows, dataset=fingerprint)
        check_resumable(dense["config"], cfg)
        c.model.load_state_dict(dense["model"])
        c.dense_opt.load_state_dict(dense["dense_opt"])
        state = LoopState(**dense["loop"])
    if run is not None:
        write_atomic(run.path / "config.yaml", yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    n = len(c.train_loader)
    stop = n if not cfg.train.max_steps else min(cfg.train.max_steps, n)
    if state.step > stop:
        raise CheckpointError(f"checkpoint is at step {state.step}, past the requested stop {stop}")
    resumed_at = state.step

    def checkpoint() -> None:
        save_dist_checkpoint(path, ctx=ctx, rows=c.rows, step=state.step, dataset=fingerprint,
                             dense=dense_state(c.model, c.dense_opt, state, cfg))

    def on_step(step: int) -> None:
        if cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0 and step < stop:
            checkpoint()

    dist_train_steps(ctx=ctx, model=c.model, rows=c.rows, dense_opt=c.dense_opt,
                     loader=c.train_loader, state=state, stop=stop, on_step=on_step,
                     fetch_ahead=cfg.dist.fetch_ahead, staleness=cfg.dist.staleness)
    if state.step != resumed_at or not resume:  # as train/run.py: a resume at the stop adds nothing
        checkpoint()
    c.rows.write_back()  # each shard complete again (replicated rows included)
    trained_stats = c.rows.stats.as_dict()  # before evaluation's fetches add to it
    offsets = torch.from_numpy(c.layout.offsets.copy())
    # evaluate() only calls read_rows: the sharded reader is all of a Feed it needs.
    ev = evaluate(c.model, cast(Feed, _ShardedReader(c.rows)), c.val_loader, offsets)
    per_rank: list[Any] = [None] * ctx.world_size
    with ctx.guard("metrics gather"):
        dist.all_gather_object(per_rank, {"rank": ctx.rank, **trained_stats,
                                          "train_seconds": state.train_seconds,
                                          "cache": c.rows.shard.stats()}, group=ctx.group)
    tail = state.losses[-cfg.train.log_every:]
    trained = len(state.losses) * cfg.data.batch_size
    seconds = max(p["train_seconds"] for p in per_rank)
    totals = {k: sum(p[k] for p in per_rank) for k in
              ("rows_sent", "rows_received", "bytes_sent", "bytes_received", "rows_fetched_ahead",
               "rows_fetched_after_update")}
    caches = [p.pop("cache") for p in per_rank]
    metrics = {
        "final_loss": sum(tail) / len(tail) if tail else None,
        "cache": _cache_totals(cfg, caches),
        **ev,
        "samples_per_s": trained / seconds if seconds else 0.0,
        "steps": state.step,
        "samples": trained,
        "train_seconds": seconds,
        "threads": torch.get_num_threads(),
        "dist": {
            "world_size": ctx.world_size,
            "backend": ctx.backend,
            "sharding": "row-wise, global row % world_size",
            "local_batch": cfg.data.batch_size // ctx.world_size,
            "replicated_rows": len(c.rows.replicas) if c.rows.replicas is not None else 0,
            "staleness": cfg.dist.staleness,  # 0: exact
            "bytes_sent": totals["bytes_sent"],
            "bytes_received": totals["bytes_received"],
            "bytes_per_sample": totals["bytes_sent"] / trained if trained else 0.0,
            "rows_sent": totals["rows_sent"],
            # Forward rows in each step's first exchange (during the previous step's
            # compute; every row when nothing was in flight) / after its update.
            "rows_fetched_ahead": totals["rows_fetched_ahead"],
            "rows_fetched_after_update": totals["rows_fetched_after_update"],
            "exchange_seconds": max(p["exchange_seconds"] for p in per_rank),
            # Seconds waited on a collective (what was not hidden behind
            # compute: exchanges, dense all-reduce) stalled the step, as did
            # waiting for a tiered shard's mover.
            "stall_seconds": max(p["exchange_seconds"] + p["allreduce_seconds"]
                                 + float(x.get("stall_seconds", 0.0))
                                 for p, x in zip(per_rank, caches, strict=True)),
            "per_rank": per_rank,
        },
    }
    if run is not None:
        write_atomic(run.path / "losses.json", dump_json(state.losses, indent=None))
        write_atomic(run.path / "metrics.json", dump_json(metrics))  # last: "finished"
    return cast(dict[str, Any], json.loads(dump_json(metrics)))
