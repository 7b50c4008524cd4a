"""Reuse distances in steps, measured on a hash sample of the ids (SHARDS-style).

The reuse distance of a lookup is the number of training steps since the
same row was last used (1 = used again by the next batch). It says how far
a lookahead window must see to find a row's next use, and how long an LRU
cache must keep it.

Why sample *ids* rather than rows: the distance needs every occurrence of a
row, so sampling lookups would lengthen the gaps. Choosing ids by a hash
(Waldspurger et al., "SHARDS", FAST'15) keeps all occurrences of each chosen
id, so the distances are exact for the chosen ids and their histogram is an
unbiased estimate of the full one once divided by the sampling rate.
Each table gets its own rate, so small tables are tracked completely.
"""

from __future__ import annotations

import numpy as np

from hotpipe.data.encoding import mix64

NUM_BINS = 48  # bin b holds distances in [2**b, 2**(b+1)) steps


def _salt(t: int) -> np.uint64:
    return np.uint64((0x9E3779B97F4A7C15 * (t + 1)) & 0xFFFFFFFFFFFFFFFF)


class ReuseTracker:
    """Histograms of step distances between consecutive uses of the same row.

    Args:
        cardinalities: rows per table.
        batch_size: rows of data per step; row ``r`` is in step ``r // batch_size``.
        ids_per_table: about how many distinct ids of each table to follow
            (memory and time scale with it); a table with fewer rows is followed whole.

    Attributes:
        rates: (T,) fraction of each table's ids followed.
        hist: (T, NUM_BINS) int64 sampled reuses per log2 distance bin.
        cold: (T,) int64 sampled first uses (no earlier use in the data).
    """

    def __init__(self, cardinalities: list[int], *, batch_size: int, ids_per_table: int = 4096) -> None:
        cards = np.asarray(cardinalities, dtype=np.float64)
        self.rates = np.minimum(1.0, ids_per_table / np.maximum(cards, 1.0))
        # An id is followed when its 64-bit hash falls below rate * 2**64.
        self._limits = [np.uint64(min(int(r * 2.0**64), 2**64 - 1)) for r in self.rates]
        self._full = self.rates >= 1.0
        self.batch_size = batch_size
        n = len(cardinalities)
        self.hist = np.zeros((n, NUM_BINS), dtype=np.int64)
        self.cold = np.zeros(n, dtype=np.int64)
        # Per table: followed ids seen so far (ascending) and the step of their last use.
        self._ids = [np.empty(0, np.int64) for _ in range(n)]
        self._last = [np.empty(0, np.int64) for _ in range(n)]

    def update(self, sparse: np.ndarray, first_row: int) -> None:
        """Feed a chunk of consecutive rows: sparse (n, T) local ids starting at ``first_row``."""
        n = sparse.shape[0]
        if n == 0:
            return
        steps = (first_row + np.arange(n, dtype=np.int64)) // self.batch_size  # (n,)
        s0, span = int(steps[0]), int(steps[-1] - steps[0]) + 1
        for t in range(sparse.shape[1]):
            col = np.asarray(sparse[:, t], dtype=np.int64)
            if not self._full[t]:
                keep = mix64(col.astype(np.uint64) ^ _salt(t)) < self._limits[t]
                col, st = col[keep], steps[keep]
            else:
                st = steps
            self._table(t, col, st - s0, s0, span)

    def _table(self, t: int, ids: np.ndarray, rel: np.ndarray, s0: int, span: int) -> None:
        # Distinct (id, step) pairs, sorted by id then step, as one int64 key.
        key = np.unique(ids * span + rel)
        ids, step = key // span, key % span + s0
        new_id = np.ones(ids.shape[0], dtype=bool)
        new_id[1:] = ids[1:] != ids[:-1]
        # Within the chunk: gaps between consecutive uses of the same id.
        gaps = np.diff(step)[~new_id[1:]]
        # First use in the chunk: gap to the last use before it, if any.
        first_ids, first_steps = ids[new_id], step[new_id]
        known, prev = self._ids[t], self._last[t]
        pos = np.minimum(np.searchsorted(known, first_ids), max(known.shape[0] - 1, 0))
        seen = (known[pos] == first_ids) if known.shape[0] else np.zeros(first_ids.shape[0], bool)
        carried = first_steps[seen] - prev[pos[seen]]
        # 0: a step split across two chunks, already counted for this id.
        gaps = np.concatenate([gaps, carried[carried > 0]])
        self.cold[t] += int(np.count_nonzero(~seen))
        bins = np.minimum(np.floor(np.log2(gaps)).astype(np.int64), NUM_BINS - 1)
        self.hist[t] += np.bincount(bins, minlength=NUM_BINS)
        # Last use of each id in the chunk is the next chunk's "previous use".
        last_in_chunk = np.ones(ids.shape[0], dtype=bool)
        last_in_chunk[:-1] = ids[:-1] != ids[1:]
        merged_ids = np.concatenate([known, ids[last_in_chunk]])
        merged_last = np.concatenate([prev, step[last_in_chunk]])
        # Later chunks win: keep the last occurrence of each id after a stable sort.
        order = np.argsort(merged_ids, kind="stable")
        merged_ids, merged_last = merged_ids[order], merged_last[order]
        last = np.ones(merged_ids.shape[0], dtype=bool)
        last[:-1] = merged_ids[:-1] != merged_ids[1:]
        self._ids[t], self._last[t] = merged_ids[last], merged_last[last]

    def estimated(self) -> tuple[np.ndarray, np.ndarray]:
        """Histograms scaled to all ids: ((T, NUM_BINS), (T,)) float64 (reuses, first uses)."""
        scale = 1.0 / self.rates
        return self.hist * scale[:, None], self.cold * scale


def summarize(hist: np.ndarray, cold: float, windows: tuple[int, ...] = (8, 64, 512)) -> dict[str, object]:
    """A histogram (NUM_BINS,) of reuse distances -> JSON-ready summary.

    ``within[W]`` is the share of reuses at distance < W steps (their next use
    is visible to a lookahead window of W steps); quantiles are bin lower edges.
    """
    total = float(hist.sum())
    cdf = np.cumsum(hist) / total if total else np.zeros(hist.shape[0])
    edges = 2.0 ** np.arange(hist.shape[0])

    def quantile(q: float) -> float | None:
        return float(edges[int(np.searchsorted(cdf, q))]) if total else None

    def share_below(w: int) -> float | None:
        if not total:
            return None
        b = int(np.log2(w))  # bins fully below w (w is a power of two)
        return float(hist[:b].sum() / total)

    last = int(np.flatnonzero(hist)[-1]) + 1 if total else 0
    return {
        "reuses": total,
        "first_uses": float(cold),
        "bins_lower_steps": edges[:last].tolist(),
        "hist": hist[:last].tolist(),
        "median_steps": quantile(0.5),
        "p90_steps": quantile(0.9),
        "within": {str(w): share_below(w) for w in windows},
    }
