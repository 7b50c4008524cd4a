"""Predict a tiered configuration's training throughput before training.

SCARS's idea — choose placement with a cost model — made checkable: every
input is either counted exactly or measured.

- **Rows moved** come from the planner itself (:mod:`hotpipe.plan.movement`),
  so the predicted traffic *equals* the simulator's for the configuration.
- **Time per unit of work** comes from the machine's measured rates
  (:mod:`hotpipe.placement.hardware`, measured by ``hotpipe calibrate``):
  planning per lookup and per miss, applying a plan per row fetched and per
  row written back on each backing tier, reading a batch, computing a step.
- **How the work overlaps** is the tiered feed's own pipeline, replayed by
  :func:`~hotpipe.placement.pipeline.replay_pipeline` with measured contention.

Per step ``s`` (``B`` samples, ``L`` lookups, ``M`` misses, ``F`` rows
fetched, ``W`` rows written back)::

    plan_s    = planner.per_step + per_lookup * L + per_miss * M
                (+ per_profiled_lookup * lookups profiled up front, on step 0: static)
    move_s    = tier.per_apply + per_fetch * F + per_writeback * W + batch_read * B
    compute_s = compute(B) - batch_read * B      (untiered compute reads the batch itself)
    time      = replay of the pipeline (max of the two when they overlap
                perfectly, their sum when they cannot overlap at all)

The final flush's write-backs are counted in rows moved but not in time:
training time (``samples_per_s``) stops before the end-of-run checkpoint.

Speed modes (:func:`predict_run` reads them from the run config):

- ``schedule.mode`` (fae, hotline) changes only the order of the samples:
  the trace is the scheduled one
  (:class:`~hotpipe.data.schedule.ScheduledTrace`, each capacity planning the
  order a run at that capacity trains), so rows moved are counted exactly.
- ``skip.mode=slipstream`` drops samples chosen from weights that only
  training produces, so they cannot be replayed: the model assumes the share
  lands on ``skip.target_drop`` (the threshold search lands at or just below
  it) from the first step a stale set decides (``warmup + interval + lag``)
  and shrinks each such step's compute to the kept samples
  (``compute(B) = per_step + per_sample * B * (1 - target)``; the batch is
  still read whole). Rows moved are those of the whole trace: an upper bound
  when the skipper leaves skipped samples out of the plans (``lag`` >= the
  planner's reach; measured savings in BENCHMARKS.md). Snapshot reads (two
  reads of the hot rows per period, after a flush) are not modelled.

Not modelled (small or out of reach today): the feed's per-step counters in
the main thread (a search and a bincount over the step's distinct ids);
a file tier bigger than RAM — ``calibrate`` measures files that sit in the
page cache, so a table that pages from disk will be slower than predicted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hotpipe.config import RunConfig
from hotpipe.data.columnar import ColumnarDataset
from hotpipe.errors import ConfigError
from hotpipe.placement.hardware import Hardware
from hotpipe.placement.pipeline import replay_pipeline
from hotpipe.plan.movement import StepTrace
from hotpipe.storage.slots import FLOAT_BYTES

#: Settings a compute measurement must share with the run it predicts.
MODEL_KEYS = ("arch", "embedding_dim", "bottom", "top", "tables", "embedding_optimizer",
              "dense_optimizer", "threads")


@dataclass(frozen=True)
class Candidate:
    """One configuration of the tiers (the ``cache.*`` keys of a run, plus ranks).

    Attributes:
        policy: a planner policy, or ``"none"``: every row in the fast tier.
        capacity: fast-tier rows (per rank).
        window, depth: planner lookahead and prefetch depth.
        backing: ``"host"`` (RAM) or ``"file"`` (memory-mapped files).
        ranks: workers; > 1 is modelled only (no distributed runtime yet).
        replicated: hottest rows copied to every rank (ranks > 1).
    """

    policy: str
    capacity: int
    window: int = 1
    depth: int = 1
    backing: str = "host"
    ranks: int = 1
    replicated: int = 0

    def cache_overrides(self) -> list[str]:
        """``key=value`` overrides that make a run use this configuration."""
        if self.policy == "none":
            return ["cache.policy=none"]
        return [f"cache.policy={self.policy}", f"cache.capacity={self.capacity}",
                f"cache.window={self.window}", f"cache.depth={self.depth}",
                f"cache.backing={self.backing}"]

    def label(self) -> str:
        if self.policy == "none":
            return "untiered"
        s = f"{self.policy} cap={self.capacity:,} W={self.window} d={self.depth} {self.backing}"
        if self.ranks > 1:
            s += f" ranks={self.ranks} repl={self.replicated:,}"
        return s


@dataclass(frozen=True)
class SkipModel:
    """Stale-sample skipping as the cost model assumes it (module docstring).

    Attributes:
        share: samples skipped per step once a stale set applies (``skip.target_drop``).
        first_step: the first step a stale set decides (``warmup + interval + lag``).
    """

    share: float
    first_step: int

    def kept(self, batch_sizes: np.ndarray) -> np.ndarray:
        """(S,) samples each step trains."""
        b = batch_sizes.astype(np.float64)
        b[self.first_step:] *= 1.0 - self.share
        return b


@dataclass(frozen=True)
class Workload:
    """What is trained: sizes that turn rows into bytes and steps into compute.

    Attributes:
        batch_size: samples per step (global, over all ranks).
        num_rows: rows over all tables.
        state_width: optimizer floats per row.
        model: the model keys of :data:`MODEL_KEYS` (``embedding_dim`` at least).
        dense_params: parameters of the MLPs (all-reduced when ranks > 1).
        skip: ``skip.mode=slipstream`` as modelled (None: every sample trains).
    """

    batch_size: int
    num_rows: int
    state_width: int
    model: dict[str, Any]
    dense_params: int = 0
    skip: SkipModel | None = None

    @property
    def dim(self) -> int:
        return int(self.model["embedding_dim"])

    @property
    def row_bytes(self) -> int:
        """A row in a tier: weights + optimizer state, fp32."""
        return (self.dim + self.state_width) * FLOAT_BYTES


@dataclass
class Prediction:
    """The cost model's answer for one candidate."""

    candidate: Candidate
    samples_per_s: float
    step_s: float
    hit_rate: float
    rows_fetched: int
    rows_written_back: int
    bytes_moved: int
    memory: dict[str, int]
    compute_s: float
    mover_s: float
    stall_s: float
    total_s: float
    steps: int
    validated: bool = True
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["label"] = self.candidate.label()
        return d


def model_key(run: RunConfig, tables: int) -> dict[str, Any]:
    """The settings of :data:`MODEL_KEYS` for a run (threads 0 = torch's default now)."""
    import torch

    m, o = run.model, run.optim
    return {"arch": m.arch, "embedding_dim": m.embedding_dim, "bottom": list(m.bottom), "top": list(m.top),
            "tables": tables, "embedding_optimizer": o.embedding, "dense_optimizer": o.dense,
            "threads": run.train.threads or torch.get_num_threads()}


def workload_from_config(run: RunConfig, cardinalities: list[int], num_dense: int) -> Workload:
    """The :class:`Workload` of a run on a dataset with these tables."""
    from hotpipe.model.sparse_optim import make_row_optimizer
    from hotpipe.train.builders import build_model

    m = run.model
    opt = make_row_optimizer(run.optim.embedding, lr=run.optim.embedding_lr, dim=m.embedding_dim)
    dense = build_model(m, num_dense=num_dense, num_tables=len(cardinalities))  # any model.arch
    return Workload(batch_size=run.data.batch_size, num_rows=int(sum(cardinalities)),
                    state_width=opt.state_width, model=model_key(run, len(cardinalities)),
                    dense_params=sum(p.numel() for p in dense.parameters()),
                    skip=skip_model(run))


def skip_model(run: RunConfig, lag: int | None = None) -> SkipModel | None:
    """The run's ``skip`` section as :class:`SkipModel` (None for ``skip.mode=none``).

    ``lag``: steps from an estimate to its use (default: the run's ``skip.lag``,
    ``plan`` = the planner's reach, :func:`hotpipe.train.skip.plan_lag`).
    """
    from hotpipe.train.skip import run_lag

    k = run.skip
    if lag is None:
        lag = run_lag(k, run.cache)
    if k.mode == "none":
        return None
    return SkipModel(share=k.target_drop, first_step=k.warmup + k.interval + lag)


def check_model(hw: Hardware, work: Workload) -> None:
    """Refuse a compute measurement made for another model."""
    measured = hw.compute.model
    for key in MODEL_KEYS:
        if key in measured and key in work.model and measured[key] != work.model[key]:
            raise ConfigError(f"model.{key}", f"the hardware file's compute was measured with "
                                              f"{measured[key]!r}, this run has {work.model[key]!r}; "
                                              "run `hotpipe calibrate` with this model")


def memory_per_tier(c: Candidate, work: Workload) -> dict[str, int]:
    """Bytes each tier holds (per rank): fast cache, host RAM backing, file backing."""
    rows = work.num_rows if c.ranks == 1 else -(-work.num_rows // c.ranks) + c.replicated
    if c.policy == "none":
        return {"fast": rows * work.row_bytes, "host": 0, "file": 0}
    return {"fast": c.capacity * work.row_bytes,
            "host": rows * work.row_bytes if c.backing == "host" else 0,
            "file": rows * work.row_bytes if c.backing == "file" else 0}


def profiled_lookups(policy: str, lookups: np.ndarray) -> int:
    """Lookups of the leading steps ``policy`` profiles before planning (as the feed runs it)."""
    from hotpipe.plan.policies import make_policy

    # The tiered feed passes a generator, so the policy sees no trace length.
    return int(np.sum(lookups[: make_policy(policy).profile_steps(None)]))


def step_work(trace: StepTrace, c: Candidate, work: Workload,
              hw: Hardware) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solo seconds per step: (plan (S,), move (S,), compute (S,)) for one rank."""
    b = trace.batch_sizes.astype(np.float64)
    read = hw.batch_read_per_sample_s * b  # skipped samples are read too
    trained = b if work.skip is None else work.skip.kept(trace.batch_sizes)
    compute = hw.compute.per_step_s + hw.compute.per_sample_s * trained
    if c.policy == "none":
        zero = np.zeros(trace.steps)
        return zero, zero, compute
    fit = hw.planner_fit(c.policy)
    plan = np.asarray(fit.plan_s(trace.lookups, trace.misses), dtype=np.float64)
    if plan.shape[0]:  # a policy's up-front profiling delays the first plan
        plan[0] += fit.per_profiled_lookup_s * profiled_lookups(c.policy, trace.lookups)
    move = hw.tier(c.backing).apply_s(trace.fetched, trace.written_back) + read
    return plan, move, np.maximum(compute - read, 0.0)


def predict(c: Candidate, trace: StepTrace, work: Workload, hw: Hardware) -> Prediction:
    """Predict one single-rank configuration from its planned trace.

    Args:
        c: the configuration (``ranks == 1``; see :mod:`hotpipe.placement.ranks`).
        trace: :func:`~hotpipe.plan.movement.trace_movement` of ``c`` (for
            ``policy="none"``, any trace of the same steps: only batch sizes are used).
        work: what is trained.
        hw: the machine.
    """
    if c.ranks != 1:
        raise ConfigError("ranks", f"predict() models one rank; use ranks.predict_ranks for {c.ranks}")
    check_model(hw, work)
    plan, move, compute = step_work(trace, c, work, hw)
    t = replay_pipeline(plan, move, compute, depth=c.depth, overlap=hw.overlap)
    tiered = c.policy != "none"
    tot = trace.totals() if tiered else {"rows_fetched": 0, "rows_written_back": 0, "hit_rate": 1.0}
    fetched, written = int(tot["rows_fetched"]), int(tot["rows_written_back"])
    samples = int(trace.batch_sizes.sum())
    return Prediction(
        candidate=c,
        samples_per_s=samples / t.total_s if t.total_s > 0 else 0.0,
        step_s=t.total_s / max(trace.steps, 1),
        hit_rate=float(tot["hit_rate"]),
        rows_fetched=fetched,
        rows_written_back=written,
        bytes_moved=(fetched + written) * work.row_bytes,
        memory=memory_per_tier(c, work),
        compute_s=t.compute_s, mover_s=t.mover_s, stall_s=t.stall_s, total_s=t.total_s,
        steps=trace.steps,
    )


def run_trace(run: RunConfig, ds: ColumnarDataset, *, max_steps: int = 0) -> Any:
    """The steps ``run`` trains on ``ds`` in its order (``schedule.mode``): a
    :class:`~hotpipe.data.schedule.ScheduledTrace` whose default order is the one
    for the run's own fast tier (``cache.capacity``), other capacities on request."""
    from hotpipe.data.layout import TableLayout
    from hotpipe.data.schedule import ScheduledTrace
    from hotpipe.model.sparse_optim import make_row_optimizer
    from hotpipe.train.builders import capacity_rows

    dim = run.model.embedding_dim
    opt = make_row_optimizer(run.optim.embedding, lr=run.optim.embedding_lr, dim=dim)
    hot = capacity_rows(run.cache, TableLayout.of(ds), dim, opt)
    return ScheduledTrace(ds, batch_size=run.data.batch_size, val_fraction=run.data.val_fraction,
                          epochs=run.train.epochs, max_steps=max_steps, schedule=run.schedule,
                          hot_rows=hot, seed=run.train.seed)


def candidate_of(run: RunConfig, num_rows: int, bytes_per_row: int) -> Candidate:
    """The :class:`Candidate` a run's ``cache`` section configures."""
    c = run.cache
    if c.policy == "none":
        return Candidate("none", num_rows)
    return Candidate(c.policy, c.capacity_spec.rows(num_rows, bytes_per_row), c.window, c.depth,
                     c.backing)


def predict_run(run: RunConfig, ds: ColumnarDataset, hw: Hardware, *, max_steps: int = 0,
                skip_lag: int | None = None) -> Prediction:
    """Predict one run as configured, speed modes included (module docstring).

    Args:
        run: the run config (``cache``, ``schedule``, ``skip`` sections used).
        ds: its dataset.
        hw: the machine.
        max_steps: plan at most this many steps (0: the whole run).
        skip_lag: the skipper's lag (default: the run's ``skip.lag``).
    """
    from hotpipe.plan.movement import trace_movement

    work = workload_from_config(run, ds.cardinalities, ds.num_dense)
    if skip_lag is not None and work.skip is not None:
        work = Workload(work.batch_size, work.num_rows, work.state_width, work.model,
                        work.dense_params, skip_model(run, skip_lag))
    trace = run_trace(run, ds, max_steps=max_steps or run.train.max_steps or 0)
    cand = candidate_of(run, work.num_rows, work.row_bytes)
    if cand.policy == "none":
        st = StepTrace.untiered(trace.batch_sizes())
    else:
        st = trace_movement(trace, num_rows=work.num_rows, capacity=cand.capacity,
                            window=cand.window, depth=cand.depth, policy=cand.policy)
    pred = predict(cand, st, work, hw)
    if run.schedule.mode != "none":
        pred.notes.append(f"schedule.mode={run.schedule.mode}: rows moved planned in the scheduled order")
    if work.skip is not None:
        pred.notes.append(f"skip.mode={run.skip.mode}: {work.skip.share:.0%} of each step's samples "
                          f"assumed skipped from step {work.skip.first_step}; rows moved are the "
                          "whole trace's (an upper bound)")
    return pred
