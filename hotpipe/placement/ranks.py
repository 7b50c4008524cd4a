"""Several ranks: what ``hotpipe.distributed`` moves and how fast it trains, predicted.

The layout is the runtime's (``distributed/sharding.py``, ``replicas.py``):
row ``g`` lives on rank ``g % W``; the replicated rows (the hottest, plus
every row of a table with fewer rows than ranks) live on every rank; the
MLPs are data-parallel, each rank trains ``b = B / W`` samples of every
global batch.

**Rows and bytes** are counted, not estimated:
:func:`~hotpipe.placement.exchange_model.count_exchange` counts exactly the
rows the runtime's exchange sends (each rank's distinct remote rows forward,
their coalesced gradients back), the replica all-reduce and the dense
all-reduce, rank by rank; a test runs the runtime and compares with its
``metrics.json`` number for number.

**Time** per global step (every rank does the same work, the slowest sets
the pace; the next step's rows the current step leaves unchanged travel
while it computes, ``distributed/loop.py``)::

    cpu      = compute(b)                       one rank's step at b: the runtime at W = 1
                                                (``rank_compute``) when calibrated, else one
                                                process's untiered step (``compute``)
             + batch_read * (B - b)             every rank reads the whole batch
             + route(W, B * T)                  every rank works out every peer's routes
    ahead    = all_to_all(W, max_r ahead_r * D * 4)        rows sent during the previous
                                                           step's compute (hidden up to it)
    link     = max(0, ahead - compute_prev * share)        what compute did not hide
             + all_to_all(W, max_r after_r * D * 4)        rows the previous step changed
             + all_to_all(W, max_r rows_r * D * 4)         gradients back
             + all_reduce(W, touched * D * 4)              replicas (when touched)
             + all_reduce(W, (P + 1) * 4)                  MLP gradients and the loss
    step     = cpu * share + link
    share    = max(1, ranks_per_host * threads / cpus)     ranks sharing one machine's cores;
               when ranks_per_host > 1, relative to the link calibration's ranks and times
               their measured concurrency_slowdown * (1 + sync_penalty)

(``fetch_ahead=False``, the runtime's ``dist.fetch_ahead=false``: one
all-to-all of every row after the update, nothing hidden; ``staleness=1``:
every row ahead, no exchange after the update.) The first step has nothing
to hide its rows behind and no second exchange.

``compute``, ``batch_read``, ``route`` and the link come from ``hotpipe
calibrate`` (:mod:`~hotpipe.placement.calibrate`); the link is gloo over
this machine's loopback unless the hardware file says otherwise.
``benchmarks/validate_ranks.py`` compares predicted with measured samples/s
for 2 and 4 ranks on this machine (errors, and the load they were measured
under, in BENCHMARKS.md); rows and bytes are equal by construction and tested.

Tiered ranks (``cache.policy`` other than ``none``, each rank's owned rows
behind a planned cache) add the planner's movement for rank 0's served rows,
replayed through the tiered pipeline. The rows it fetches equal the
runtime's (``validate_ranks.py --tiered`` checks them); its time came
within 6% at the median of 6 points on a quiet machine but 51% off at the
worst (BENCHMARKS.md), so the prediction still says ``validated=False``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

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
from hotpipe.placement.exchange_model import (
    ExchangeCount,
    count_exchange,
    hottest_rows,
    replicated_set,
)
from hotpipe.placement.hardware import Hardware
from hotpipe.placement.pipeline import replay_pipeline
from hotpipe.plan.movement import trace_movement

__all__ = ["RankPrediction", "RankTimes", "hottest_rows", "predict_ranks", "rank_times"]


@dataclass
class RankTimes:
    """Seconds per global step of each term (S,) and what bounds the step.

    Attributes:
        compute: one rank's model step at b (MLPs, lookups, row updates).
        read: reading the rest of the global batch.
        route: working out every peer's routes.
        link: all collectives (row and gradient all-to-alls, all-reduces).
        share: CPU slowdown from ranks sharing cores (1: none).
        step: the whole step.
    """

    compute: np.ndarray
    read: np.ndarray
    route: np.ndarray
    link: np.ndarray
    share: float
    step: np.ndarray

    def limit(self) -> str:
        """The term that takes most of the step: ``compute``, ``route`` (CPU) or ``link``."""
        parts = {"compute": float(np.sum(self.compute + self.read)) * self.share,
                 "route": float(np.sum(self.route)) * self.share, "link": float(np.sum(self.link))}
        return max(parts, key=lambda k: parts[k])

    def means_ms(self) -> dict[str, float]:
        return {k: float(np.mean(getattr(self, k))) * 1e3 if self.step.size else 0.0
                for k in ("compute", "read", "route", "link", "step")}


@dataclass
class RankPrediction(Prediction):
    """A multi-rank prediction: :class:`Prediction` plus what crosses the link.

    Attributes:
        exchange: totals under ``metrics.json``'s ``dist`` names (rows_sent,
            bytes_sent, ...) and ``per_rank`` (the runtime's ExchangeStats names).
        bytes_per_sample: bytes sent over all ranks per trained sample (rows
            and gradients; the all-reduces apart, in ``allreduce_bytes_per_step``).
        allreduce_bytes_per_step: payload each rank hands to all-reduces per step.
        times_ms: mean milliseconds per step of each term (:class:`RankTimes`).
        limit: what bounds the step (``compute``, ``route``, ``link``), or
            ``memory`` when a rank's rows do not fit ``memory_budget``.
        memory_per_rank: bytes of rows (and optimizer state) a rank holds.
        replicated_rows: rows on every rank (hot rows and small tables).
    """

    exchange: dict[str, Any] = field(default_factory=dict)
    bytes_per_sample: float = 0.0
    allreduce_bytes_per_step: float = 0.0
    times_ms: dict[str, float] = field(default_factory=dict)
    limit: str = ""
    memory_per_rank: int = 0
    replicated_rows: int = 0


def rank_times(count: ExchangeCount, work: Workload, hw: Hardware, *,
               ranks_per_host: int | None = None, fetch_ahead: bool = True,
               staleness: int = 0) -> RankTimes:
    """Per-step seconds of each term of the module docstring's model.

    Args:
        count: the exchange of the steps (:func:`count_exchange`).
        work: what is trained (``model.tables``: T; ``model.threads``: threads a rank).
        hw: the machine.
        ranks_per_host: ranks sharing one machine like ``hw``'s (default: all
            W, as on one machine; 1 models a cluster of such machines).
        fetch_ahead: the runtime's ``dist.fetch_ahead``.
        staleness: the runtime's ``dist.staleness`` (1: no exchange after the update).
    """
    w = count.world_size
    big_b = count.samples.astype(np.float64)  # (S,)
    b = big_b / w
    # Lookups of the whole global batch: every rank routes all of them (count.lookups is per rank).
    lookups = count.lookups.sum(axis=1).astype(np.float64)  # (S,) = B * T
    read = hw.batch_read_per_sample_s * (big_b - b)
    route = np.asarray(hw.route.route_s(w, lookups), dtype=np.float64) * np.ones_like(big_b)
    if hw.rank_compute is not None:
        # Measured on the runtime at W = 1: it already routed its own b samples.
        compute = hw.rank_compute.per_step_s + hw.rank_compute.per_sample_s * b
        route = np.maximum(route - hw.route.route_s(1, lookups / w), 0.0)
    else:
        compute = hw.compute.per_step_s + hw.compute.per_sample_s * b
    threads = int(work.model.get("threads") or hw.machine.get("torch_threads") or 1)
    cpus = int(hw.machine.get("cpus") or 1)
    per_host = w if ranks_per_host is None else ranks_per_host
    share = max(1.0, per_host * threads / cpus)
    if per_host > 1:
        # Measured with the link's ranks sharing this machine: their slowdown
        # running together, scaled by core oversubscription beyond theirs, and
        # the wait for each other's time slices.
        lk = hw.link
        share = (lk.concurrency_slowdown * share / max(1.0, lk.world_size * threads / cpus)
                 * (1.0 + lk.sync_penalty))
    link = np.zeros_like(big_b)
    if w > 1:
        link = _link_s(count, hw, w, hidden=compute * share if fetch_ahead else None,
                       second=not staleness)
    step = (compute + read + route) * share + link
    return RankTimes(compute, read, route, link, share, step)


def _link_s(count: ExchangeCount, hw: Hardware, w: int, hidden: np.ndarray | None,
            second: bool = True) -> np.ndarray:
    """(S,) seconds each step waits on collectives; ``hidden`` (S,): seconds of compute
    the next step's ahead exchange runs under (None: one exchange after the update);
    ``second``: whether an exchange follows the update (not when stale)."""
    row = count.row_bytes

    def busiest(sent: np.ndarray, recv: np.ndarray) -> np.ndarray:
        # The slowest rank of an all-to-all: the most rows one rank sends or receives.
        return np.maximum(sent, recv).max(axis=1) * row  # (S,)

    everything = hw.link.all_to_all_s(w, busiest(count.forward_sent, count.forward_recv))
    if hidden is None:
        forward = everything
    else:
        ahead = hw.link.all_to_all_s(w, busiest(count.forward_sent - count.forward_sent_after,
                                                count.forward_recv - count.forward_after))
        after = hw.link.all_to_all_s(w, busiest(count.forward_sent_after, count.forward_after))
        # Step s's ahead exchange runs under step s-1's compute; the first step's under nothing.
        under = np.concatenate([[0.0], hidden[:-1]]) if len(hidden) else hidden
        forward = np.maximum(ahead - under, 0.0) + np.where(
            (np.arange(len(under)) > 0) & second, after, 0.0)
    link = forward + everything  # gradients go back in one all-to-all
    link = link + np.where(count.touched > 0, hw.link.all_reduce_s(w, count.replica_allreduce_bytes()), 0.0)
    return np.asarray(link + hw.link.all_reduce_s(w, count.dense_allreduce_bytes()), dtype=np.float64)


class _ServedTrace:
    """Rank 0's served rows of each global step (its owned, non-replicated ids), 1-D."""

    def __init__(self, steps: Iterable[np.ndarray], ranks: int, replicated: np.ndarray) -> None:
        self.steps, self.ranks, self.replicated = steps, ranks, replicated

    def __iter__(self) -> Iterator[np.ndarray]:
        for ids in self.steps:
            flat = np.asarray(ids, dtype=np.int64).ravel()
            cold = flat[~np.isin(flat, self.replicated)]
            yield cold[cold % self.ranks == 0]


def predict_ranks(c: Candidate, steps: Iterable[np.ndarray], work: Workload, hw: Hardware,
                  hot: np.ndarray, *, cardinalities: Sequence[int] | None = None,
                  ranks_per_host: int | None = None, memory_budget: int | None = None,
                  count: ExchangeCount | None = None, fetch_ahead: bool = True,
                  staleness: int = 0) -> RankPrediction:
    """Predict a multi-rank configuration (see the module docstring).

    Args:
        c: the configuration; ``c.ranks > 1``; ``policy="none"``: each rank's
            rows resident (validated), otherwise tiered (movement unvalidated).
        steps: the global steps' ids, (B, T) int64 each (re-iterable).
        work: what is trained (``batch_size`` is the global batch).
        hw: the machine.
        hot: the hottest rows replicated on every rank (:func:`hottest_rows`).
        cardinalities: the tables' rows; tables with fewer rows than ranks are
            replicated too, as the runtime does (None: no such rule applied).
        ranks_per_host: ranks sharing one machine's cores (see :func:`rank_times`).
        memory_budget: bytes a rank may hold; more makes ``limit="memory"``.
        count: the exchange, when already counted for these steps and ranks.
        fetch_ahead, staleness: the runtime's ``dist.fetch_ahead`` and
            ``dist.staleness`` (see :func:`rank_times`).

    Raises:
        ConfigError: fewer than 2 ranks; a compute measurement of another model;
            a tiered candidate with no slot left beside its replicas.
    """
    if c.ranks < 2:
        raise ConfigError("ranks", f"expected >= 2 ranks, found {c.ranks}")
    if c.policy != "none" and c.replicated >= c.capacity:
        raise ConfigError("replicated", f"{c.replicated} replicated rows leave no slot of {c.capacity}")
    check_model(hw, work)
    w = c.ranks
    rep = replicated_set(hot, cardinalities, w)
    if count is None:
        count = count_exchange(steps, world_size=w, dim=work.dim, replicated=rep,
                               dense_params=work.dense_params, staleness=staleness,
                               fetch_ahead=fetch_ahead)
    t = rank_times(count, work, hw, ranks_per_host=ranks_per_host, fetch_ahead=fetch_ahead,
                   staleness=staleness)
    n_steps = count.steps
    samples = int(count.samples.sum())
    notes: list[str] = []
    hit_rate, fetched, written = 1.0, 0, 0
    total_s, stall_s, mover_s = float(np.sum(t.step)), 0.0, 0.0
    validated = c.policy == "none"
    if not validated:
        served = _ServedTrace(steps, w, rep)
        tr = trace_movement(served, num_rows=work.num_rows, capacity=c.capacity - len(rep),
                            window=c.window, depth=c.depth, policy=c.policy)
        fit = hw.planner_fit(c.policy)
        plan = np.asarray(fit.plan_s(tr.batch_sizes.astype(np.float64), tr.misses), dtype=np.float64)
        if plan.shape[0]:
            plan[0] += fit.per_profiled_lookup_s * profiled_lookups(c.policy, tr.batch_sizes)
        move = hw.tier(c.backing).apply_s(tr.fetched, tr.written_back)
        pt = replay_pipeline(plan, move, t.step[: tr.steps], depth=c.depth, overlap=hw.overlap)
        tot = tr.totals()
        hit_rate, fetched, written = (float(tot["hit_rate"]), int(tot["rows_fetched"]),
                                      int(tot["rows_written_back"]))
        total_s, stall_s, mover_s = pt.total_s, pt.stall_s, pt.mover_s
        notes.append("tiered ranks: rank 0's rows fetched match the runtime's; their time "
                     "came within 6% at the median in validation, 51% at the worst "
                     "(unvalidated part)")
    mem = memory_per_tier(Candidate(c.policy, c.capacity, c.window, c.depth, c.backing, w, len(rep)),
                          work)
    per_rank = (-(-work.num_rows // w) + len(rep)) * work.row_bytes
    limit = t.limit()
    if memory_budget is not None and (mem["fast"] > memory_budget):
        limit = "memory"
        notes.append(f"a rank holds {mem['fast'] / 2**30:.2f} GiB of rows, over the "
                     f"{memory_budget / 2**30:.2f} GiB budget")
    tot_x = count.totals()
    link = hw.link
    notes.append(f"link {link.bytes_per_s / 1e9:.2f} GB/s, {link.latency_s * 1e6:.0f} us "
                 f"({link.how if link.measured else 'assumed, not measured'}); "
                 f"{' + '.join(f'{k} {v:.1f}' for k, v in t.means_ms().items() if k != 'step')} "
                 f"ms/step; {w if ranks_per_host is None else ranks_per_host} rank(s) per host")
    return RankPrediction(
        candidate=c,
        samples_per_s=samples / total_s if total_s > 0 else 0.0,
        step_s=total_s / max(n_steps, 1),
        hit_rate=hit_rate, rows_fetched=fetched, rows_written_back=written,
        bytes_moved=(fetched + written) * work.row_bytes,
        memory=mem,
        compute_s=float(np.sum(t.compute + t.read + t.route)) * t.share, mover_s=mover_s,
        stall_s=stall_s, total_s=total_s, steps=n_steps,
        validated=validated, notes=notes,
        exchange={**tot_x, "per_rank": count.per_rank()},
        bytes_per_sample=float(tot_x["bytes_per_sample"]),
        allreduce_bytes_per_step=float(count.dense_allreduce_bytes()
                                       + np.mean(count.replica_allreduce_bytes()) if n_steps else 0.0),
        times_ms=t.means_ms(), limit=limit, memory_per_rank=per_rank, replicated_rows=len(rep),
    )
