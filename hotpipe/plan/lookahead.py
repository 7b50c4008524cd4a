"""Belady's MIN inside a lookahead window, in O(lookups) per step.

The policy evicts the resident, unpinned row whose next use is farthest
away. With a window covering the whole trace this fetches the fewest rows
possible (see ``hotpipe.plan.reference.belady_fetches``); with a window of
``W`` steps it sees uses in ``s+1 .. s+W-1`` only. Rows with no use in the
window go first, lowest access count first: counts are bucketed by
``floor(log2(count))`` and, inside a bucket, the row unpinned longest ago
leaves first (an LRU tie-break, like LFU's). Rows sharing a finite next use
leave lowest count first (exact counts).

How next uses are kept without a pass over the cache:

* Each distinct id of each step read is an *occurrence* with a global,
  increasing index. ``last_occ[id]`` is the id's latest occurrence and a ring
  buffer holds, for each live occurrence, the step of the id's next
  occurrence (``NEVER`` until one is read). Reading step ``j`` links the
  previous occurrences of its ids to ``j``; planning step ``s`` sets
  ``next_use[U_s]`` from the ring.
* Invariant: ``next_use[id]`` is the first step ``>= s`` in the window using
  ``id``, or ``NEVER``. So a resident row with finite next use ``j`` is one of
  step ``j``'s ids: the candidates at distance ``j`` are short per-step lists
  (``pool[j]``) holding the unpinned resident rows whose next use is ``j``,
  appended when a row is unpinned or when its next use enters the window.
  Entries go stale (evicted, or next use changed) and are filtered when a
  list is scanned, farthest step first.
* Unpinned rows with no use in the window sit in frequency-bucketed FIFOs
  with lazy deletion (:class:`~hotpipe.plan.queues.BucketedFifo`).

Every unpinned resident row has exactly one valid entry in these structures,
so the policy finds ``k`` victims whenever ``k`` evictable rows exist.
"""

from __future__ import annotations

import numpy as np

from hotpipe.plan.queues import BucketedFifo, log2_bucket
from hotpipe.plan.state import CacheState
from hotpipe.plan.types import NEVER, EvictionPolicy, StepRecord

_LOG2_BUCKETS = 32  # counts are int32


class LookaheadPolicy(EvictionPolicy):
    """Evict the row used farthest in the future within the window."""

    name = "lookahead"

    def start(self, state: CacheState, sample: list[np.ndarray]) -> None:
        super().start(state, sample)
        n = state.num_rows
        self._next_use = np.full(n, NEVER, dtype=np.int32)
        self._last_occ = np.full(n, -1, dtype=np.int64)
        self._ring = np.empty(1 << 12, dtype=np.int32)  # next-occurrence step per live occurrence
        self._base = 0  # global index of the first occurrence of state.step
        self._end = 0  # one past the last occurrence read
        self._pool: dict[int, list[np.ndarray]] = {}
        self._never = BucketedFifo(_LOG2_BUCKETS)

    def on_load(self, rec: StepRecord) -> None:
        u, j = rec.uniq, rec.step
        n = u.shape[0]
        self._reserve(n)
        size = self._ring.shape[0]
        occ = np.arange(self._end, self._end + n, dtype=np.int64)
        prev = self._last_occ[u]
        linked = prev >= self._base  # the id occurs in a step read but not yet planned
        self._ring[prev[linked] % size] = j
        self._ring[occ % size] = NEVER
        self._last_occ[u] = occ
        self._end += n
        first = u[~linked]  # next_use was NEVER: j is now its first use in the window
        self._next_use[first] = j
        idle = first[self.state.evictable(first)]
        if idle.shape[0]:
            self._pool.setdefault(j, []).append(idle)

    def on_release(self, ids: np.ndarray) -> np.ndarray:
        nu = self._next_use[ids]
        never = nu == NEVER
        gone = ids[never]
        st = self.state
        self._never.push(gone, st.last_use[gone], log2_bucket(st.freq[gone]))
        self._add_to_pool(ids[~never], nu[~never])
        return np.empty(0, dtype=np.int64)

    def victims(self, k: int) -> np.ndarray:
        st, nu = self.state, self._next_use

        def unused_in_window(ids: np.ndarray, stamps: np.ndarray) -> np.ndarray:
            return (st.slot_of[ids] >= 0) & (st.last_use[ids] == stamps) & (nu[ids] == NEVER)

        out = [self._never.pop(k, unused_in_window)]
        need = k - out[0].shape[0]
        for j in sorted(self._pool, reverse=True):
            if need == 0 or j <= st.step:
                break
            cand = np.concatenate(self._pool.pop(j))
            cand = cand[(st.slot_of[cand] >= 0) & (nu[cand] == j)]
            if cand.shape[0] > need:  # a tie at distance j: fewest lookups leave
                order = np.argpartition(st.freq[cand], need - 1)
                self._pool[j] = [cand[order[need:]]]
                cand = cand[order[:need]]
            out.append(cand)
            need -= cand.shape[0]
        return np.concatenate(out)

    def on_planned(self, rec: StepRecord) -> None:
        u = rec.uniq
        n = u.shape[0]
        at = np.arange(self._base, self._base + n, dtype=np.int64) % self._ring.shape[0]
        self._next_use[u] = self._ring[at]
        self._base += n
        self._pool.pop(rec.step, None)

    def _add_to_pool(self, ids: np.ndarray, next_use: np.ndarray) -> None:
        """Append unpinned rows (n,) to the pool lists of their next use (n,)."""
        if ids.shape[0] == 0:
            return
        key = next_use - self.state.step  # in [0, window)
        # A stable sort of a 16-bit key is a radix sort: O(n) grouping.
        small = key.astype(np.uint16) if self.state.window <= (1 << 16) else key
        order = np.argsort(small, kind="stable")
        ends = np.cumsum(np.bincount(small, minlength=int(key.max()) + 1))
        ids = ids[order]
        start = 0
        for d in np.flatnonzero(np.diff(ends, prepend=0)).tolist():
            end = int(ends[d])
            self._pool.setdefault(self.state.step + d, []).append(ids[start:end])
            start = end

    def _reserve(self, n: int) -> None:
        """Grow the ring so that live occurrences plus ``n`` more fit."""
        size = self._ring.shape[0]
        need = self._end + n - self._base
        if need <= size:
            return
        new_size = max(2 * size, 2 * need)
        ring = np.empty(new_size, dtype=np.int32)
        live = np.arange(self._base, self._end, dtype=np.int64)
        ring[live % new_size] = self._ring[live % size]
        self._ring = ring
