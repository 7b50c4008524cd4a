"""The training recipe: wire components built from typed config sections, run, report.

This is what ``hotpipe train`` and :func:`hotpipe.fit` call. The components
come from ``train/builders.py`` unless the caller hands some in
(``build_components(cfg, run, feed=my_feed)``), so another feed, model or
optimizer never needs a monkeypatch.

Outputs in the run directory::

    config.yaml      the resolved configuration
    history.jsonl    one record per log window (loss, samples/s, hit rate, stall share)
                     and one per evaluation
    metrics.json     final_loss, val_auc, val_logloss, samples_per_s, steps, cache, ...
                     (strict JSON: an undefined metric is null)
    losses.json      the loss of every step (what resume exactness is checked on; null for a
                     step whose samples skip.mode all skipped)
    checkpoints/     see train/checkpoint.py
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from hotpipe.config import RunConfig
from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.layout import TableLayout
from hotpipe.data.loader import BatchLoader, split_loaders
from hotpipe.data.schedule import KIND_NAMES, ScheduledLoader
from hotpipe.errors import CheckpointError, ConfigError
from hotpipe.model.base import RecModel
from hotpipe.model.embedding import SparseEmbedding
from hotpipe.model.sparse_optim import RowOptimizer
from hotpipe.train import builders
from hotpipe.train.checkpoint import load_checkpoint, save_checkpoint
from hotpipe.train.evaluate import evaluate
from hotpipe.train.feed import Feed
from hotpipe.train.loop import LoopState, StepLog, train_steps
from hotpipe.train.rundir import RunDir, dump_json, write_atomic
from hotpipe.train.skip import StaleSkipper, current_rows, run_lag

# Keys that may differ between a run and its resumption (they change when
# or how long we train, not the math of any step).
# dist.*: a checkpoint resumes on any number of ranks (rows are re-partitioned).
RESUMABLE_DIFF = {"train.max_steps", "train.epochs", "train.checkpoint_every",
                  "train.eval_every", "train.progress", "train.log_every", "train.threads",
                  "data.path", "data.max_val_rows", "dist.timeout", "dist.replicate",
                  "dist.profile_steps"}
# Below this many training steps a run says so before it starts: too few
# updates to learn anything (8k rows at batch 2048 is 3 steps, AUC 0.5).
_FEW_STEPS = 20


@dataclass
class Components:
    """Everything one run trains with; build with :func:`build_components`."""

    dataset: ColumnarDataset
    layout: TableLayout
    train_loader: BatchLoader
    val_loader: BatchLoader
    model: RecModel
    dense_opt: torch.optim.Optimizer
    row_opt: RowOptimizer
    feed: Feed
    skipper: StaleSkipper | None = None  # skip.mode=slipstream

    def close(self) -> None:
        self.feed.close()


def build_components(cfg: RunConfig, run_dir: str | os.PathLike[str], **given: Any) -> Components:
    """Build each component from its config section, except those passed in ``given``.

    Example:
        >>> c = build_components(cfg, "runs/a", feed=my_feed)  # doctest: +SKIP
    """
    unknown = set(given) - set(Components.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown components {sorted(unknown)}")
    if cfg.data.path is None and "dataset" not in given:
        raise ConfigError("data.path", "no dataset given (use --data DIR)")
    ds = given["dataset"] if "dataset" in given else ColumnarDataset.open(str(cfg.data.path))
    layout = given["layout"] if "layout" in given else TableLayout.of(ds)
    refuse_bag_modes(cfg, ds)
    if "train_loader" in given and "val_loader" in given:
        train_loader, val_loader = given["train_loader"], given["val_loader"]
    else:
        train_loader, val_loader = split_loaders(
            ds, batch_size=cfg.data.batch_size, val_fraction=cfg.data.val_fraction,
            max_val_rows=cfg.data.max_val_rows, epochs=cfg.train.epochs)
    if len(train_loader) == 0:
        raise ConfigError("data.batch_size", f"{cfg.data.batch_size} leaves no full training batch "
                                             f"in {ds.rows} rows (val_fraction={cfg.data.val_fraction})")
    dim = cfg.model.embedding_dim
    # Seeded here, not by the caller: the same config builds the same weights
    # whether train() or a test builds the components.
    torch.manual_seed(cfg.train.seed)
    model = (given["model"] if "model" in given else
             builders.build_model(cfg.model, num_dense=ds.num_dense, num_tables=layout.num_tables))
    dense_opt = (given["dense_opt"] if "dense_opt" in given else
                 builders.build_dense_optimizer(cfg.optim, model.parameters()))
    row_opt = given["row_opt"] if "row_opt" in given else builders.build_row_optimizer(cfg.optim, dim)
    if cfg.schedule.mode != "none" and "train_loader" not in given:
        # The hot set is as large as the fast tier (cache.capacity in rows), so the
        # same config orders the steps alike whether or not the run is tiered.
        train_loader = ScheduledLoader.from_config(
            train_loader, cfg.schedule, layout=layout, seed=cfg.train.seed,
            hot_rows=builders.capacity_rows(cfg.cache, layout, dim, row_opt))
    feed = (given["feed"] if "feed" in given else
            builders.build_feed(cfg.cache, layout=layout, dim=dim, optimizer=row_opt,
                                seed=cfg.train.seed, run_dir=Path(run_dir)))
    skipper = given.get("skipper")
    if cfg.skip.mode != "none" and "skipper" not in given:
        skipper = _build_skipper(cfg, layout, row_opt, feed)
    return Components(ds, layout, train_loader, val_loader, model, dense_opt, row_opt, feed, skipper)


def refuse_bag_modes(cfg: RunConfig, ds: ColumnarDataset, *, runtime: str = "") -> None:
    """Raise ConfigError for a mode that reads one id per table on a multi-hot dataset.

    The scheduler's popularity test and the skipper's stale-sample test look at a
    sample's (T,) ids; a bag has any number. Refused by name rather than failing
    deep inside with a shape error. ``runtime``: also refuse that runtime
    (e.g. ``"distributed runs"``), which exchanges one row per (sample, table).
    """
    if not ds.multi_hot:
        return
    bags = ", ".join(t.name for t in ds.tables if t.multi_hot)
    found = {"schedule.mode": cfg.schedule.mode, "skip.mode": cfg.skip.mode}
    for key, mode in found.items():
        if mode != "none":
            raise ConfigError(key, f"expected 'none' on a dataset with list (multi-hot) tables "
                                   f"({bags}), found {mode!r}: this mode reads one id per table")
    if runtime:
        raise ConfigError("data.path", f"{runtime} need one-hot tables; {cfg.data.path} has "
                                       f"list (multi-hot) tables ({bags})")


def _build_skipper(cfg: RunConfig, layout: TableLayout, row_opt: RowOptimizer,
                   feed: Feed) -> StaleSkipper:
    # skip.hot_rows=0: as many rows as the fast tier holds (cache.capacity), so a
    # tiered and an untiered run of the same config snapshot the same rows.
    # current_rows reads the snapshot without flushing a tiered feed (no extra write-backs).
    return StaleSkipper.from_config(
        cfg.skip, layout=layout, read_rows=current_rows(feed), lag=run_lag(cfg.skip, cfg.cache),
        hot_rows=builders.capacity_rows(cfg.cache, layout, cfg.model.embedding_dim, row_opt))


def dataset_fingerprint(ds: ColumnarDataset) -> str:
    """The dataset's identity for resume checks (the data stage owns it: sha256 over
    rows, tables and every file's checksum, weaker for datasets written before checksums)."""
    return ds.fingerprint


def flat_config(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (dotted config keys)."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(flat_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads (0: leave torch's setting), then restore it:
    ``train.threads`` is a setting of one run, not of the calling process."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_resumable(saved: dict[str, Any], now: RunConfig) -> None:
    """Refuse to resume a checkpoint whose run differs in a key that changes the math.

    Raises:
        ConfigError: naming the first such key and both values.
    """
    # Keys added since the checkpoint was written take their defaults; a saved
    # config that no longer validates is compared as written (the key is named below).
    with contextlib.suppress(ValueError, ConfigError):
        saved = RunConfig.model_validate(saved).model_dump()
    a, b = flat_config(saved), flat_config(now.model_dump())
    for key in sorted(set(a) | set(b)):
        if key not in RESUMABLE_DIFF and a.get(key) != b.get(key):
            raise ConfigError(key, f"differs from the checkpoint's run: checkpoint has "
                                   f"{a.get(key)!r}, now {b.get(key)!r}")


def train(cfg: RunConfig, run_dir: str | os.PathLike[str], *, resume: bool = False,
          overwrite: bool = False, report: bool = False, tensorboard: bool = False,
          components: Components | None = None) -> dict[str, Any]:
    """Train as configured; returns (and writes) the metrics.

    Args:
        cfg: the validated run configuration.
        run_dir: the run directory (locked while training).
        resume: continue from the directory's latest checkpoint.
        overwrite: replace a run already in the directory (else it is refused).
        report: render report.md + plots (train/report.py).
        tensorboard: also log scalars to ``RUN/tensorboard``.
        components: prebuilt components (default: built from ``cfg``).

    Raises:
        RunExistsError, LockError: the directory holds a run, or another process.
        DivergedError: a non-finite loss (the last good checkpoint is kept).
        CheckpointError: nothing valid to resume, or a checkpoint of another dataset.
    """
    run = RunDir(run_dir, resume=resume, overwrite=overwrite)
    c: Components | None = components
    try:
        with torch_threads(cfg.train.threads):
            c = c or build_components(cfg, run.path)
            return _train(cfg, run, c, resume=resume, report=report, tensorboard=tensorboard)
    finally:
        if c is not None:
            c.close()
        run.release()


def _train(cfg: RunConfig, run: RunDir, c: Components, *, resume: bool, report: bool,
           tensorboard: bool) -> dict[str, Any]:
    path, feed, model, dense_opt = run.path, c.feed, c.model, c.dense_opt
    embedding = SparseEmbedding(store=feed.store, optimizer=c.row_opt)
    embedding.warm()  # set-up, not the first step's time
    offsets = torch.from_numpy(c.layout.offsets.copy())
    fingerprint = dataset_fingerprint(c.dataset)
    state = LoopState()
    if resume:
        dense, records = load_checkpoint(path, dataset=fingerprint)
        check_resumable(dense["config"], cfg)
        model.load_state_dict(dense["model"])
        dense_opt.load_state_dict(dense["dense_opt"])
        feed.load(records)
        del records
        state = LoopState(**dense["loop"])
        if c.skipper is not None:
            if "skip" not in dense:
                raise CheckpointError("the checkpoint has no skip.mode state to resume")
            c.skipper.load_state_dict(dense["skip"])
        torch.set_rng_state(dense["rng"])
        run.trim_history(state.step)
    else:
        (path / "history.jsonl").write_text("")
    write_atomic(path / "config.yaml", yaml.safe_dump(cfg.model_dump(), sort_keys=False))

    n = len(c.train_loader)
    stop = n if not cfg.train.max_steps else min(cfg.train.max_steps, n)
    if state.step > stop:
        raise CheckpointError(f"checkpoint is at step {state.step}, past the requested stop {stop}")
    if stop < _FEW_STEPS:
        print(f"hotpipe: note: only {stop} training step(s) of {cfg.data.batch_size} samples "
              f"({c.train_loader.stop - c.train_loader.start} training rows): too few to learn much; "
              "lower data.batch_size or raise train.epochs", file=sys.stderr)
    resumed_at = state.step
    history = open(path / "history.jsonl", "a")

    def checkpoint() -> None:
        feed.flush()
        save_checkpoint(path, state.step, {
            "model": model.state_dict(), "dense_opt": dense_opt.state_dict(),
            "loop": asdict(state), "rng": torch.get_rng_state(), "config": cfg.model_dump(),
            **({"skip": c.skipper.state_dict()} if c.skipper is not None else {}),
        }, feed.export(), dataset=fingerprint)

    tb = None
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter  # optional dependency

        tb = SummaryWriter(str(path / "tensorboard"))

    def log_line(rec: dict[str, Any]) -> None:
        history.write(dump_json(rec, indent=None) + "\n")
        history.flush()

    def on_log(log: StepLog) -> None:
        log_line({"kind": "train", **asdict(log)})
        if tb is not None:
            for k in ("loss", "samples_per_s", "hit_rate", "stall_share"):
                tb.add_scalar(f"train/{k}", getattr(log, k), log.step)

    # Stall seconds by the kind of step they delayed (schedule.mode != none): the
    # feed's counter is cumulative and grows just before it yields a step, so its
    # growth between two on_step calls belongs to the step that just finished.
    scheduled = c.train_loader if isinstance(c.train_loader, ScheduledLoader) else None
    stall_by_kind = [0.0] * len(KIND_NAMES)
    stall_seen = [feed.stats.stall_seconds]

    def on_step(step: int) -> None:
        if scheduled is not None:
            stall_by_kind[scheduled.kind(step - 1)] += feed.stats.stall_seconds - stall_seen[0]
            stall_seen[0] = feed.stats.stall_seconds
        if cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0 and step < stop:
            checkpoint()
        if cfg.train.eval_every and step % cfg.train.eval_every == 0 and step < stop:
            feed.flush()
            log_line({"kind": "eval", "step": step, **evaluate(model, feed, c.val_loader, offsets)})

    try:
        train_steps(model=model, embedding=embedding, feed=feed, dense_opt=dense_opt,
                    loader=c.train_loader, state=state, stop=stop, log_every=cfg.train.log_every,
                    progress=cfg.train.progress, on_log=on_log, on_step=on_step,
                    skipper=c.skipper)
        if state.step != resumed_at or not resume:  # a resume at the stop has nothing new to save
            checkpoint()
        else:
            feed.flush()
        ev = evaluate(model, feed, c.val_loader, offsets)
        log_line({"kind": "eval", "step": state.step, **ev})
    finally:
        history.close()
        if tb is not None:
            tb.close()

    tail = [x for x in state.losses[-cfg.train.log_every:] if not math.isnan(x)]  # NaN: all skipped
    trained = len(state.losses) * cfg.data.batch_size
    metrics = {
        "final_loss": sum(tail) / len(tail) if tail else None,
        **ev,
        "samples_per_s": trained / state.train_seconds if state.train_seconds else 0.0,
        "steps": state.step,
        "samples": trained,
        "train_seconds": state.train_seconds,
        "threads": torch.get_num_threads(),
        "cache": {"policy": cfg.cache.policy, **feed.stats.as_dict()},
    }
    if scheduled is not None:
        metrics["schedule"] = {**scheduled.summary(state.step), "stall_seconds": dict(
            zip(KIND_NAMES, stall_by_kind, strict=True))}
    if c.skipper is not None:
        metrics["skip"] = c.skipper.summary()
    if "teacher_auc" in c.dataset.manifest:
        metrics["teacher_auc"] = c.dataset.manifest["teacher_auc"]
    write_atomic(path / "losses.json", dump_json(state.losses, indent=None))  # null: a step skip.mode emptied
    write_atomic(path / "metrics.json", dump_json(metrics))  # last: its presence means "finished"
    if report:
        from hotpipe.train.report import write_report  # matplotlib only when asked

        write_report(path)
    return json.loads(dump_json(metrics))
