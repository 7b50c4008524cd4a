"""The simulated fast tier: which row sits in which slot, and per-row history.

Every array here is indexed by global row id and sized ``num_rows``, so a
step's work is a handful of gathers and scatters over its own ids, never a
pass over the cache. int32 keeps the arrays at 12 bytes per row (plus 4 of
scratch); steps and slots must therefore stay below 2**31 - 1.
"""

from __future__ import annotations

import numpy as np

from hotpipe.errors import DataFormatError
from hotpipe.plan.types import StepRecord

#: ``last_use`` of a row never used: below any ``step - depth``.
NO_USE = np.iinfo(np.int32).min
#: Access counts saturate here so that int32 never overflows.
FREQ_CAP = 1 << 30


class CacheState:
    """Slots, residency and access history, shared by the planner and its policy.

    A row is *pinned* at step ``s`` when a step in ``s-d .. s`` uses it, i.e.
    ``last_use >= s - depth``; pinned rows must stay resident. ``step`` is the
    step being planned; steps ``step .. step + window - 1`` have been read.

    Attributes:
        slot_of: (num_rows,) int32, the row's slot, -1 when not resident.
        last_use: (num_rows,) int32, last planned step that used the row.
        freq: (num_rows,) int32, lookups so far (saturating at ``FREQ_CAP``).
    """

    def __init__(self, num_rows: int, capacity: int, depth: int, window: int) -> None:
        self.num_rows, self.capacity = num_rows, capacity
        self.depth, self.window = depth, window
        self.step = 0
        self.slot_of = np.full(num_rows, -1, dtype=np.int32)
        self.last_use = np.full(num_rows, NO_USE, dtype=np.int32)
        self.freq = np.zeros(num_rows, dtype=np.int32)
        self._mark = np.zeros(num_rows, dtype=np.int32)  # scratch of `record`
        # A stack of free slots; the top is the end. Initially 0 is on top.
        self._free = np.arange(capacity - 1, -1, -1, dtype=np.int32)
        self._nfree = capacity

    @property
    def num_free(self) -> int:
        return self._nfree

    @property
    def unpinned_below(self) -> int:
        """Rows with ``last_use`` below this are not pinned at ``step``."""
        return self.step - self.depth

    def evictable(self, ids: np.ndarray) -> np.ndarray:
        """(n,) bool: resident and not pinned at the current step."""
        return (self.slot_of.take(ids) >= 0) & (self.last_use.take(ids) < self.unpinned_below)

    def evict(self, ids: np.ndarray) -> np.ndarray:
        """Take ``ids`` out of the tier; return their (n,) int64 slots, now free."""
        slots = self.slot_of.take(ids).astype(np.int64)
        self.slot_of[ids] = -1
        n = slots.shape[0]
        self._free[self._nfree : self._nfree + n] = slots
        self._nfree += n
        return slots

    def place(self, ids: np.ndarray) -> np.ndarray:
        """Put non-resident ``ids`` (n,) into free slots; return the (n,) int64 slots.

        Slots freed last are reused first, so a step's evictions feed its own
        fetches.
        """
        n = ids.shape[0]
        if n > self._nfree:
            raise RuntimeError(f"planner bug: placing {n} rows with {self._nfree} free slots")
        slots = self._free[self._nfree - n : self._nfree][::-1].astype(np.int64)
        self._nfree -= n
        self.slot_of[ids] = slots
        return slots

    def record(self, step: int, ids: np.ndarray) -> StepRecord:
        """Check a step's ids and find its distinct ids without sorting.

        Scatter each lookup's position into a per-row scratch array; the one
        position per row that survives the scatter is that row's
        representative. This is O(L) where ``np.unique`` is O(L log L).

        Args:
            step: the step number (for error messages).
            ids: any shape, any integer dtype: global row ids.

        Raises:
            DataFormatError: an id is negative or not below ``num_rows``.
        """
        ids = checked_ids(step, ids, self.num_rows)
        flat = ids.reshape(-1)
        pos = np.arange(flat.shape[0], dtype=np.int32)
        mark = self._mark
        mark[flat] = pos
        uniq = flat[mark.take(flat) == pos]
        mark[uniq] = np.arange(uniq.shape[0], dtype=np.int32)
        return StepRecord(step, ids.shape, uniq, mark.take(flat))


def checked_ids(step: int, ids: np.ndarray, num_rows: int) -> np.ndarray:
    """``ids`` as int64 (same shape), after checking they are row ids.

    Raises:
        DataFormatError: not integers, or an id outside ``[0, num_rows)``.
    """
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise DataFormatError(f"step {step}: ids must be integers", expected="an integer array",
                              found=str(ids.dtype))
    ids = ids.astype(np.int64, copy=False)
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= num_rows):
        bad = ids[(ids < 0) | (ids >= num_rows)][0]
        raise DataFormatError(f"step {step}: row id out of range",
                              expected=f"0 <= id < num_rows={num_rows}", found=str(bad))
    return ids
