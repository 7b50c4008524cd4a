"""Bounded-memory frequency counting: count-min sketch + Misra-Gries heavy hitters.

Why two structures: a count-min sketch answers "how often was id x seen?"
for any x in fixed memory, but cannot list *which* ids are frequent; a
Misra-Gries summary lists every id whose count exceeds its error bound, but
its counts are lower bounds. Together they name the hot rows (Misra-Gries
candidates) and rank them by a tight upper-bound count (the sketch).

Both take whole chunks of ids and update with a few numpy calls (``np.unique``,
a gather, ``np.maximum.at``): no Python code runs per id.

Guarantees (``N`` = ids counted so far):

- :class:`CountMinSketch` never underestimates, and with probability at
  least ``1 - delta`` overestimates a given id by at most ``epsilon * N``,
  where ``epsilon = 2e / width`` and ``delta = exp(-depth)``. The factor 2 is
  the collision bound ``2 / width`` of the multiply-shift hash family
  (Dietzfelbinger et al. 1997) that the rows use.
- :class:`MisraGries` never overestimates and underestimates by at most
  :attr:`MisraGries.max_error` ``<= N / (capacity + 1)``; every id counted
  more than that is present (Agarwal et al., "Mergeable Summaries", 2012).
"""

from __future__ import annotations

import math

import numpy as np

from hotpipe.errors import ConfigError

_EMPTY = np.empty(0, dtype=np.int64)


def _aggregate(ids: np.ndarray, counts: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(n,) ids [+ (n,) weights] -> (distinct ids (U,) int64, their total weight (U,) int64)."""
    ids = np.asarray(ids, dtype=np.int64).ravel()
    if counts is None:
        return np.unique(ids, return_counts=True)
    uniq, inverse = np.unique(ids, return_inverse=True)
    return uniq, np.bincount(inverse, weights=counts, minlength=uniq.shape[0]).astype(np.int64)


class CountMinSketch:
    """A count-min sketch with conservative update over int64 keys.

    Args:
        width_log2: each of the ``depth`` rows has ``2**width_log2`` counters.
        depth: hash rows; ``delta = exp(-depth)``.
        seed: picks the hash functions.

    Memory is ``depth * 2**width_log2 * 8`` bytes (the default: 32 MiB).

    Example:
        >>> cms = CountMinSketch(width_log2=10, depth=4)
        >>> cms.update(np.array([3, 3, 7]))
        >>> cms.estimate(np.array([3, 7, 9])).tolist()
        [2, 1, 0]
    """

    def __init__(self, *, width_log2: int = 20, depth: int = 4, seed: int = 0) -> None:
        if not 1 <= width_log2 <= 32:
            raise ConfigError("sketch.width_log2", f"expected 1..32, found {width_log2}")
        if depth < 1:
            raise ConfigError("sketch.depth", f"expected >= 1, found {depth}")
        self.width = 1 << width_log2
        self.depth = depth
        self._shift = np.uint64(64 - width_log2)
        rng = np.random.default_rng(seed)
        # Multiply-shift needs odd multipliers.
        self._mult = (rng.integers(0, 1 << 63, depth, dtype=np.uint64) << np.uint64(1)) | np.uint64(1)
        self._row0 = (np.arange(depth, dtype=np.int64) * self.width)[:, None]  # (depth, 1)
        self.table = np.zeros(depth * self.width, dtype=np.int64)  # rows laid end to end
        self.total = 0

    @property
    def epsilon(self) -> float:
        """Relative error bound: overestimate <= epsilon * total with prob. >= 1 - delta."""
        return 2 * math.e / self.width

    @property
    def delta(self) -> float:
        return math.exp(-self.depth)

    @property
    def nbytes(self) -> int:
        return int(self.table.nbytes)

    def _cells(self, ids: np.ndarray) -> np.ndarray:
        """(U,) int64 ids -> (depth, U) int64 flat counter positions."""
        x = ids.astype(np.uint64)[None, :]  # (1, U); wraps negatives, harmless for hashing
        h = (self._mult[:, None] * x) >> self._shift  # (depth, U), uint64 product wraps mod 2**64
        return h.astype(np.int64) + self._row0

    def update(self, ids: np.ndarray, counts: np.ndarray | None = None) -> None:
        """Count ``ids`` (any shape), each with weight 1 or ``counts`` (same shape).

        Conservative update, applied to a chunk at once: every counter of id
        ``x`` is raised to at least ``estimate(x) + w(x)`` and never lowered.
        That keeps ``estimate >= true count`` (the old estimate was, and every
        counter of ``x`` grows by at least ``w(x)`` above it), and keeps every
        counter at or below what a plain count-min would hold.
        """
        uniq, w = _aggregate(ids, counts)
        if uniq.shape[0] == 0:
            return
        cells = self._cells(uniq)  # (depth, U)
        want = self.table[cells].min(axis=0) + w  # (U,)
        np.maximum.at(self.table, cells.ravel(), np.broadcast_to(want, cells.shape).ravel())
        self.total += int(w.sum())

    def estimate(self, ids: np.ndarray) -> np.ndarray:
        """Upper-bound counts of ``ids``: (n,) int64 for (n,) ids."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if ids.shape[0] == 0:
            return _EMPTY.copy()
        return self.table[self._cells(ids)].min(axis=0)


class MisraGries:
    """Misra-Gries heavy hitters, updated by merging whole chunks.

    Each chunk is first counted exactly (a summary with no error), then merged
    into the running summary; when more than ``capacity`` ids remain, the
    ``(capacity+1)``-th largest count is subtracted from all and ids at or
    below zero are dropped. :attr:`max_error` adds up what was subtracted.

    Args:
        capacity: the most ids kept.

    Attributes:
        ids: (k,) int64 kept ids, ascending; ``counts``: (k,) their lower-bound counts.
        max_error: no kept or dropped id's true count exceeds its estimate
            (0 when dropped) by more than this.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ConfigError("sketch.heavy", f"expected >= 1 heavy-hitter counters, found {capacity}")
        self.capacity = int(capacity)
        self.ids = _EMPTY.copy()
        self.counts = _EMPTY.copy()
        self.max_error = 0
        self.total = 0

    def update(self, ids: np.ndarray, counts: np.ndarray | None = None) -> None:
        uniq, w = _aggregate(ids, counts)
        self.total += int(w.sum())
        both = np.concatenate([self.ids, uniq])
        if both.shape[0] == 0:
            return
        self.ids, inverse = np.unique(both, return_inverse=True)
        self.counts = np.bincount(inverse, weights=np.concatenate([self.counts, w]),
                                  minlength=self.ids.shape[0]).astype(np.int64)
        if self.ids.shape[0] > self.capacity:
            cut = int(np.partition(self.counts, -(self.capacity + 1))[-(self.capacity + 1)])
            keep = self.counts > cut
            self.ids, self.counts = self.ids[keep], self.counts[keep] - cut
            self.max_error += cut

    def estimate(self, ids: np.ndarray) -> np.ndarray:
        """Lower-bound counts of ``ids`` (0 for ids not kept): (n,) int64."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if self.ids.shape[0] == 0:
            return np.zeros(ids.shape[0], dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.ids, ids), self.ids.shape[0] - 1)
        return np.where(self.ids[pos] == ids, self.counts[pos], 0)

    def top(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` kept ids with the largest counts, descending: ((m,), (m,)), m <= k."""
        return _top(self.ids, self.counts, k)


def _top(ids: np.ndarray, counts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` by count, descending; ties broken by ascending id (deterministic).

    Partitions first so a top-k of a long array costs O(n + k log k).
    """
    n = ids.shape[0]
    if k <= 0 or n == 0:
        return _EMPTY.copy(), _EMPTY.copy()
    if k < n:
        kth = np.partition(counts, n - k)[n - k]  # the k-th largest count
        above = counts > kth
        tied = np.flatnonzero(counts == kth)
        tied = tied[np.argsort(ids[tied], kind="stable")[: k - int(above.sum())]]
        sel = np.concatenate([np.flatnonzero(above), tied])
        ids, counts = ids[sel], counts[sel]
    order = np.lexsort((ids, -counts))
    return ids[order], counts[order]
