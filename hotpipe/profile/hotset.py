"""How much of the traffic a hot set serves, measured on rows it was not chosen from.

A hot set is chosen by ranking rows by their counted frequency. How well it
serves lookups must then be measured on *held-out* rows when the counts come
from a sample: measured on the very rows it was chosen from, a set as large
as the sample's distinct rows serves 100 % of them, whatever the rest of the
data does (FAE's static hot set is chosen the same way and meets the held-out
data, so this is also the number such a system sees). With ``exact`` the
held-out rows are all rows, and every figure equals the exact count.

For each held-out sample the evaluator computes, per lookup, its row's rank
(per table and pooled over tables). Then for any threshold ``k``:

- lookups served by the top ``k`` rows = lookups of rank ``< k``;
- hot samples (FAE: every lookup hot) = samples whose largest pooled rank is ``< k``;

so one pass answers every threshold at once (ranks are bucketed by
``np.searchsorted`` over the sorted thresholds).
"""

from __future__ import annotations

import numpy as np

UNRANKED = np.iinfo(np.int64).max


class Ranker:
    """Rank of each id in a descending order; ids not in it rank :data:`UNRANKED`.

    A dense rank array when the id space is small (one gather per lookup),
    a sorted search otherwise (memory bounded by the order's length).

    Args:
        order: (K,) distinct int64 ids, most frequent first.
        id_space: ids are in ``[0, id_space)``.
    """

    _DENSE_LIMIT = 1 << 26  # 256 MiB of int32 ranks at most

    def __init__(self, order: np.ndarray, id_space: int) -> None:
        self.size = int(order.shape[0])
        if id_space <= self._DENSE_LIMIT:
            self.dense: np.ndarray | None = np.full(id_space, -1, dtype=np.int32)
            self.dense[order] = np.arange(self.size, dtype=np.int32)
        else:
            self.dense = None
            self.perm = np.argsort(order, kind="stable")
            self.sorted = order[self.perm]  # rank of sorted[j] is perm[j]

    def rank(self, ids: np.ndarray) -> np.ndarray:
        """Ranks of ``ids`` (any shape): int64, same shape."""
        if self.dense is not None:
            r = self.dense[ids].astype(np.int64)
            return np.where(r < 0, UNRANKED, r)
        if self.size == 0:
            return np.full(ids.shape, UNRANKED, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.sorted, ids), self.size - 1)
        return np.where(self.sorted[pos] == ids, self.perm[pos], UNRANKED)


class HotSetEvaluator:
    """Counts, over held-out rows, lookups and samples under each rank threshold.

    Args:
        table_rankers: one :class:`Ranker` per table (local ids).
        table_thresholds: per table, sorted distinct thresholds ``k``.
        pooled: a :class:`Ranker` over global ids (all tables).
        pooled_thresholds: sorted distinct thresholds for pooled ranks.
        offsets: (T,) first global id of each table.

    Attributes:
        table_lookups: (T,) held-out lookups per table.
        table_below: per table, (len(thresholds),) lookups of rank < k.
        pooled_below: lookups of pooled rank < k, per pooled threshold.
        samples_below: samples whose every lookup has pooled rank < k.
        samples: held-out samples seen.
    """

    def __init__(self, table_rankers: list[Ranker], table_thresholds: list[np.ndarray], pooled: Ranker,
                 pooled_thresholds: np.ndarray, offsets: np.ndarray) -> None:
        self.rankers, self.thresholds = table_rankers, table_thresholds
        self.pooled, self.pooled_thresholds, self.offsets = pooled, pooled_thresholds, offsets
        self.table_lookups = np.zeros(len(table_rankers), dtype=np.int64)
        self.table_below = [np.zeros(t.shape[0], dtype=np.int64) for t in table_thresholds]
        self.pooled_below = np.zeros(pooled_thresholds.shape[0], dtype=np.int64)
        self.samples_below = np.zeros(pooled_thresholds.shape[0], dtype=np.int64)
        self.samples = 0

    @staticmethod
    def _below(ranks: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
        """(n,) ranks -> (len(thresholds),) how many ranks are < each threshold."""
        # bucket j holds ranks in [thresholds[j-1], thresholds[j]); rank < k_j <=> bucket <= j.
        buckets = np.searchsorted(thresholds, ranks, side="right")
        return np.cumsum(np.bincount(buckets, minlength=thresholds.shape[0] + 1))[:-1]

    def update(self, sparse: np.ndarray) -> None:
        """Held-out rows: sparse (n, T) local ids."""
        if sparse.shape[0] == 0:
            return
        sparse = np.asarray(sparse, dtype=np.int64)
        for t, ranker in enumerate(self.rankers):
            self.table_below[t] += self._below(ranker.rank(sparse[:, t]), self.thresholds[t])
        self.table_lookups += sparse.shape[0]
        pooled = self.pooled.rank(sparse + self.offsets[None, :])  # (n, T)
        self.pooled_below += self._below(pooled.ravel(), self.pooled_thresholds)
        self.samples_below += self._below(pooled.max(axis=1), self.pooled_thresholds)
        self.samples += sparse.shape[0]

    def table_share(self, t: int, k: int) -> float:
        """Share of table ``t``'s held-out lookups served by its top ``k`` rows."""
        j = int(np.searchsorted(self.thresholds[t], k))
        n = int(self.table_lookups[t])
        return float(self.table_below[t][j] / n) if n else 0.0

    def pooled_share(self, k: int) -> tuple[float, float]:
        """(share of held-out lookups, share of held-out samples) served by the pooled top ``k``."""
        j = int(np.searchsorted(self.pooled_thresholds, k))
        looks = self.samples * len(self.rankers)
        return (float(self.pooled_below[j] / looks) if looks else 0.0,
                float(self.samples_below[j] / self.samples) if self.samples else 0.0)
