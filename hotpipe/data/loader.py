"""Batches over a memory-mapped columnar dataset, with lookahead.

Batches are consecutive rows (``step`` k covers rows ``start + k*B`` ..):
the order of the data on disk is kept, as Criteo training does (time order),
and it makes every step's ids known in advance — the planner reads the ids
of step k+W while step k trains (see ``plan/``).

A dataset with multi-hot tables (list columns) gives
:class:`~hotpipe.data.batch.JaggedIds` batches over all its tables (a one-hot
table is then a bag of one id per sample), and the id stream the planner,
``simulate`` and the tiered feed consume gives each step's ids as one
``(1, L)`` row: every id of every bag, table-major, duplicates kept (the
planner dedups; the lookups are per id, so the plan's ``lookup_slots`` line
up with the batch's ``values``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from hotpipe.data.batch import Batch, JaggedIds
from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.layout import TableLayout
from hotpipe.errors import DataFormatError


class BatchLoader:
    """Fixed-size batches of rows ``[start, stop)`` of a dataset.

    The last partial batch is kept (``drop_last=False``) so that evaluation
    sees every row; training may drop it to keep step shapes fixed.

    Args:
        dataset: an opened :class:`ColumnarDataset`.
        batch_size: rows per batch B.
        start, stop: the row range (a train or validation split).
        drop_last: drop a final batch smaller than B.
    """

    def __init__(self, dataset: ColumnarDataset, *, batch_size: int, start: int = 0,
                 stop: int | None = None, drop_last: bool = False, epochs: int = 1) -> None:
        self.ds = dataset
        self.batch_size = batch_size
        self.start = start
        self.stop = dataset.rows if stop is None else stop
        self._cards = np.asarray(dataset.cardinalities, dtype=np.int64)[dataset.one_hot]  # (T1,)
        n = max(0, self.stop - self.start)
        self.steps_per_epoch = n // batch_size if drop_last else -(-n // batch_size)
        # Epochs are laid end to end: step k reads batch k % steps_per_epoch.
        self.num_steps = self.steps_per_epoch * epochs

    def __len__(self) -> int:
        return self.num_steps

    def _rows(self, step: int) -> slice:
        if not 0 <= step < self.num_steps:
            raise IndexError(f"step {step} out of range [0, {self.num_steps})")
        lo = self.start + (step % self.steps_per_epoch) * self.batch_size
        return slice(lo, min(lo + self.batch_size, self.stop))

    def sparse_ids(self, step: int) -> np.ndarray:
        """Local ids of one step: (B, T) int64, without reading the rest of the batch.

        Bounds-checked per batch (a min and a per-table max, far cheaper than
        the step): an id edited past its table in ``sparse.bin`` would
        otherwise train another table's row silently.

        Raises:
            ValueError: the dataset has multi-hot tables (use :meth:`jagged_ids`
                or :meth:`global_ids`).
        """
        if self.ds.multi_hot:
            raise ValueError(f"{self.ds.path}: multi-hot tables "
                             f"{[self.ds.tables[t].name for t in self.ds.bags]} have no (B, T) ids; "
                             "this stage supports one-hot datasets only")
        return self._one_hot_ids(step)

    def _one_hot_ids(self, step: int) -> np.ndarray:
        rows = self.rows(step)
        ids = np.asarray(self.ds.sparse[rows], dtype=np.int64)
        if ids.size and (ids.min() < 0 or bool((ids.max(axis=0) >= self._cards).any())):
            r = int(np.flatnonzero(((ids < 0) | (ids >= self._cards)).any(axis=1))[0])
            first = rows.start + r if isinstance(rows, slice) else int(rows[r])
            self.ds.check_ids(ids[r:r + 1], first)  # raises DataFormatError naming table and row
        return ids

    def rows(self, step: int) -> slice | np.ndarray:
        """The dataset rows of ``step``: a slice here; a reordering loader returns an index array."""
        return self._rows(step)

    def jagged_ids(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Local ids of one step of a multi-hot dataset, table-major (``batch.py``'s layout):
        values (L,) int64 and offsets (T*B + 1,) int64. Bounds-checked per table."""
        rows = self.rows(step)
        one_hot = self._one_hot_ids(step)  # (B, T1)
        b = one_hot.shape[0]
        parts: list[np.ndarray] = []
        lengths: list[np.ndarray] = []
        col = 0
        for t, spec in enumerate(self.ds.tables):
            bag = self.ds.bags.get(t)
            if bag is None:
                parts.append(one_hot[:, col])
                lengths.append(np.ones(b, np.int64))
                col += 1
                continue
            vals, lens = _gather_lists(bag.values, bag.offsets, rows)
            if vals.size and (vals.min() < 0 or vals.max() >= spec.cardinality):
                i = int(np.flatnonzero((vals < 0) | (vals >= spec.cardinality))[0])
                r = int(np.searchsorted(np.cumsum(lens), i, side="right"))
                first = rows.start + r if isinstance(rows, slice) else int(rows[r])
                raise DataFormatError("id out of range for its table", path=str(self.ds.path),
                                      field=spec.name, expected=f"ids in [0, {spec.cardinality})",
                                      found=f"{int(vals[i])} at row {first}")
            parts.append(vals)
            lengths.append(lens)
        offsets = np.zeros(len(self.ds.tables) * b + 1, np.int64)
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
        return np.concatenate(parts), offsets

    def global_ids(self, step: int, offsets: np.ndarray) -> np.ndarray:
        """What the planner plans for ``step``: (B, T) global ids, or for a multi-hot
        dataset (1, L), the global row of every id of every bag (see the module docstring)."""
        if not self.ds.multi_hot:
            return self.sparse_ids(step) + offsets
        values, bag_offsets = self.jagged_ids(step)
        b = self.batch_size_of(step)
        per_table = bag_offsets[b::b] - bag_offsets[:-1:b]  # (T,) ids per table
        return (values + np.repeat(offsets, per_table)).reshape(1, -1)

    def batch_size_of(self, step: int) -> int:
        rows = self.rows(step)
        return rows.stop - rows.start if isinstance(rows, slice) else int(len(rows))

    def batch(self, step: int) -> Batch:
        rows = self.rows(step)
        sparse: torch.Tensor | JaggedIds
        if self.ds.multi_hot:
            values, offsets = self.jagged_ids(step)
            sparse = JaggedIds(torch.from_numpy(values), torch.from_numpy(offsets), len(self.ds.tables))
        else:
            sparse = torch.from_numpy(self.sparse_ids(step))
        # np.array copies: a slice of the read-only map must not become a tensor view of it.
        return Batch(
            dense=torch.from_numpy(np.array(self.ds.dense[rows], dtype=np.float32)),
            sparse=sparse,
            labels=torch.from_numpy(np.array(self.ds.label[rows], dtype=np.float32)),
        )

    def __iter__(self) -> Iterator[Batch]:
        return (self.batch(k) for k in range(self.num_steps))

    def id_stream(self, offsets: np.ndarray, start_step: int = 0,
                  stop_step: int | None = None) -> IdStream:
        """Global ids of steps ``[start_step, stop_step)``: (B, T) int64, local + table offsets
        ((1, L) for a multi-hot dataset, see :meth:`global_ids`)."""
        stop = self.num_steps if stop_step is None else stop_step
        return IdStream(self, np.asarray(offsets, dtype=np.int64), start_step, stop)


class IdStream:
    """The global ids of a range of steps, iterable and sized.

    Sized on purpose: a planner policy may size its profile by the trace
    length (``static`` profiles the first 5% of steps), and the simulator,
    the cost model and the tiered feed must all give it the same length.
    """

    def __init__(self, loader: BatchLoader, offsets: np.ndarray, start: int, stop: int) -> None:
        self.loader, self.offsets, self.start, self.stop = loader, offsets, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[np.ndarray]:
        for k in range(self.start, self.stop):
            yield self.loader.global_ids(k, self.offsets)  # (B, T) global ids; multi-hot (1, L)

    def spread(self, k: int, run: int = 1) -> list[np.ndarray]:
        """About ``k`` steps sampled evenly over the range, in runs of ``run``
        consecutive steps: what a policy that profiles (``static``, FAE) reads
        instead of the first steps, so the sample covers the whole trace."""
        n = len(self)
        if k >= n:
            return list(self)
        run = max(1, min(run, n))
        starts = np.unique(np.linspace(0, n - run, max(1, -(-k // run))).astype(np.int64))
        return [self.loader.global_ids(self.start + int(s) + j, self.offsets)
                for s in starts for j in range(run)]


def split_loaders(dataset: ColumnarDataset, *, batch_size: int, val_fraction: float,
                  max_val_rows: int = 0, epochs: int = 1) -> tuple[BatchLoader, BatchLoader]:
    """Train on the first rows, validate on the last ``val_fraction`` (time order).

    A dataset prepared with a separate validation file (``hotpipe prepare
    TRAIN --val VAL``) trains on all its rows and validates on that file;
    ``val_fraction`` is then not used.
    """
    val_ds = dataset.open_val()
    if val_ds is not None:
        train = BatchLoader(dataset, batch_size=batch_size, drop_last=True, epochs=epochs)
        stop = val_ds.rows if not max_val_rows else min(val_ds.rows, max_val_rows)
        return train, BatchLoader(val_ds, batch_size=batch_size, stop=stop)
    n_val = int(dataset.rows * val_fraction)
    split = dataset.rows - n_val
    val_stop = dataset.rows if not max_val_rows else min(dataset.rows, split + max_val_rows)
    train = BatchLoader(dataset, batch_size=batch_size, start=0, stop=split, drop_last=True,
                        epochs=epochs)
    val = BatchLoader(dataset, batch_size=batch_size, start=split, stop=val_stop)
    return train, val


def _gather_lists(values: np.ndarray, offsets: np.ndarray, rows: slice | np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The lists of ``rows`` of one multi-hot table: (ids (L,) int64, lengths (B,) int64)."""
    if isinstance(rows, slice):  # consecutive rows: one contiguous read
        off = np.asarray(offsets[rows.start:rows.stop + 1], np.int64)
        return np.asarray(values[off[0]:off[-1]], np.int64), np.diff(off)
    starts = np.asarray(offsets[rows], np.int64)
    lengths = np.asarray(offsets[rows + 1], np.int64) - starts
    first = np.zeros(lengths.shape[0], np.int64)
    np.cumsum(lengths[:-1], out=first[1:])
    # id j of the i-th row sits at starts[i] + j
    at = np.repeat(starts - first, lengths) + np.arange(int(lengths.sum()))
    return np.asarray(values[at], np.int64), lengths


class TrainTrace:
    """The one trace of a run's training steps: what ``simulate``, ``profile``'s
    movement counts, the cost model and the tiered feed all plan.

    It is built from the same :func:`split_loaders` call as training (same
    batch size, validation split, epochs, ``drop_last``), so a plan of this
    trace is the plan the tiered feed makes. Sized like the feed's
    :class:`IdStream`: a policy that looks at the trace's length (``static``
    sizes its profile by it) sees the same thing everywhere.

    Args:
        ds: the dataset.
        batch_size, val_fraction, epochs: as in the run's config.
        max_steps: stop after this many steps (0: all training steps).
        order: wraps the training loader when the run reorders its samples
            (``schedule.mode``, :class:`~hotpipe.data.schedule.ScheduledLoader`),
            so the trace plans the steps the run trains.

    Yields:
        (B, T) int64 global ids per step; (1, L) for a multi-hot dataset.
    """

    def __init__(self, ds: ColumnarDataset, *, batch_size: int, val_fraction: float,
                 epochs: int = 1, max_steps: int = 0,
                 order: Callable[[BatchLoader], BatchLoader] | None = None) -> None:
        self.loader: BatchLoader = split_loaders(ds, batch_size=batch_size, val_fraction=val_fraction,
                                                 epochs=epochs)[0]
        if order is not None:
            self.loader = order(self.loader)
        self.layout = TableLayout.of(ds)
        self.num_rows = self.layout.num_rows
        n = len(self.loader)
        self.steps = n if not max_steps else min(max_steps, n)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.loader.id_stream(self.layout.offsets, 0, self.steps))

    def spread(self, k: int, run: int = 1) -> list[np.ndarray]:
        """See :meth:`IdStream.spread`."""
        return self.loader.id_stream(self.layout.offsets, 0, self.steps).spread(k, run)

    def batch_sizes(self) -> np.ndarray:
        """(S,) samples per step (training drops a short last batch, so all are B)."""
        return np.full(self.steps, self.loader.batch_size, dtype=np.int64)
