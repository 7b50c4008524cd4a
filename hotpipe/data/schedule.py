"""Popular / non-popular scheduling (FAE, Hotline): the same samples per epoch, in another order.

A sample is *popular* when every one of its lookups is a hot row (FAE's
definition); the hot set is the ``hot_rows`` most looked-up rows counted over
a Bernoulli sample of the training rows (FAE counts 5 %). The epoch is cut
into reorder windows of ``window`` batches (consecutive rows, the data's
order); inside a window the samples are regrouped into popular-only and
non-popular-only batches::

    window (W batches, W*B rows, data order)   p p n p p p n p n p p ...
      popular rows  -> P0 P1 P2 ...             (data order inside, B each)
      other rows    -> N0 N1 ...                (data order inside, B each)
      leftovers     -> M                         the < B popular + < B other rows that
                                                 fill no batch of their own; together
                                                 exactly 0 or B rows: at most one
                                                 "mixed" batch (non-popular: it holds at
                                                 least one non-popular sample)
    fae:      P0 P1 P2 ... N0 N1 ... M           popular phase, then the rest
    hotline:  P0 N0 P1 P2 N1 P3 ... M            spread evenly, a popular batch first, so
                                                 the rows of each non-popular batch are
                                                 fetched while popular batches compute

Every window keeps its W batches, so a step still trains exactly B samples,
``steps_per_epoch`` is unchanged, and every trained row is trained exactly
once per epoch (the rows a ``drop_last`` loader never trains stay untrained;
nothing is deferred to another window and nothing duplicated). The order
repeats every epoch, as the data's order does.

With ``refresh`` > 0 the hot set is recomputed for each period of
``ceil(refresh / window)`` windows from a sample of that period's own rows
(the data is on disk: the same foresight the planner uses), so a window never
mixes two hot sets. Everything is a function of the data, the settings and
``seed``: a resumed run rebuilds the same schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hotpipe.config import ScheduleConfig
from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.layout import TableLayout
from hotpipe.data.loader import BatchLoader, TrainTrace

#: Batch kinds, as stored in :attr:`Schedule.kinds`.
POPULAR, NON_POPULAR, MIXED = 0, 1, 2
KIND_NAMES = ("popular", "non_popular", "mixed")

_CHUNK_ROWS = 1 << 16  # rows read per chunk when counting / classifying (bounds memory)


def window_order(popular: np.ndarray, batch_size: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Reorder one window's samples into popular-only and non-popular-only batches.

    Args:
        popular: (n,) bool, n a multiple of ``batch_size``; the window's samples in data order.
        batch_size: B.
        mode: ``fae`` (popular batches first) or ``hotline`` (interleaved).

    Returns:
        order: (n,) int64, a permutation of ``0..n-1``; batch j is ``order[j*B:(j+1)*B]``.
        kinds: (n // B,) int8, :data:`POPULAR`, :data:`NON_POPULAR` or :data:`MIXED`.

    Example:
        >>> o, k = window_order(np.array([1, 0, 1, 1, 0, 1], bool), 2, "fae")
        >>> o.tolist(), k.tolist()
        ([0, 2, 3, 5, 1, 4], [0, 0, 1])
    """
    b = batch_size
    pop, non = np.flatnonzero(popular), np.flatnonzero(~popular)
    n_p, n_n = pop.size // b, non.size // b
    left = np.sort(np.concatenate([pop[n_p * b:], non[n_n * b:]]))  # 0 or B rows, data order
    p_batches = pop[:n_p * b].reshape(n_p, b)
    # The non-popular sequence: the full non-popular batches, then the mixed one.
    q_batches = np.concatenate([non[:n_n * b].reshape(n_n, b), left.reshape(-1, b)])
    q_kinds = np.full(q_batches.shape[0], NON_POPULAR, dtype=np.int8)
    q_kinds[n_n:] = MIXED
    n_q = q_batches.shape[0]
    if mode == "fae":
        key = np.concatenate([np.arange(n_p), n_p + np.arange(n_q)])
    else:
        # Popular batch i sits at i/n_p of the window, non-popular j at (j+1)/(n_q+1),
        # compared in integers (times n_p*(n_q+1)); doubled +1 so a tie puts the
        # popular batch first. Popular batch 0 (key 0) always leads.
        key = np.concatenate([2 * np.arange(n_p) * (n_q + 1), 2 * (np.arange(n_q) + 1) * n_p + 1])
    perm = np.argsort(key, kind="stable")
    batches = np.concatenate([p_batches, q_batches])[perm]  # (n/B, B)
    kinds = np.concatenate([np.full(n_p, POPULAR, dtype=np.int8), q_kinds])[perm]
    return batches.reshape(-1).astype(np.int64), kinds


def top_rows(counts: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` most counted rows among those counted at least once; ties by lower id.

    Args:
        counts: (R,) per-row lookup counts.

    Returns:
        (min(k, seen),) int64 row ids, most counted first.
    """
    seen = np.flatnonzero(counts)
    if seen.size > k:
        seen = seen[np.lexsort((seen, -counts[seen].astype(np.int64)))[:k]]
    return seen.astype(np.int64)


@dataclass(frozen=True)
class Schedule:
    """One epoch's order: which training rows make each step, and each step's kind.

    Attributes:
        order: (S*B,) int64 row offsets from the loader's ``start``; step ``k`` of
            the epoch trains ``start + order[k*B:(k+1)*B]``.
        kinds: (S,) int8 kind of each step of the epoch.
        popular: popular samples in the epoch (under the hot set of their window).
        hot_sets: hot sets computed (1 + refreshes).
        hot_rows: rows in each hot set (at most; fewer when the sample saw fewer).
    """

    mode: str
    window: int
    refresh_steps: int
    order: np.ndarray
    kinds: np.ndarray
    popular: int
    hot_sets: int
    hot_rows: int


def build_schedule(loader: BatchLoader, layout: TableLayout, *, mode: str, window: int,
                   hot_rows: int, refresh: int = 0, sample: float = 0.05,
                   seed: int = 0) -> Schedule:
    """Classify every training sample and reorder each window (see the module docstring).

    One pass over the training split's sparse column (chunked; a Bernoulli
    sample of it counted first), with per-row memory of an int32 count and a
    bool (the planner already keeps int32 state per row).

    Args:
        loader: the training loader (full batches: ``drop_last``).
        layout: the tables' offsets (local -> global ids).
        mode: ``fae`` or ``hotline``.
        window: batches reordered together.
        hot_rows: rows in the hot set (the fast tier's capacity in rows).
        refresh: recompute the hot set every this many steps, rounded up to
            whole windows (0: one hot set for the whole split).
        sample: fraction of rows whose lookups are counted for a hot set.
        seed: the sampling seed.

    Raises:
        ValueError: a loader with a partial batch, an unknown mode, window < 1.
    """
    b, spe = loader.batch_size, loader.steps_per_epoch
    if mode not in ("fae", "hotline"):
        raise ValueError(f"schedule mode must be 'fae' or 'hotline', found {mode!r}")
    if window < 1 or not 0 < sample <= 1 or refresh < 0:
        raise ValueError(f"bad schedule settings: window={window}, sample={sample}, refresh={refresh}")
    if spe * b > loader.stop - loader.start:
        raise ValueError("a schedule reorders full batches only: build the loader with drop_last=True")
    sparse, offsets = loader.ds.sparse, layout.offsets
    per_period = -(-refresh // window) if refresh else max(1, -(-spe // window))  # windows
    period_steps = per_period * window
    order = np.empty(spe * b, dtype=np.int64)
    kinds = np.empty(spe, dtype=np.int8)
    counts = np.zeros(layout.num_rows, dtype=np.int32)
    is_hot = np.zeros(layout.num_rows, dtype=bool)
    popular_total, hot_sets = 0, 0
    for p0 in range(0, spe, period_steps):
        p1 = min(spe, p0 + period_steps)
        lo, hi = loader.start + p0 * b, loader.start + p1 * b
        # Hot set of this period: count a seeded sample of its rows' lookups.
        rng = np.random.default_rng([seed, hot_sets])
        counts[:] = 0
        for r in range(lo, hi, _CHUNK_ROWS):
            chunk = np.asarray(sparse[r:min(hi, r + _CHUNK_ROWS)], dtype=np.int64)  # (c, T)
            picked = chunk[rng.random(chunk.shape[0]) < sample] + offsets
            u, c = np.unique(picked, return_counts=True)
            counts[u] += c.astype(np.int32)
        is_hot[:] = False
        is_hot[top_rows(counts, hot_rows)] = True
        hot_sets += 1
        # Classify the period's samples, then reorder each window.
        popular = np.empty(hi - lo, dtype=bool)
        for r in range(lo, hi, _CHUNK_ROWS):
            chunk = np.asarray(sparse[r:min(hi, r + _CHUNK_ROWS)], dtype=np.int64)
            popular[r - lo:r - lo + chunk.shape[0]] = is_hot[chunk + offsets].all(axis=1)
        popular_total += int(popular.sum())
        for w0 in range(p0, p1, window):
            w1 = min(p1, w0 + window)
            o, k = window_order(popular[(w0 - p0) * b:(w1 - p0) * b], b, mode)
            order[w0 * b:w1 * b] = o + (w0 * b)
            kinds[w0:w1] = k
    return Schedule(mode=mode, window=window, refresh_steps=period_steps if refresh else 0,
                    order=order, kinds=kinds, popular=popular_total, hot_sets=hot_sets,
                    hot_rows=int(min(hot_rows, layout.num_rows)))


class ScheduledLoader(BatchLoader):
    """A :class:`BatchLoader` whose step ``k`` is a gathered set of rows from a :class:`Schedule`.

    Same interface, length and batch size as the loader it wraps, so the
    feeds, the planner (through :meth:`id_stream`) and the loop cannot tell
    them apart: the plan is made for the reordered steps, and a tiered run
    stays bit-identical to an untiered run of the same schedule.

    Args:
        base: the training loader (``drop_last``).
        schedule: its order, from :func:`build_schedule`.

    Example:
        >>> s = build_schedule(train, layout, mode="hotline", window=64, hot_rows=100_000)  # doctest: +SKIP
        >>> loader = ScheduledLoader(train, s)  # doctest: +SKIP
    """

    def __init__(self, base: BatchLoader, schedule: Schedule) -> None:
        if schedule.order.shape[0] != base.steps_per_epoch * base.batch_size:
            raise ValueError(f"schedule of {schedule.order.shape[0]} rows for a loader of "
                             f"{base.steps_per_epoch} x {base.batch_size}")
        self.ds, self.batch_size, self.start, self.stop = base.ds, base.batch_size, base.start, base.stop
        self._cards = base._cards
        self.steps_per_epoch, self.num_steps = base.steps_per_epoch, base.num_steps
        self.schedule = schedule

    @classmethod
    def from_config(cls, base: BatchLoader, cfg: ScheduleConfig, *, layout: TableLayout,
                    hot_rows: int, seed: int) -> ScheduledLoader:
        """The training loader as ``schedule.*`` says (``mode`` other than ``none``)."""
        return cls(base, build_schedule(base, layout, mode=cfg.mode, window=cfg.window,
                                        hot_rows=hot_rows, refresh=cfg.refresh,
                                        sample=cfg.sample, seed=seed))

    def rows(self, step: int) -> np.ndarray:
        """(B,) int64 dataset rows of ``step``: what BatchLoader's ``sparse_ids`` and
        ``batch`` read (a gather instead of a slice)."""
        if not 0 <= step < self.num_steps:
            raise IndexError(f"step {step} out of range [0, {self.num_steps})")
        k, b = step % self.steps_per_epoch, self.batch_size
        return self.start + self.schedule.order[k * b:(k + 1) * b]

    def kind(self, step: int) -> int:
        """:data:`POPULAR`, :data:`NON_POPULAR` or :data:`MIXED`."""
        return int(self.schedule.kinds[step % self.steps_per_epoch])

    def summary(self, steps: int | None = None) -> dict[str, Any]:
        """What the schedule changed, for metrics.json: over the first ``steps`` steps (all)."""
        s = self.schedule
        n = self.num_steps if steps is None else min(steps, self.num_steps)
        full, part = divmod(n, self.steps_per_epoch)
        per_kind = full * np.bincount(s.kinds, minlength=3) + np.bincount(s.kinds[:part], minlength=3)
        epoch_samples = self.steps_per_epoch * self.batch_size
        return {
            "mode": s.mode, "window": s.window, "refresh_steps": s.refresh_steps,
            "hot_rows": s.hot_rows, "hot_sets": s.hot_sets, "hot_set_refreshes": s.hot_sets - 1,
            "popular_fraction": s.popular / epoch_samples if epoch_samples else 0.0,
            "batches": {name: int(per_kind[i]) for i, name in enumerate(KIND_NAMES)},
        }


class ScheduledTrace(TrainTrace):
    """The training trace in the order ``schedule.mode`` trains it: what ``hotpipe
    simulate`` and the cost model plan, so the rows they count are the rows a
    scheduled run moves.

    The order depends on the fast tier's size (the hot set is its ``cache.capacity``
    rows), so a planner sized for another capacity asks :meth:`at_capacity` for the
    order a run at that capacity would train (built once per size, then cached).
    With ``schedule.mode=none`` it is the plain :class:`TrainTrace` at every size.

    Args:
        ds: the dataset.
        batch_size, val_fraction, epochs, max_steps: as for :class:`TrainTrace`.
        schedule: the run's ``schedule`` section.
        hot_rows: the run's fast-tier rows (the order :meth:`__iter__` gives).
        seed: the run's ``train.seed`` (the hot-set sample is drawn with it).

    Example:
        >>> trace = ScheduledTrace(ds, batch_size=2048, val_fraction=0.1, schedule=cfg.schedule,
        ...                        hot_rows=100_000, seed=0)  # doctest: +SKIP
        >>> trace_movement(trace.at_capacity(50_000), ...)  # doctest: +SKIP
    """

    def __init__(self, ds: ColumnarDataset, *, batch_size: int, val_fraction: float,
                 epochs: int = 1, max_steps: int = 0, schedule: ScheduleConfig, hot_rows: int,
                 seed: int) -> None:
        self._ds, self._schedule, self._seed = ds, schedule, seed
        self._kw: dict[str, Any] = dict(batch_size=batch_size, val_fraction=val_fraction,
                                        epochs=epochs, max_steps=max_steps)
        super().__init__(ds, **self._kw, order=self._order(hot_rows))
        self.hot_rows = hot_rows
        self._sized: dict[int, TrainTrace] = {hot_rows: self}

    def _order(self, hot_rows: int) -> Any:
        if self._schedule.mode == "none":
            return None
        layout = TableLayout.of(self._ds)
        return lambda base: ScheduledLoader.from_config(base, self._schedule, layout=layout,
                                                        hot_rows=hot_rows, seed=self._seed)

    def at_capacity(self, rows: int) -> TrainTrace:
        """The trace a run whose fast tier holds ``rows`` rows trains."""
        if self._schedule.mode == "none":
            return self
        if rows not in self._sized:
            self._sized[rows] = TrainTrace(self._ds, **self._kw, order=self._order(rows))
        return self._sized[rows]
