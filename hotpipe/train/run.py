"""Assemble a training run from a RunConfig: data, model, feed, optimizers,
checkpoints, metrics. This is what ``hotpipe train`` calls.

Outputs in the run directory::

    config.yaml      the resolved configuration
    history.jsonl    one record per log window (loss, samples/s, hit rate, stall share)
                     and one per evaluation
    metrics.json     final_loss, val_auc, val_logloss, samples_per_s, steps, cache, ...
    losses.json      the loss of every step (what resume exactness is checked on)
    checkpoints/     see train/checkpoint.py
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import yaml

from hotpipe.config import RunConfig
from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.loader import split_loaders
from hotpipe.errors import CheckpointError, ConfigError
from hotpipe.model.dlrm import DLRM
from hotpipe.model.embedding import SparseEmbedding, table_offsets
from hotpipe.model.sparse_optim import RowOptimizer, make_row_optimizer
from hotpipe.train.checkpoint import load_checkpoint, save_checkpoint
from hotpipe.train.evaluate import evaluate
from hotpipe.train.feed import DirectFeed, Feed
from hotpipe.train.loop import LoopState, StepLog, train_steps

# Keys that may differ between a run and its resumption (they change when
# or how long we train, not the math of any step).
_RESUMABLE_DIFF = {"train.max_steps", "train.epochs", "train.checkpoint_every",
                   "train.eval_every", "train.progress", "train.log_every", "data.path",
                   "data.max_val_rows"}


def make_dense_optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.dense == "sgd":
        return torch.optim.SGD(model.parameters(), lr=o.dense_lr)
    if o.dense == "adagrad":
        return torch.optim.Adagrad(model.parameters(), lr=o.dense_lr)
    return torch.optim.Adam(model.parameters(), lr=o.dense_lr)


def make_feed(cfg: RunConfig, ds: ColumnarDataset, optimizer: RowOptimizer, run_dir: Path) -> Feed:
    if cfg.cache.policy == "none":
        return DirectFeed(cardinalities=ds.cardinalities, dim=cfg.model.embedding_dim,
                          optimizer=optimizer, seed=cfg.train.seed)
    from hotpipe.train.tiered_feed import TieredFeed  # only tiered runs need the planner

    return TieredFeed.from_config(cfg, ds.cardinalities, optimizer, run_dir)


def _flat(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_resumable(saved: dict[str, Any], now: RunConfig) -> None:
    a, b = _flat(saved), _flat(now.model_dump())
    for key in sorted(set(a) | set(b)):
        if key not in _RESUMABLE_DIFF and a.get(key) != b.get(key):
            raise ConfigError(key, f"differs from the checkpoint's run: checkpoint has "
                                   f"{a.get(key)!r}, now {b.get(key)!r}")


def train(cfg: RunConfig, run_dir: str | os.PathLike[str], *, resume: bool = False,
          report: bool = False, tensorboard: bool = False) -> dict[str, Any]:
    """Train as configured; returns (and writes) the metrics.

    ``report`` renders report.md + plots (train/report.py); ``tensorboard``
    also logs scalars to ``RUN/tensorboard`` via torch.utils.tensorboard.
    """
    if cfg.data.path is None:
        raise ConfigError("data.path", "no dataset given (use --data DIR)")
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)

    ds = ColumnarDataset.open(cfg.data.path)
    train_loader, val_loader = split_loaders(
        ds, batch_size=cfg.data.batch_size, val_fraction=cfg.data.val_fraction,
        max_val_rows=cfg.data.max_val_rows, epochs=cfg.train.epochs)
    if len(train_loader) == 0:
        raise ConfigError("data.batch_size", f"{cfg.data.batch_size} leaves no full training batch "
                                             f"in {ds.rows} rows (val_fraction={cfg.data.val_fraction})")
    m = cfg.model
    model = DLRM(num_dense=ds.num_dense, num_tables=ds.num_tables, embedding_dim=m.embedding_dim,
                 bottom=list(m.bottom), top=list(m.top))
    dense_opt = make_dense_optimizer(cfg, model)
    row_opt = make_row_optimizer(cfg.optim.embedding, lr=cfg.optim.embedding_lr, dim=m.embedding_dim)
    feed = make_feed(cfg, ds, row_opt, run)
    embedding = SparseEmbedding(store=feed.store, optimizer=row_opt)
    offsets = table_offsets(ds.cardinalities)
    state = LoopState()

    if resume:
        dense, records = load_checkpoint(run)
        _check_resumable(dense["config"], cfg)
        model.load_state_dict(dense["model"])
        dense_opt.load_state_dict(dense["dense_opt"])
        feed.load(records)
        state = LoopState(**dense["loop"])
        torch.set_rng_state(dense["rng"])
    else:
        (run / "history.jsonl").write_text("")
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))

    stop = len(train_loader) if not cfg.train.max_steps else min(cfg.train.max_steps, len(train_loader))
    if state.step > stop:
        raise CheckpointError(f"checkpoint is at step {state.step}, past the requested stop {stop}")
    history = open(run / "history.jsonl", "a")

    def checkpoint() -> None:
        feed.flush()
        save_checkpoint(run, state.step, {
            "model": model.state_dict(), "dense_opt": dense_opt.state_dict(),
            "loop": asdict(state), "rng": torch.get_rng_state(), "config": cfg.model_dump(),
        }, feed.export())

    tb = None
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter  # optional dependency

        tb = SummaryWriter(str(run / "tensorboard"))

    def on_log(log: StepLog) -> None:
        history.write(json.dumps({"kind": "train", **asdict(log)}) + "\n")
        history.flush()
        if tb is not None:
            for k in ("loss", "samples_per_s", "hit_rate", "stall_share"):
                tb.add_scalar(f"train/{k}", getattr(log, k), log.step)

    def on_step(step: int) -> None:
        if cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0 and step < stop:
            checkpoint()
        if cfg.train.eval_every and step % cfg.train.eval_every == 0 and step < stop:
            feed.flush()
            ev = evaluate(model, feed, val_loader, offsets)
            history.write(json.dumps({"kind": "eval", "step": step, **ev}) + "\n")
            history.flush()

    try:
        train_steps(model=model, embedding=embedding, feed=feed, dense_opt=dense_opt,
                    loader=train_loader, state=state, stop=stop, log_every=cfg.train.log_every,
                    progress=cfg.train.progress, on_log=on_log, on_step=on_step)
        checkpoint()
        ev = evaluate(model, feed, val_loader, offsets)
        history.write(json.dumps({"kind": "eval", "step": state.step, **ev}) + "\n")
    finally:
        history.close()
        feed.close()
        if tb is not None:
            tb.close()

    tail = state.losses[-cfg.train.log_every:]
    trained = len(state.losses) * cfg.data.batch_size
    metrics = {
        "final_loss": sum(tail) / len(tail) if tail else float("nan"),
        **ev,
        "samples_per_s": trained / state.train_seconds if state.train_seconds else 0.0,
        "steps": state.step,
        "samples": trained,
        "train_seconds": state.train_seconds,
        "threads": torch.get_num_threads(),
        "cache": {"policy": cfg.cache.policy, **feed.stats.as_dict()},
    }
    if "teacher_auc" in ds.manifest:
        metrics["teacher_auc"] = ds.manifest["teacher_auc"]
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (run / "losses.json").write_text(json.dumps(state.losses))
    if report:
        from hotpipe.train.report import write_report  # matplotlib only when asked

        write_report(run)
    return metrics
