"""Types shared by the planner, its policies and the stages that apply plans.

The fast tier is ``capacity`` numbered *slots*; a slot holds one embedding row
(and, in storage/, its optimizer state). Rows are named by *global* ids in the
fused space of all tables: table ``t``'s local id ``i`` is ``offset[t] + i``.

A plan is a list of :class:`StepPlan`, one per training step, applied in
order. Applying the plan of step ``s`` means::

    1. for (id, slot) in evict:   write the row in `slot` back to backing
                                   (if dirty); the slot is now free
    2. for (id, slot) in fetch:   read row `id` from backing into `slot`
    3. run step s, looking rows up by `lookup_slots`

With prefetch depth ``d`` (see :class:`~hotpipe.plan.planner.Planner`), steps
``s-d .. s-1`` may still be computing while 1 and 2 run for step ``s``; the
planner never evicts a row those steps use, so the overlap is safe.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from hotpipe.plan.state import CacheState

#: ``next_use`` value of a row with no use in the lookahead window; also the
#: exclusive upper bound on step numbers (state arrays are int32).
NEVER = np.iinfo(np.int32).max


@dataclass(frozen=True)
class StepPlan:
    """What the fast tier must do before step ``step`` runs.

    Every fetch slot is free when the fetch runs: either never used yet, or
    freed by an eviction of this step or an earlier one. For the demand
    policies (``lookahead``, ``lru``, ``lfu``) the evictions of a step are
    exactly the slots its fetches reuse. The ``static`` policy (FAE) evicts
    its cold rows as soon as no in-flight step uses them, so its evicted slots
    return to a free pool and are reused by later fetches; the storage layer
    does not need to know which policy made the plan.

    Attributes:
        step: the step number, 0-based and consecutive.
        lookup_slots: same shape as the step's input ids, int64: the slot of
            each lookup.
        unique_ids: (U,) int64, the distinct ids of this step.
        unique_slots: (U,) int64, their slots.
        fetch_ids: (M,) int64, rows to read from backing. The first
            ``M - preloaded`` are this step's misses; the last ``preloaded``
            are rows loaded ahead of use (``static``'s hot set at step 0).
        fetch_slots: (M,) int64, the slot each fetch goes to.
        evict_ids: (E,) int64, rows leaving the fast tier before the fetches.
        evict_slots: (E,) int64, the slots they leave.
        preloaded: how many trailing fetches are not misses of this step.
    """

    step: int
    lookup_slots: np.ndarray
    unique_ids: np.ndarray
    unique_slots: np.ndarray
    fetch_ids: np.ndarray
    fetch_slots: np.ndarray
    evict_ids: np.ndarray
    evict_slots: np.ndarray
    preloaded: int = 0

    @property
    def num_misses(self) -> int:
        """Distinct ids of this step that were not resident when it was planned."""
        return int(self.fetch_ids.shape[0]) - self.preloaded


@dataclass
class StepRecord:
    """One step of the trace as the planner keeps it while it is in the window.

    The input ids themselves are not kept: ``uniq`` and ``inverse`` rebuild
    them, in half the memory (a window may hold hundreds of steps).

    Attributes:
        step: the step number.
        shape: the shape of the step's input ids.
        uniq: (U,) int64 distinct ids, in no particular order.
        inverse: (L,) int32 with ``uniq[inverse] == ids.ravel()``.
    """

    step: int
    shape: tuple[int, ...]
    uniq: np.ndarray
    inverse: np.ndarray


class EvictionPolicy(ABC):
    """Chooses which rows leave the fast tier; one instance per planning run.

    The :class:`~hotpipe.plan.planner.Planner` owns the mechanics (distinct
    ids, slots, pinning) and calls these hooks in this order for step ``s``
    (``state.step == s`` throughout)::

        on_release(rows of step s-d-1 not used since)   -> rows to evict now
        on_load(record of step s+window-1)               (once it is read)
        preload(record of s)                             -> extra rows to fetch
        victims(k)            only when the misses of s outnumber free slots
        on_planned(record of s)

    A row handed to ``on_release`` is resident and stays unpinned until it is
    used again; ``victims`` must return exactly ``k`` distinct such rows (the
    planner has already checked that enough exist, and has set ``last_use``
    of step ``s``'s rows to ``s``, so they count as pinned). Preloaded rows
    are not pinned and never pass through ``on_release``: a policy that
    preloads keeps track of them itself.
    """

    name: str = "custom"

    def profile_steps(self, total_steps: int | None) -> int:
        """How many steps :meth:`start` wants to see (0: none)."""
        return 0

    def start(self, state: CacheState, sample: list[np.ndarray]) -> None:
        """Bind to a fresh state; ``sample`` holds the profiled steps' ids
        (spread over the trace when it allows random access, else the first ones)."""
        self.state = state

    def on_load(self, rec: StepRecord) -> None:
        """Step ``rec.step`` entered the lookahead window."""
        return None  # most policies look only at the past

    def preload(self, rec: StepRecord) -> np.ndarray:
        """Non-resident rows outside ``rec.uniq`` to fetch now if slots are free."""
        return np.empty(0, dtype=np.int64)

    @abstractmethod
    def on_release(self, ids: np.ndarray) -> np.ndarray:
        """Rows (n,) int64 just unpinned; return those to evict right away.

        The planner keeps any of the returned rows that step ``s`` uses.
        """

    @abstractmethod
    def victims(self, k: int) -> np.ndarray:
        """Return (k,) int64 distinct resident, unpinned rows to evict."""

    def on_planned(self, rec: StepRecord) -> None:
        """Step ``rec.step`` has been planned (its rows are resident and pinned)."""
        return None
