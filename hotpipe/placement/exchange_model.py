"""What the distributed runtime exchanges, counted from the trace alone, rank by rank.

Every rank of ``hotpipe.distributed`` reads the same global batches, so the
rows each rank sends and receives are a function of the trace, the world
size and the replicated set. This module counts them in the runtime's own
terms (``distributed/exchange.py``'s ``ExchangeStats``), so that a
prediction can be checked against a run's ``metrics.json`` number for number.
It lives in ``placement/`` (below ``distributed/`` in the import layers), so
both the cost model and the runtime can use it.

One global step, ``B`` samples, ``W`` ranks, ``b = B / W``; rank ``s`` trains
samples ``[s b, (s+1) b)``; row ``g`` is owned by rank ``g % W``; ``H`` is the
replicated set (hot rows, plus every row of a table with fewer rows than
ranks: such a table cannot be split, :func:`small_table_rows`)::

    U_s        distinct ids of rank s's samples that are not in H
    M[s, o]    |{g in U_s : g % W == o}|     rows s needs from owner o   (W, W)
    forward    rank r receives sum_{o != r} M[r, o], sends sum_{s != r} M[s, r]
               of which the rows the previous step looked up (its update
               changes them) come after that update, the rest ahead, while it
               computes (the first step of a run: all ahead)
    backward   the same rows in the other direction (one coalesced gradient each)
    replicas   Tk = |union_s (ids of s's samples in H)| rows all-reduced
               (payload Tk * D * 4 bytes, only when Tk > 0)
    dense      (P + 1) floats all-reduced (every MLP parameter, and the loss)

so ``rows_sent[r] == rows_received[r]`` = forward received + forward sent.
Rows a rank reads from itself are not traffic and are not counted. Ids are
never sent (foresight replaces the usual id all-to-all).

Example:
    >>> # rank 0 looks up row 1 twice (owned by 1), rank 1 rows 0 and 2 (owned by 0)
    >>> c = count_exchange([np.array([[1], [1], [0], [2]])], world_size=2, dim=4)
    >>> c.forward_recv.tolist(), c.forward_sent.tolist()
    ([[1, 2]], [[2, 1]])
    >>> c.per_rank()[0]["rows_sent"], c.per_rank()[0]["bytes_sent"]
    (3, 48)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from hotpipe.errors import ConfigError
from hotpipe.storage.slots import FLOAT_BYTES

#: Above this many rows, counting uses the distinct ids seen (sort-based)
#: instead of a dense per-row counter (8 bytes a row: 1.5 GB for Criteo Terabyte).
DENSE_COUNT_MAX_ROWS = 1 << 26


def hottest_rows(steps: Iterable[np.ndarray], num_rows: int, k: int) -> np.ndarray:
    """The ``k`` most looked-up rows of ``steps``: (k,) int64 ascending.

    Ties go to the lower row id; if fewer than ``k`` rows were seen, the
    lowest unseen ids fill up (as a stable sort of all ``num_rows`` counts
    would). Tables of any size: a dense counter for small row spaces, a
    sort of the ids seen above :data:`DENSE_COUNT_MAX_ROWS`.
    """
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    k = min(k, num_rows)
    if num_rows <= DENSE_COUNT_MAX_ROWS:
        counts = np.zeros(num_rows, dtype=np.int64)
        for ids in steps:
            counts += np.bincount(np.asarray(ids).ravel(), minlength=num_rows)
        return np.sort(np.argsort(-counts, kind="stable")[:k]).astype(np.int64)
    seen = np.concatenate([np.asarray(ids, dtype=np.int64).ravel() for ids in steps] or
                          [np.empty(0, dtype=np.int64)])
    uniq, cnt = np.unique(seen, return_counts=True)  # uniq ascending
    top = uniq[np.argsort(-cnt, kind="stable")[:k]]  # stable: ties by lower id
    if len(top) < k:  # every seen row is in; unseen rows (count 0) fill up, lowest ids first
        # the first k + |seen| ids hold at least k unseen ones
        cand = np.arange(min(num_rows, k + len(uniq)), dtype=np.int64)
        top = np.concatenate([top, cand[~np.isin(cand, uniq)][:k - len(top)]])
    return np.sort(top).astype(np.int64)


def small_table_rows(cardinalities: Sequence[int], world_size: int) -> np.ndarray:
    """Global ids of every row of the tables with fewer rows than ranks: (n,) int64 ascending.

    Round-robin partitioning would leave some rank without a row of such a
    table, so the runtime keeps them on every rank (as replicated rows).
    """
    cards = np.asarray(cardinalities, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(cards)[:-1]])
    parts = [np.arange(o, o + c, dtype=np.int64) for o, c in zip(offsets, cards, strict=True)
             if c < world_size]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def replicated_set(hot: np.ndarray | None, cardinalities: Sequence[int] | None,
                   world_size: int) -> np.ndarray:
    """The rows every rank holds: ``hot`` plus the small tables' rows, (H,) int64 ascending."""
    h = np.asarray(hot if hot is not None else [], dtype=np.int64)
    if cardinalities is not None:
        h = np.union1d(h, small_table_rows(cardinalities, world_size))
    return np.unique(h).astype(np.int64)


@dataclass
class ExchangeCount:
    """Rows each rank sends and receives, step by step (see the module docstring).

    Attributes:
        world_size: ranks W.
        dim: floats per row sent (the embedding dimension).
        dense_params: MLP parameters (all-reduced every step with the loss).
        forward_recv: (S, W) rows rank r receives in step s's forward exchange.
        forward_sent: (S, W) rows rank r serves to other ranks in step s.
        forward_after: (S, W) of ``forward_recv``, the rows step s-1 looked up
            (they come after its update; the rest come ahead).
        forward_sent_after: (S, W) of ``forward_sent``, the rows sent after the update.
        touched: (S,) replicated rows any rank looked up (all-reduced).
        lookups: (S, W) lookups of each rank's samples (``b * T``).
        distinct: (S, W) distinct ids of each rank's samples (replicated included).
        samples: (S,) global batch sizes.
    """

    world_size: int
    dim: int
    dense_params: int = 0
    forward_recv: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), dtype=np.int64))
    forward_sent: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), dtype=np.int64))
    forward_after: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), dtype=np.int64))
    forward_sent_after: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), dtype=np.int64))
    touched: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    lookups: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), dtype=np.int64))
    distinct: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), dtype=np.int64))
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def steps(self) -> int:
        return int(self.samples.shape[0])

    @property
    def row_bytes(self) -> int:
        return self.dim * FLOAT_BYTES

    def rows_sent(self) -> np.ndarray:
        """(S, W) rows each rank sends per step: rows served forward + gradients returned."""
        return self.forward_sent + self.forward_recv

    def replica_allreduce_bytes(self) -> np.ndarray:
        """(S,) payload each rank hands to the replica all-reduce (0 when none touched)."""
        return self.touched * self.row_bytes

    def dense_allreduce_bytes(self) -> int:
        """Payload of the dense all-reduce per step and rank: the parameters and the loss."""
        return (self.dense_params + 1) * FLOAT_BYTES

    def per_rank(self) -> list[dict[str, int]]:
        """Each rank's totals over the steps, under the runtime's ``ExchangeStats`` names."""
        sent = self.rows_sent().sum(axis=0)
        dense = self.dense_allreduce_bytes() * self.steps
        replica = int(self.replica_allreduce_bytes().sum())
        recv = self.forward_recv.sum(axis=0)
        after = self.forward_after.sum(axis=0)
        return [{"rank": r, "steps": self.steps, "rows_sent": int(sent[r]), "rows_received": int(sent[r]),
                 "bytes_sent": int(sent[r]) * self.row_bytes,
                 "bytes_received": int(sent[r]) * self.row_bytes,
                 "allreduce_bytes": dense + replica,
                 "rows_fetched_ahead": int(recv[r] - after[r]),
                 "rows_fetched_after_update": int(after[r])} for r in range(self.world_size)]

    def totals(self) -> dict[str, float]:
        """Sums over ranks, as ``metrics.json``'s ``dist`` section reports them."""
        per = self.per_rank()
        out: dict[str, float] = {k: sum(p[k] for p in per) for k in
                                 ("rows_sent", "rows_received", "bytes_sent", "bytes_received")}
        n = int(self.samples.sum())
        out["bytes_per_sample"] = out["bytes_sent"] / n if n else 0.0
        return out


def count_exchange(steps: Iterable[np.ndarray], *, world_size: int, dim: int,
                   replicated: np.ndarray | None = None, dense_params: int = 0,
                   staleness: int = 0, fetch_ahead: bool = True) -> ExchangeCount:
    """Count the runtime's exchange over global batches ``steps`` ((B, T) int64 global ids each).

    Args:
        steps: global ids of each step's batch (the fused row space,
            ``data/layout.py``), as every rank reads them.
        world_size: ranks W.
        dim: embedding dimension (floats per row exchanged).
        replicated: every row held by all ranks (:func:`replicated_set`).
        dense_params: MLP parameters (for the dense all-reduce payload).
        staleness: the runtime's ``dist.staleness``; 1 sends every row ahead
            (nothing after the update).
        fetch_ahead: the runtime's ``dist.fetch_ahead``; False fetches every
            row in one exchange (counted as ahead: nothing after the update).

    Raises:
        ConfigError: a batch size that is not a multiple of the world size.
    """
    w = world_size
    if w < 1:
        raise ConfigError("ranks", f"expected >= 1, found {w}")
    hot = np.unique(np.asarray(replicated if replicated is not None else [], dtype=np.int64))
    recv, sent, after, sent_after, touched, looks, dist_ids, samples = [], [], [], [], [], [], [], []
    prev = np.empty(0, dtype=np.int64)  # the previous step's ids: its update changes them
    for ids in steps:
        if staleness or not fetch_ahead:
            prev = prev[:0]  # one exchange a step: no row waits in a second one
        ids = np.asarray(ids, dtype=np.int64)
        big_b = ids.shape[0]
        if big_b % w:
            raise ConfigError("data.batch_size", f"expected a multiple of the world size {w} "
                                                 f"(each rank trains B/W samples), found {big_b}")
        per = ids.reshape(w, -1)  # (W, b*T): rank s's lookups, samples [s b, (s+1) b)
        # Distinct (rank, id) pairs in one sort: key = rank * R + id, R past the largest id.
        span = int(ids.max()) + 1 if ids.size else 1
        keys = np.unique(per + (np.arange(w, dtype=np.int64)[:, None] * span))
        rank, gid = keys // span, keys % span
        is_hot = np.isin(gid, hot) if len(hot) else np.zeros(len(gid), dtype=bool)
        cold_r, cold_g = rank[~is_hot], gid[~is_hot]
        m = np.bincount(cold_r * w + cold_g % w, minlength=w * w).reshape(w, w)  # M[s, o]
        diag = np.diag(m)
        recv.append(m.sum(axis=1) - diag)  # rows r needs from others
        sent.append(m.sum(axis=0) - diag)  # rows others need from r
        late = (cold_g % w != cold_r) & np.isin(cold_g, prev)  # remote, changed by step s-1
        after.append(np.bincount(cold_r[late], minlength=w))
        sent_after.append(np.bincount(cold_g[late] % w, minlength=w))
        prev = ids.ravel()
        touched.append(len(np.unique(gid[is_hot])))
        looks.append(np.full(w, per.shape[1], dtype=np.int64))
        dist_ids.append(np.bincount(rank, minlength=w))
        samples.append(big_b)

    def stack(xs: list[np.ndarray]) -> np.ndarray:
        return np.stack(xs).astype(np.int64) if xs else np.zeros((0, w), dtype=np.int64)

    return ExchangeCount(world_size=w, dim=dim, dense_params=dense_params,
                         forward_recv=stack(recv), forward_sent=stack(sent),
                         forward_after=stack(after), forward_sent_after=stack(sent_after),
                         touched=np.asarray(touched, dtype=np.int64), lookups=stack(looks),
                         distinct=stack(dist_ids), samples=np.asarray(samples, dtype=np.int64))
