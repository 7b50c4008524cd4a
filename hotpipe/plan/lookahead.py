"""Belady's MIN inside a lookahead window, in O(lookups) per step.

The policy evicts the resident, unpinned row whose next use is farthest
away. With a window covering the whole trace this fetches the fewest rows
possible (see ``hotpipe.plan.reference.belady_fetches``); with a window of
``W`` steps it sees uses in ``s+1 .. s+W-1`` only. Rows with no use in the
window go first, lowest *aged* access count first: counts are halved every
``age_every`` steps (default: the window) (so a row that was hot long ago and has gone cold stops
looking hot: under drift, plain counts made this tie-break behave like LFU,
the worst policy there; BENCHMARKS.md "Rows moved"), bucketed by
``floor(log2(count))`` and, inside a bucket, the row unpinned longest ago
leaves first (an LRU tie-break, like LFU's). When counts are halved the
no-use queues are rebuilt with the new buckets (O(capacity) every
``age_every`` steps). Rows sharing a finite next use leave lowest count
first (exact counts), then smaller id first: a total order, so that the
compiled kernel (:mod:`hotpipe.plan.kernel`) and this reference agree exactly.

How next uses are kept without a pass over the cache:

* Each distinct id of each step read is an *occurrence* with a global,
  increasing index. ``last_occ[id]`` is the id's latest occurrence and a ring
  buffer holds, for each live occurrence, the step of the id's next
  occurrence (``NEVER`` until one is read). Reading step ``j`` links the
  previous occurrences of its ids to ``j``; planning step ``s`` sets
  ``next_use[U_s]`` from the ring.
* Invariant: ``next_use[id]`` is the first step ``>= s`` in the window using
  ``id``, or ``NEVER``. A row's finite next use changes only when the row is
  used, so candidates with a use in the window can be kept in lists grouped
  by next use (:class:`_NextUsePool`), appended to when a row is unpinned or
  when its next use enters the window, and scanned farthest group first;
  entries that went stale (the row was evicted or used) are filtered then.
* Unpinned rows with no use in the window sit in frequency-bucketed FIFOs
  with lazy deletion (:class:`~hotpipe.plan.queues.BucketedFifo`).

Every unpinned resident row has exactly one valid entry in these structures,
so the policy finds ``k`` victims whenever ``k`` evictable rows exist.
"""

from __future__ import annotations

import numpy as np

from hotpipe.plan.queues import BucketedFifo, compact_if_bloated, log2_bucket
from hotpipe.plan.state import CacheState
from hotpipe.plan.types import NEVER, EvictionPolicy, StepRecord

_LOG2_BUCKETS = 32  # counts are int32


class LookaheadPolicy(EvictionPolicy):
    """Evict the row used farthest in the future within the window."""

    name = "lookahead"

    def __init__(self, age_every: int | None = None) -> None:
        # Default: the window length. Measured on Zipf 1.05/1.2 traces with and
        # without drift (BENCHMARKS.md): with counts that never age, lookahead
        # fetched 1.02-1.04x LRU under drift at 25% capacity; aging every
        # window brings that to 0.94-0.98x at a cost of 0.01-0.04 (x LRU)
        # on stationary traces; aging every 16 steps costs more.
        self.age_every = age_every

    def start(self, state: CacheState, sample: list[np.ndarray]) -> None:
        super().start(state, sample)
        n = state.num_rows
        self._heat = np.zeros(n, dtype=np.int32)  # aged lookup counts
        self._next_use = np.full(n, NEVER, dtype=np.int32)
        # Occurrences count from 1 so that 0 means none and the array can
        # start as lazily zeroed pages rather than an O(rows) fill.
        self._last_occ = np.zeros(n, dtype=np.int64)
        self._ring = np.empty(1 << 12, dtype=np.int32)  # next-occurrence step per live occurrence
        self._base = 1  # global index of the first occurrence of state.step
        self._end = 1  # one past the last occurrence read
        self._far = _NextUsePool(state, self._next_use)
        self._never = BucketedFifo(_LOG2_BUCKETS)

    def on_load(self, rec: StepRecord) -> None:
        u, j = rec.uniq, rec.step
        n = u.shape[0]
        self._reserve(n)
        mask = self._ring.shape[0] - 1  # the size is a power of two
        occ = np.arange(self._end, self._end + n, dtype=np.int64)
        prev = self._last_occ.take(u)
        linked = prev >= self._base  # the id occurs in a step read but not yet planned
        self._ring[prev[linked] & mask] = j
        self._ring[occ & mask] = NEVER
        self._last_occ[u] = occ
        self._end += n
        first = u[~linked]  # next_use was NEVER: j is now its first use in the window
        self._next_use[first] = j
        idle = first[self.state.evictable(first)]
        self._far.add(idle, np.full(idle.shape[0], j, dtype=np.int32))

    def on_release(self, ids: np.ndarray) -> np.ndarray:
        nu = self._next_use.take(ids)
        never = nu == NEVER
        gone = ids[never]
        st = self.state
        self._never.push(gone, st.last_use.take(gone), self._bucket(gone))
        compact_if_bloated(self._never, self._unused_in_window, st.capacity)
        self._far.add(ids[~never], nu[~never])
        return np.empty(0, dtype=np.int64)

    def victims(self, k: int) -> np.ndarray:
        out = self._never.pop(k, self._unused_in_window)
        if out.shape[0] == k:
            return out
        return np.concatenate([out, self._far.take(k - out.shape[0])])

    def _unused_in_window(self, ids: np.ndarray, stamps: np.ndarray) -> np.ndarray:
        """Validity of never-queue entries: resident, unused since, no use in the window."""
        st = self.state
        return (st.slot_of.take(ids) >= 0) & (st.last_use.take(ids) == stamps) & \
            (self._next_use.take(ids) == NEVER)

    def _bucket(self, ids: np.ndarray) -> np.ndarray:
        return log2_bucket(np.maximum(self._heat.take(ids), 1))

    def _age(self) -> None:
        """Halve every count, then re-bucket the queued rows (oldest first stays first)."""
        np.right_shift(self._heat, 1, out=self._heat)
        ids, stamps = self._never.drain(self._unused_in_window)
        order = np.argsort(stamps, kind="stable")
        self._never.push(ids[order], stamps[order], self._bucket(ids[order]))

    def on_planned(self, rec: StepRecord) -> None:
        u = rec.uniq
        heat = self._heat.take(u) + np.bincount(rec.inverse.reshape(-1), minlength=u.shape[0])
        self._heat[u] = np.minimum(heat, np.iinfo(np.int32).max >> 1)
        if (rec.step + 1) % (self.age_every or self.state.window) == 0:
            self._age()
        n = u.shape[0]
        at = np.arange(self._base, self._base + n, dtype=np.int64) & (self._ring.shape[0] - 1)
        self._next_use[u] = self._ring.take(at)
        self._base += n
        self._far.drop_until(rec.step)

    def _reserve(self, n: int) -> None:
        """Grow the ring so that live occurrences plus ``n`` more fit."""
        size = self._ring.shape[0]
        need = self._end + n - self._base
        if need <= size:
            return
        new_size = 1 << (2 * need - 1).bit_length()  # a power of two >= 2 * need
        ring = np.empty(new_size, dtype=np.int32)
        live = np.arange(self._base, self._end, dtype=np.int64)
        ring[live & (new_size - 1)] = self._ring[live & (size - 1)]
        self._ring = ring


class _NextUsePool:
    """Unpinned resident rows with a use in the window, grouped by next use.

    Group ``g`` holds the rows whose next use is in ``[g*width, (g+1)*width)``
    with ``width = window // 32`` (at least 1), so adding a step's released
    rows touches at most ~33 groups however long the window; inside a group
    the farthest next uses are found by a partition. Entries carry the row's
    ``last_use`` as a stamp: within one such epoch a finite next use never
    changes, so an entry is valid while the row is resident and unused since.
    """

    _GROUPS = 32

    def __init__(self, state: CacheState, next_use: np.ndarray) -> None:
        self.state, self.next_use = state, next_use
        self.width = max(1, state.window // self._GROUPS)
        self._groups: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}

    def add(self, ids: np.ndarray, next_use: np.ndarray) -> None:
        """Add rows (n,) whose finite next uses are (n,); all unpinned and resident."""
        if ids.shape[0] == 0:
            return
        stamps = self.state.last_use.take(ids)
        group = next_use // self.width
        low = self.state.step // self.width
        key = (group - low).astype(np.uint8)  # < 34: a radix sort groups in O(n)
        order = np.argsort(key, kind="stable")
        counts = np.bincount(key)
        ends = np.cumsum(counts)
        ids, stamps = ids[order], stamps[order]
        for g in np.flatnonzero(counts).tolist():
            lo, hi = int(ends[g] - counts[g]), int(ends[g])
            self._groups.setdefault(low + g, []).append((ids[lo:hi], stamps[lo:hi]))

    def take(self, k: int) -> np.ndarray:
        """Remove and return ``k`` valid rows, farthest next use first (ties: fewest lookups,
        then the smaller id), in that order."""
        st = self.state
        out: list[np.ndarray] = []
        for g in sorted(self._groups, reverse=True):
            if k == 0:
                break
            parts = self._groups.pop(g)
            ids = np.concatenate([p[0] for p in parts])
            stamps = np.concatenate([p[1] for p in parts])
            ok = (st.slot_of.take(ids) >= 0) & (st.last_use.take(ids) == stamps)
            ids, stamps = ids[ok], stamps[ok]
            # A total order (next use farthest, then fewest lookups, then the
            # smaller id) makes the victims and their order a function of the
            # state alone, so the compiled planner (plan/kernel.py) can be
            # tested to give the same plans exactly.
            order = np.lexsort((ids, st.freq.take(ids), -self.next_use.take(ids)))
            rest = order[k:]
            if rest.shape[0]:
                self._groups[g] = [(ids[rest], stamps[rest])]
            ids = ids[order[:k]]
            out.append(ids)
            k -= ids.shape[0]
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)

    def drop_until(self, step: int) -> None:
        """Forget groups whose next uses are all <= ``step`` (stale once it is planned)."""
        for g in [g for g in self._groups if (g + 1) * self.width <= step + 1]:
            del self._groups[g]
