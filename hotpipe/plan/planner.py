"""The planner: reads the trace ahead and emits one StepPlan per step.

Pipeline model. While step ``s`` computes, the rows of steps ``s+1 .. s+d``
are being fetched (``d = depth``). So when step ``s`` is planned, steps
``s-d .. s-1`` are still in flight and every row they or step ``s`` use is
*pinned*: it must stay in its slot. ``depth=0`` means no overlap (only the
current step pins rows). A step's misses take free slots first; only when
there are none left does the policy pick victims, so the cache fills before
anything is evicted (demand paging).

Per step the planner does O(lookups of the step) work: distinct ids by a
scatter into a per-row scratch array, gathers and scatters into per-row state
(:class:`~hotpipe.plan.state.CacheState`), and a policy whose queues are
amortized O(1) per entry.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sized
from itertools import chain, islice

import numpy as np

from hotpipe.errors import CapacityError, ConfigError
from hotpipe.plan import kernel as _kernel
from hotpipe.plan.policies import make_policy
from hotpipe.plan.state import FREQ_CAP, CacheState
from hotpipe.plan.types import EvictionPolicy, StepPlan, StepRecord

_EMPTY = np.empty(0, dtype=np.int64)


class Planner:
    """Plans slot assignments, fetches and evictions for a trace of steps.

    Args:
        num_rows: rows in the fused id space (sum of table cardinalities).
        capacity: slots in the fast tier.
        window: steps read ahead, the current one included: planning step
            ``s`` sees steps ``s .. s + window - 1``.
        depth: prefetch depth ``d >= 0``; steps ``s-d .. s`` pin their rows.
        policy: ``"lookahead"`` (Belady within the window), ``"lru"``,
            ``"lfu"``, ``"static"`` (FAE), or an :class:`EvictionPolicy`
            instance. A name gives a fresh policy for each :meth:`plan` call.
        kernel: ``"auto"`` plans ``policy="lookahead"`` with the compiled
            kernel (:mod:`hotpipe.plan.kernel`, identical plans, several times
            faster) when numba is installed, else with the numpy reference
            (noted once on stderr); ``"reference"`` always uses the numpy
            code; ``"compiled"`` requires the kernel. Policies other than the
            ``"lookahead"`` name (instances included) always run the numpy code.

    Attributes:
        pinned_peak: after (part of) a run, the most rows pinned at once so
            far: the smallest capacity that would have planned those steps.

    Example:
        >>> planner = Planner(num_rows=10, capacity=3, window=4, depth=0)
        >>> trace = [np.array([1, 2]), np.array([3, 1]), np.array([2, 4])]
        >>> [p.fetch_ids.tolist() for p in planner.plan(trace)]
        [[1, 2], [3], [4]]
    """

    def __init__(self, *, num_rows: int, capacity: int, window: int, depth: int = 1,
                 policy: str | EvictionPolicy = "lookahead", kernel: str = "auto") -> None:
        for key, value, low in (("num_rows", num_rows, 1), ("capacity", capacity, 1),
                                ("window", window, 1), ("depth", depth, 0)):
            if not isinstance(value, int | np.integer) or value < low:
                raise ConfigError(key, f"expected an integer >= {low}, found {value!r}")
        for key, value in (("num_rows", num_rows), ("capacity", capacity)):
            if value >= 1 << 31:
                raise ConfigError(key, f"at most 2**31 - 1 (int32 slots), found {value}")
        make_policy(policy)  # reject an unknown name now, not at the first step
        if kernel not in ("auto", "reference", "compiled"):
            raise ConfigError("kernel", f"expected auto, reference or compiled, found {kernel!r}")
        if kernel == "compiled" and not _kernel.AVAILABLE:
            raise ConfigError("kernel", "compiled needs numba, which is not installed")
        self.kernel = kernel
        self.num_rows, self.capacity = int(num_rows), int(capacity)
        self.window, self.depth = int(window), int(depth)
        self.policy = policy
        self.pinned_peak = 0

    def plan(self, steps: Iterable[np.ndarray]) -> Iterator[StepPlan]:
        """Yield the plan of each step, reading up to ``window`` steps ahead.

        Args:
            steps: each step's global ids (any shape, any integer dtype).

        Raises:
            CapacityError: (while iterating) a step's pinned rows outnumber
                the slots; ``needed`` is the most rows pinned so far.
            DataFormatError: an id is out of range.
        """
        total = len(steps) if isinstance(steps, Sized) else None
        return self._run(steps, total)

    @property
    def compiled(self) -> bool:
        """Whether :meth:`plan` runs the compiled kernel."""
        return (self.policy == "lookahead" and self.kernel != "reference"
                and _kernel.AVAILABLE)

    def warm(self) -> None:
        """Load the compiled kernel now, planning two steps of a scratch 8-row cache:
        its first call in a process reads numba's cache (or compiles), which would
        otherwise stall the first training step."""
        if self.compiled:
            list(Planner(num_rows=8, capacity=4, window=2, depth=1, policy="lookahead",
                         kernel="compiled").plan([np.array([1, 2]), np.array([3])]))

    def _run(self, steps: Iterable[np.ndarray], total: int | None) -> Iterator[StepPlan]:
        if self.compiled:
            self.pinned_peak = 0
            yield from _kernel.CompiledLookahead(self).run(iter(steps))
            return
        if self.policy == "lookahead" and self.kernel == "auto":
            _kernel.note_fallback()
        policy = make_policy(self.policy)
        state = CacheState(self.num_rows, self.capacity, self.depth, self.window)
        k = policy.profile_steps(total)
        spread = getattr(steps, "spread", None)
        it: Iterator[np.ndarray]
        if k and callable(spread):
            # FAE profiles a sample of the whole training data, not its first
            # steps: runs of depth+1 consecutive steps (what is pinned together)
            # spread evenly over the trace, read by random access.
            sample = spread(k, run=self.depth + 1)
            it = iter(steps)
        else:
            it = iter(steps)
            sample = list(islice(it, k))
            it = chain(sample, it)
        policy.start(state, sample)
        run = _Run(self, state, policy, it)
        del sample  # let the profiled steps go once they are planned
        yield from run.steps()


class _Run:
    """One pass of the planner over a trace (the mutable part)."""

    def __init__(self, planner: Planner, state: CacheState, policy: EvictionPolicy,
                 it: Iterator[np.ndarray]) -> None:
        self.planner, self.state, self.policy, self.it = planner, state, policy, it
        self.records: deque[StepRecord] = deque()  # steps s-d-1 .. s+window-1
        self.loaded = 0
        self.pinned = 0  # distinct rows used by steps s-d .. s-1 (then .. s)
        planner.pinned_peak = 0

    def steps(self) -> Iterator[StepPlan]:
        st = self.state
        s = 0
        while True:
            st.step = s
            gone = self._release(s - st.depth - 1)
            self._load(s + st.window)
            if not self.records or self.records[-1].step < s:
                return
            yield self._plan(self.records[s - self.records[0].step], gone)
            s += 1

    def _release(self, r: int) -> np.ndarray:
        """Unpin the rows step ``r`` was the last to use; return rows to evict now."""
        if not self.records or self.records[0].step != r:
            return _EMPTY
        rec = self.records.popleft()
        rows = rec.uniq[self.state.last_use.take(rec.uniq) == r]
        self.pinned -= rows.shape[0]
        return self.policy.on_release(rows)

    def _load(self, until: int) -> None:
        while self.loaded < until:
            ids = next(self.it, None)
            if ids is None:
                return
            rec = self.state.record(self.loaded, ids)
            self.records.append(rec)
            self.policy.on_load(rec)
            self.loaded += 1

    def _plan(self, rec: StepRecord, gone: np.ndarray) -> StepPlan:
        st, s, u = self.state, rec.step, rec.uniq
        self._pin(rec)
        slots = st.slot_of.take(u)  # (U,) int32
        miss = slots < 0
        fetch = u[miss]
        st.last_use[u] = s  # pinned before any victim is chosen
        gone = gone[st.last_use[gone] != s]  # a row this step uses stays
        gone_slots = st.evict(gone)
        short = fetch.shape[0] - st.num_free
        victims = self.policy.victims(short) if short > 0 else _EMPTY
        if victims.shape[0] != max(short, 0):
            raise RuntimeError(f"planner bug: policy {self.policy.name!r} gave "
                               f"{victims.shape[0]} victims at step {s}, {short} needed")
        victim_slots = st.evict(victims)
        extra = self.policy.preload(rec)[: max(0, st.num_free - fetch.shape[0])]
        fetch_ids = np.concatenate([fetch, extra]) if extra.shape[0] else fetch
        fetch_slots = st.place(fetch_ids)
        slots[miss] = fetch_slots[: fetch.shape[0]]
        counts = np.bincount(rec.inverse, minlength=u.shape[0])  # (U,) lookups per row
        st.freq[u] = np.minimum(st.freq.take(u) + counts, FREQ_CAP)
        self.policy.on_planned(rec)
        unique_slots = slots.astype(np.int64)
        return StepPlan(
            step=s,
            lookup_slots=unique_slots.take(rec.inverse).reshape(rec.shape),
            unique_ids=u,
            unique_slots=unique_slots,
            fetch_ids=fetch_ids,
            fetch_slots=fetch_slots,
            evict_ids=np.concatenate([gone, victims]),
            evict_slots=np.concatenate([gone_slots, victim_slots]),
            preloaded=extra.shape[0],
        )

    def _pin(self, rec: StepRecord) -> None:
        """Count the rows pinned at ``rec.step``; raise if they cannot all fit."""
        st = self.state
        self.pinned += int(np.count_nonzero(st.last_use.take(rec.uniq) < st.unpinned_below))
        self.planner.pinned_peak = max(self.planner.pinned_peak, self.pinned)
        if self.pinned > st.capacity:
            first = max(0, rec.step - st.depth)
            raise CapacityError(
                f"step {rec.step}: steps {first}..{rec.step} are in flight together "
                f"(prefetch depth {st.depth}) and use {self.pinned} distinct rows",
                needed=self.planner.pinned_peak, capacity=st.capacity)


def min_capacity(steps: Iterable[np.ndarray], depth: int) -> int:
    """The fewest slots any policy can plan ``steps`` with at prefetch ``depth``.

    That is the largest number of distinct ids used by ``depth + 1``
    consecutive steps (all pinned at once). A plain reference: sorts each
    window of steps.

    Args:
        steps: each step's global ids (any shape).
        depth: prefetch depth ``d >= 0``.
    """
    recent: deque[np.ndarray] = deque(maxlen=depth + 1)
    best = 0
    for ids in steps:
        recent.append(np.unique(np.asarray(ids, dtype=np.int64)))
        best = max(best, np.unique(np.concatenate(list(recent))).shape[0])
    return best
