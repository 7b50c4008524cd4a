"""Search tier configurations that fit a memory budget; rank them by predicted throughput.

TorchRec's planner stages in miniature: *enumerate* candidates (capacities
that fit the fast-tier budget, windows, depths, policies, backing tiers),
*estimate* each one's traffic with the real planner and its time with the
cost model, *rank*. Traffic does not depend on the backing tier, so each
(policy, capacity, window, depth) is planned once and priced per tier.

Several ranks (``ranks > 1``, :mod:`~hotpipe.placement.ranks`): each rank's
rows resident (the runtime's default, validated) with shares of all rows
replicated, plus tiered ranks (modelled, not validated) for the policies
asked for. The exchange is counted once per replicated set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from hotpipe.data.loader import TrainTrace
from hotpipe.errors import CapacityError, ConfigError
from hotpipe.placement.costmodel import Candidate, Prediction, Workload, predict
from hotpipe.placement.exchange_model import ExchangeCount, count_exchange, replicated_set
from hotpipe.placement.hardware import Hardware
from hotpipe.placement.ranks import RankPrediction, hottest_rows, predict_ranks
from hotpipe.plan.movement import StepTrace, trace_movement


@dataclass(frozen=True)
class SearchSpace:
    """The configurations to try.

    Attributes:
        memory: fast-tier bytes (per rank).
        host_memory: bytes of RAM a host backing may use (``None``: no limit).
        capacity_fractions: capacities tried, as fractions of what ``memory`` holds.
        windows: lookahead windows (only ``lookahead`` looks at the future;
            the other policies are planned with the first window).
        depths: prefetch depths.
        policies: planner policies.
        tiers: backing tiers.
        ranks: workers (> 1: see :mod:`~hotpipe.placement.ranks`).
        replicate_fractions: shares of the fast tier given to replicated hot
            rows by tiered ranks.
        replicate_shares: shares of all rows replicated on every rank when
            each rank's rows are resident (``dist.replicate``'s fraction).
        ranks_per_host: ranks sharing one machine like the hardware file's
            (1: a cluster of such machines; ``ranks``: all on this one).
        cardinalities: the tables' rows (small tables are replicated as the
            runtime does); None: that rule is not applied.
        fetch_ahead, staleness: the run's ``dist.fetch_ahead`` and
            ``dist.staleness`` (how the runtime exchanges; ranks > 1 only).
    """

    memory: int
    host_memory: int | None = None
    capacity_fractions: tuple[float, ...] = (1.0, 0.5)
    windows: tuple[int, ...] = (8, 64, 256)
    depths: tuple[int, ...] = (1, 2)
    policies: tuple[str, ...] = ("lookahead", "lru", "lfu", "static")
    tiers: tuple[str, ...] = ("host", "file")
    ranks: int = 1
    replicate_fractions: tuple[float, ...] = (0.0, 0.25, 0.5)
    replicate_shares: tuple[float, ...] = (0.0, 0.001, 0.01)
    ranks_per_host: int = 1
    cardinalities: tuple[int, ...] | None = None
    fetch_ahead: bool = True
    staleness: int = 0

    def __post_init__(self) -> None:
        if self.memory <= 0:
            raise ConfigError("memory", f"expected a positive byte size, found {self.memory}")
        if self.ranks < 1:
            raise ConfigError("ranks", f"expected >= 1, found {self.ranks}")
        if not self.capacity_fractions or any(not 0 < f <= 1 for f in self.capacity_fractions):
            raise ConfigError("capacity_fractions", f"expected fractions in (0, 1], found "
                                                    f"{list(self.capacity_fractions)}")


def enumerate_candidates(space: SearchSpace, work: Workload) -> list[Candidate]:
    """Every configuration of ``space`` that fits its memory budgets.

    With several ranks, the resident-rows candidates are listed even when a
    rank's rows exceed ``memory``: their prediction says ``limit="memory"``
    (what a cluster would run out of first), and the search ranks them last.
    """
    fits = space.memory // work.row_bytes
    shard_rows = -(-work.num_rows // space.ranks)
    out: list[Candidate] = []
    if space.ranks == 1 and fits >= work.num_rows:
        out.append(Candidate("none", work.num_rows))
    if space.ranks > 1:
        for share in sorted(set(space.replicate_shares)):
            out.append(Candidate("none", shard_rows, ranks=space.ranks,
                                 replicated=int(share * work.num_rows)))
    host_ok = space.host_memory is None or shard_rows * work.row_bytes <= space.host_memory
    tiers = [t for t in space.tiers if t != "host" or host_ok]
    caps = sorted({min(int(fits * f), shard_rows) for f in space.capacity_fractions}, reverse=True)
    for cap in (c for c in caps if c >= 1):
        for policy in (p for p in space.policies if p != "none"):
            for window in (space.windows if policy == "lookahead" else space.windows[:1]):
                for depth in space.depths:
                    reps = ([int(cap * f) for f in space.replicate_fractions] if space.ranks > 1 else [0])
                    for rep in sorted(set(reps)):
                        out.extend(Candidate(policy, cap, window, depth, tier, space.ranks, rep)
                                   for tier in tiers)
    return out


def search(trace: TrainTrace | Sequence[np.ndarray], space: SearchSpace, work: Workload, hw: Hardware, *,
           log: Callable[[str], None] = lambda s: None) -> tuple[list[Prediction], list[str]]:
    """Predict every candidate; return them best first, and the ones that cannot run.

    Args:
        trace: the steps training would run (a prefix of them, for speed).
        space: what to try.
        work: what is trained.
        hw: the machine.
        log: progress messages.

    Returns:
        (predictions sorted by samples/s descending, ties by higher hit rate,
        then fewer bytes moved, then less fast-tier memory; ``"label: reason"``
        for each candidate that cannot run).

    Raises:
        CapacityError: no candidate can run; ``needed`` is the smallest
            fast-tier capacity (rows) that would, and the message says the
            memory that holds it.
    """
    cands = enumerate_candidates(space, work)
    if not cands:
        raise ConfigError("memory", f"{space.memory} bytes hold no fast-tier row of {work.row_bytes} bytes")
    traces: dict[tuple[str, int, int, int], StepTrace | None] = {}
    hot: dict[int, np.ndarray] = {}
    counts: dict[int, ExchangeCount] = {}
    preds: list[Prediction] = []
    skipped: list[str] = []
    need = work.num_rows  # smallest capacity a skipped candidate would have needed
    for c in cands:
        if c.ranks > 1:
            if c.replicated not in hot:
                hot[c.replicated] = hottest_rows(_profile(trace), work.num_rows, c.replicated)
                log(f"counting the exchange of {c.ranks} ranks, {c.replicated:,} hot rows replicated")
                counts[c.replicated] = count_exchange(
                    trace, world_size=c.ranks, dim=work.dim, dense_params=work.dense_params,
                    replicated=replicated_set(hot[c.replicated], space.cardinalities, c.ranks),
                    staleness=space.staleness, fetch_ahead=space.fetch_ahead)
            try:
                preds.append(predict_ranks(c, trace, work, hw, hot[c.replicated],
                                           cardinalities=space.cardinalities,
                                           ranks_per_host=space.ranks_per_host,
                                           memory_budget=space.memory, count=counts[c.replicated],
                                           fetch_ahead=space.fetch_ahead, staleness=space.staleness))
            except CapacityError as e:
                skipped.append(f"{c.label()}: {e}")
                need = min(need, e.needed)
            continue
        key = (c.policy, c.capacity, c.window, c.depth)
        if key not in traces:
            try:
                traces[key] = _plan_trace(c, trace, work, log)
            except CapacityError as e:
                traces[key] = None
                skipped.append(f"{c.policy} cap={c.capacity:,} W={c.window} d={c.depth}: {e}")
                need = min(need, e.needed)
        st = traces[key]
        if st is not None:
            preds.append(predict(c, st, work, hw))
    if not preds:
        raise CapacityError(
            f"no configuration fits --memory {space.memory} bytes: the smallest fast tier that can "
            f"run holds {need:,} rows = {need * work.row_bytes:,} bytes (try --memory "
            f"{-(-need * work.row_bytes // 2**20)}MiB or more)", needed=need,
            capacity=space.memory // work.row_bytes)

    def over(p: Prediction) -> bool:
        return isinstance(p, RankPrediction) and p.limit == "memory"

    preds.sort(key=lambda p: (over(p), -p.samples_per_s, -p.hit_rate, p.bytes_moved, p.memory["fast"]))
    return preds, skipped


def _profile(trace: Iterable[np.ndarray]) -> list[np.ndarray]:
    """The steps the runtime counts to choose hot rows: the first 5% (at least one)."""
    steps = list(trace) if not isinstance(trace, Sequence) else trace
    return list(steps[: max(1, len(steps) // 20)])


def _plan_trace(c: Candidate, trace: TrainTrace | Sequence[np.ndarray], work: Workload,
                log: Callable[[str], None]) -> StepTrace:
    if c.policy == "none":
        sizes = (trace.batch_sizes() if isinstance(trace, TrainTrace)
                 else np.array([len(x) for x in trace], dtype=np.int64))
        return StepTrace.untiered(sizes)
    log(f"planning {c.policy} capacity={c.capacity:,} window={c.window} depth={c.depth}")
    return trace_movement(trace, num_rows=work.num_rows, capacity=c.capacity, window=c.window,
                          depth=c.depth, policy=c.policy)
