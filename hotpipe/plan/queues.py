"""FIFO queues of row ids with lazy deletion, popped in vectorized chunks.

Eviction policies keep their candidates in these queues. Rather than finding
and deleting an entry when a row stops being a candidate (it was used again,
evicted, its next use moved into the window), every entry carries a *stamp*
(the row's ``last_use`` when it was pushed) and the policy decides at pop time
whether the entry is still valid. Stale entries are skipped and dropped, so
each entry costs O(1) amortized and no step touches more than it pushes plus
what it pops.

Entries of rows that are never popped (a big cache rarely evicts) would pile
up, so owners call :func:`compact_if_bloated` after pushing: when a queue
holds more than twice as many entries as there can be valid ones (at most
one per resident row), the stale ones are dropped in one O(len) pass, which
is O(1) amortized per push.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: ``is_valid(ids, stamps) -> (n,) bool``: whether each entry is still a
#: candidate. Called on a chunk of entries at a time.
Validator = Callable[[np.ndarray, np.ndarray], np.ndarray]

_MIN_CHUNK = 256  # below this, per-call overhead dominates the scan
_COMPACT_SLACK = 4096  # never compact tiny queues: the pass costs more than it saves


class RowFifo:
    """A growable FIFO of ``(id, stamp)`` entries with lazy deletion.

    Example:
        >>> q = RowFifo()
        >>> q.push(np.array([5, 6, 7]), np.array([0, 0, 1], dtype=np.int32))
        >>> q.pop(2, lambda ids, st: ids != 6).tolist()
        [5, 7]
    """

    def __init__(self, initial: int = 1024) -> None:
        self._ids = np.empty(initial, dtype=np.int64)
        self._stamps = np.empty(initial, dtype=np.int32)
        self._head = 0
        self._tail = 0

    def __len__(self) -> int:
        """Entries held, stale ones included."""
        return self._tail - self._head

    def push(self, ids: np.ndarray, stamps: np.ndarray | int) -> None:
        """Append entries at the tail.

        Args:
            ids: (n,) int64 row ids.
            stamps: (n,) int32, or one stamp for all.
        """
        n = ids.shape[0]
        if n == 0:
            return
        if self._tail + n > self._ids.shape[0]:
            self._make_room(n)
        self._ids[self._tail : self._tail + n] = ids
        self._stamps[self._tail : self._tail + n] = stamps
        self._tail += n

    def pop(self, k: int, is_valid: Validator) -> np.ndarray:
        """Remove and return up to ``k`` valid ids from the head, oldest first.

        Stale entries met on the way are dropped. Fewer than ``k`` come back
        only when the queue runs out of valid entries.

        Returns:
            (m,) int64, m <= k.
        """
        taken: list[np.ndarray] = []
        while k > 0 and self._head < self._tail:
            n = min(self._tail - self._head, max(2 * k, _MIN_CHUNK))
            ids = self._ids[self._head : self._head + n]
            ok = np.flatnonzero(is_valid(ids, self._stamps[self._head : self._head + n]))
            if ok.shape[0] >= k:
                ok = ok[:k]
                # Everything before the last taken entry is stale or taken.
                self._head += int(ok[-1]) + 1
            else:
                self._head += n
            taken.append(ids[ok].copy())
            k -= ok.shape[0]
        if self._head == self._tail:
            self._head = self._tail = 0
        return np.concatenate(taken) if taken else np.empty(0, dtype=np.int64)

    def compact(self, is_valid: Validator) -> None:
        """Drop every stale entry, keeping the order of the others. O(len)."""
        ids = self._ids[self._head : self._tail]
        stamps = self._stamps[self._head : self._tail]
        keep = is_valid(ids, stamps)
        n = int(np.count_nonzero(keep))
        self._ids[:n], self._stamps[:n] = ids[keep], stamps[keep]
        self._head, self._tail = 0, n

    def drain(self, is_valid: Validator) -> tuple[np.ndarray, np.ndarray]:
        """Remove everything; return the valid entries (ids, stamps), oldest first."""
        ids = self._ids[self._head : self._tail]
        stamps = self._stamps[self._head : self._tail]
        keep = is_valid(ids, stamps)
        out = ids[keep].copy(), stamps[keep].copy()
        self._head = self._tail = 0
        return out

    def _make_room(self, n: int) -> None:
        live = self._tail - self._head
        size = self._ids.shape[0]
        if live + n > size // 2:  # compacting alone would leave too little slack
            size = max(2 * size, 2 * (live + n))
        ids = np.empty(size, dtype=np.int64)
        stamps = np.empty(size, dtype=np.int32)
        ids[:live] = self._ids[self._head : self._tail]
        stamps[:live] = self._stamps[self._head : self._tail]
        self._ids, self._stamps = ids, stamps
        self._head, self._tail = 0, live


class BucketedFifo:
    """Priority buckets of FIFOs: pops drain bucket 0 first, then 1, ...

    Used for frequency-ordered eviction: the bucket is a (coarse) access
    count, and within a bucket the oldest entry leaves first.
    """

    def __init__(self, num_buckets: int) -> None:
        self._queues = [RowFifo(64) for _ in range(num_buckets)]

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues)

    def push(self, ids: np.ndarray, stamps: np.ndarray | int, buckets: np.ndarray) -> None:
        """Append ``ids`` (n,) to the FIFO of their ``buckets`` (n,) (ints < num_buckets)."""
        if ids.shape[0] == 0:
            return
        b = buckets.astype(np.uint8)
        # Stable radix sort on a small key keeps each bucket's entries in order.
        order = np.argsort(b, kind="stable")
        counts = np.bincount(b)
        ends = np.cumsum(counts)
        ids = ids[order]
        stamps = stamps[order] if isinstance(stamps, np.ndarray) else stamps
        for k in np.flatnonzero(counts).tolist():
            lo, hi = int(ends[k] - counts[k]), int(ends[k])
            st = stamps[lo:hi] if isinstance(stamps, np.ndarray) else stamps
            self._queues[k].push(ids[lo:hi], st)

    def compact(self, is_valid: Validator) -> None:
        """Drop every stale entry of every bucket."""
        for q in self._queues:
            if len(q):
                q.compact(is_valid)

    def drain(self, is_valid: Validator) -> tuple[np.ndarray, np.ndarray]:
        """Remove everything; return the valid entries (ids, stamps) of all buckets."""
        parts = [q.drain(is_valid) for q in self._queues if len(q)]
        if not parts:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def pop(self, k: int, is_valid: Validator) -> np.ndarray:
        """Remove and return up to ``k`` valid ids, lowest bucket first."""
        taken: list[np.ndarray] = []
        for q in self._queues:
            if k == 0:
                break
            if len(q):
                got = q.pop(k, is_valid)
                taken.append(got)
                k -= got.shape[0]
        return np.concatenate(taken) if taken else np.empty(0, dtype=np.int64)


def log2_bucket(counts: np.ndarray) -> np.ndarray:
    """floor(log2(count)) for counts >= 1, as int64 (0 for count 1)."""
    return np.frexp(counts.astype(np.float64))[1].astype(np.int64) - 1


def compact_if_bloated(queue: RowFifo | BucketedFifo, is_valid: Validator, max_valid: int) -> None:
    """Compact ``queue`` if it holds over ``2 * max_valid`` (+ slack) entries.

    Args:
        queue: the queue.
        is_valid: its validity test.
        max_valid: an upper bound on its valid entries (e.g. the capacity).
    """
    if len(queue) > 2 * max_valid + _COMPACT_SLACK:
        queue.compact(is_valid)
