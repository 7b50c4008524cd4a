"""Several ranks: row-wise partitioned tables plus replicated hot rows (modelled only).

NOT VALIDATED: hotpipe has no distributed runtime yet, so nothing here has
been compared with a measurement; the link rate is an assumed default unless
the hardware file says otherwise. It is the shape of the estimate that is
meant to be useful (which term dominates, how replication trades memory for
traffic), not its absolute value.

The layout (BagPipe's logically replicated, physically partitioned cache;
DLRM's model-parallel tables with data-parallel MLPs)::

    row r (not replicated) lives on rank r % R; the R-way split is the
        global batch's B/R samples per rank for the MLPs
    the `replicated` hottest rows live on every rank, pinned in its fast tier

Per step and rank:

- movement: rank 0's own trace — its owned, non-replicated ids of the whole
  global batch — planned by the real planner in ``capacity - replicated`` slots;
- compute: ``compute(B / R)``;
- exchange (blocking, not overlapped): pooled embeddings of non-replicated
  lookups owned elsewhere out and their gradients back (all-to-all), the
  gradients of replicated rows touched in the step and the MLP gradients
  (ring all-reduce, ``2 (R-1)/R`` of the bytes each).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from hotpipe.errors import ConfigError
from hotpipe.placement.costmodel import (
    Candidate,
    Prediction,
    Workload,
    check_model,
    memory_per_tier,
    profiled_lookups,
)
from hotpipe.placement.hardware import Hardware
from hotpipe.placement.pipeline import replay_pipeline
from hotpipe.plan.movement import trace_movement
from hotpipe.storage.slots import FLOAT_BYTES


def hottest_rows(steps: Iterable[np.ndarray], num_rows: int, k: int) -> np.ndarray:
    """The ``k`` most looked-up rows of ``steps``: (k,) int64 ascending."""
    counts = np.zeros(num_rows, dtype=np.int64)
    for ids in steps:
        counts += np.bincount(np.asarray(ids).ravel(), minlength=num_rows)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    return np.sort(np.argsort(-counts, kind="stable")[:k]).astype(np.int64)


class _RankTrace:
    """Rank 0's share of each global step: its owned, non-replicated ids (1-D)."""

    def __init__(self, steps: Iterable[np.ndarray], ranks: int, hot: np.ndarray) -> None:
        self.steps, self.ranks, self.hot = steps, ranks, hot
        self.cold_share: list[float] = []  # per step: lookups of non-replicated rows / all
        self.hot_unique: list[int] = []  # per step: distinct replicated rows touched

    def __iter__(self) -> Iterator[np.ndarray]:
        for ids in self.steps:
            flat = np.asarray(ids, dtype=np.int64).ravel()
            is_hot = np.isin(flat, self.hot, assume_unique=False)
            self.cold_share.append(1.0 - float(is_hot.mean()) if flat.size else 0.0)
            self.hot_unique.append(int(np.unique(flat[is_hot]).shape[0]))
            cold = flat[~is_hot]
            yield cold[cold % self.ranks == 0]


def predict_ranks(c: Candidate, steps: Iterable[np.ndarray], work: Workload, hw: Hardware,
                  hot: np.ndarray) -> Prediction:
    """Predict a multi-rank configuration (unvalidated; see the module docstring).

    Args:
        c: the configuration; ``c.ranks > 1``, ``c.replicated == hot.shape[0]``.
        steps: the global steps' ids, (B, T) int64 each (re-iterable).
        work: what is trained (``batch_size`` is the global batch).
        hw: the machine (its link rates are used as given).
        hot: the replicated rows, from :func:`hottest_rows`.
    """
    if c.ranks < 2:
        raise ConfigError("ranks", f"expected >= 2 ranks, found {c.ranks}")
    if c.policy == "none":
        raise ConfigError("policy", "a multi-rank estimate needs a tiered policy")
    if c.replicated >= c.capacity:
        raise ConfigError("replicated", f"{c.replicated} replicated rows leave no slot of {c.capacity}")
    check_model(hw, work)
    r = c.ranks
    rank_trace = _RankTrace(steps, r, hot)
    tr = trace_movement(rank_trace, num_rows=work.num_rows, capacity=c.capacity - c.replicated,
                        window=c.window, depth=c.depth, policy=c.policy)
    b = tr.batch_sizes.astype(np.float64)  # rank 0's lookups per step (1-D trace: a count)
    local_batch = work.batch_size / r
    tables = int(work.model.get("tables", 1))
    cold = np.asarray(rank_trace.cold_share[: tr.steps])
    hot_u = np.asarray(rank_trace.hot_unique[: tr.steps], dtype=np.float64)
    ring = 2.0 * (r - 1) / r
    row = work.dim * FLOAT_BYTES
    a2a = 2.0 * local_batch * tables * cold * (r - 1) / r * row  # embeddings out + gradients back
    allreduce = ring * (hot_u * row + work.dense_params * FLOAT_BYTES)
    link = hw.link
    comm = (a2a + allreduce) / link.bytes_per_s + 3 * link.latency_s  # 1 all-to-all pair + 1 all-reduce
    compute = hw.compute.step_s(int(round(local_batch))) - hw.batch_read_per_sample_s * local_batch
    fit = hw.planner_fit(c.policy)
    plan = np.asarray(fit.plan_s(b, tr.misses), dtype=np.float64)
    if plan.shape[0]:
        plan[0] += fit.per_profiled_lookup_s * profiled_lookups(c.policy, b)
    move = hw.tier(c.backing).apply_s(tr.fetched, tr.written_back) + hw.batch_read_per_sample_s * local_batch
    t = replay_pipeline(plan, move, np.full(tr.steps, compute) + comm, depth=c.depth, overlap=hw.overlap)
    tot = tr.totals()
    samples = work.batch_size * tr.steps
    return Prediction(
        candidate=c,
        samples_per_s=samples / t.total_s if t.total_s > 0 else 0.0,
        step_s=t.total_s / max(tr.steps, 1),
        hit_rate=float(tot["hit_rate"]),
        rows_fetched=int(tot["rows_fetched"]),
        rows_written_back=int(tot["rows_written_back"]),
        bytes_moved=int(tot["rows_fetched"] + tot["rows_written_back"]) * work.row_bytes,
        memory=memory_per_tier(c, work),
        compute_s=t.compute_s, mover_s=t.mover_s, stall_s=t.stall_s, total_s=t.total_s,
        steps=tr.steps,
        validated=False,
        notes=[f"unvalidated multi-rank estimate; link {link.bytes_per_s / 1e9:.1f} GB/s "
               f"({'measured' if link.measured else 'assumed'}); rows moved are rank 0's; "
               f"exchange {float(np.mean(comm)) * 1e3:.2f} ms/step"],
    )
