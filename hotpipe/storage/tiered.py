"""The tiered store: a fixed-slot fast cache in front of a backing tier.

It applies :class:`~hotpipe.plan.types.StepPlan` s — write back evicted
dirty rows, read fetched rows — and keeps the counters the trainer reports.
It does not decide anything: the planner did, and the pipeline
(``train/tiered_feed.py``) decides when plans are applied and when compute
waits for them.

Row records are ``[weights | optimizer state]``; the cache stores them in a
:class:`~hotpipe.storage.slots.SlotStore` (tensors indexed by slot)
that the embedding module reads and updates directly.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from hotpipe.data.layout import TableLayout
from hotpipe.plan.types import StepPlan
from hotpipe.storage.backing import BackingStore
from hotpipe.storage.slots import FLOAT_BYTES, SlotStore


@dataclass
class MoveCounts:
    rows_fetched: int = 0
    rows_written_back: int = 0
    bytes_fetched: int = 0
    bytes_written_back: int = 0


class TieredStore:
    """Cache slots + backing rows; applies plans in order.

    Args:
        cache: the fast tier's slots (on the training device).
        backing: the complete table (host RAM or files).
        layout: the tables' row ranges, for per-table counters.
    """

    def __init__(self, *, cache: SlotStore, backing: BackingStore, layout: TableLayout) -> None:
        self.cache = cache
        self.backing = backing
        self.layout = layout
        self.dim = cache.dim
        self.bounds = torch.from_numpy(layout.bounds)
        # slot -> global id held there (-1 = free); needed by flush().
        self.slot_ids = torch.full((cache.num_slots,), -1, dtype=torch.int64)
        self.counts = MoveCounts()
        self.fetched_per_table = torch.zeros(layout.num_tables, dtype=torch.int64)
        self._lock = threading.Lock()  # apply() and flush() never interleave

    def _records(self, slots: torch.Tensor) -> torch.Tensor:
        """(M,) slots -> (M, D+W) records read from the cache, on the host."""
        w = self.cache.weights.index_select(0, slots)
        s = self.cache.state.index_select(0, slots)
        return torch.cat([w, s], dim=1).cpu()

    def _write_back(self, ids: torch.Tensor, slots: torch.Tensor) -> None:
        dirty = self.cache.dirty.index_select(0, slots.to(self.cache.dirty.device)).cpu()
        if bool(dirty.any()):
            ids, slots = ids[dirty], slots[dirty]
            self.backing.write(ids, self._records(slots.to(self.cache.weights.device)))
            self.counts.rows_written_back += int(ids.numel())
            self.counts.bytes_written_back += int(ids.numel()) * self.backing.width * FLOAT_BYTES

    def apply(self, plan: StepPlan) -> None:
        """Evict (write back dirty rows) then fetch, synchronously."""
        with self._lock:
            dev = self.cache.weights.device
            if plan.evict_ids.size:
                ids = torch.from_numpy(plan.evict_ids)
                slots = torch.from_numpy(plan.evict_slots)
                self._write_back(ids, slots)
                self.slot_ids[slots] = -1
            if plan.fetch_ids.size:
                ids = torch.from_numpy(plan.fetch_ids)
                slots = torch.from_numpy(plan.fetch_slots)
                rec = self.backing.read(ids)  # (M, D+W) host
                slots_dev = slots.to(dev)
                rec_dev = rec.to(dev, non_blocking=True)
                self.cache.weights.index_copy_(0, slots_dev, rec_dev[:, : self.dim])
                if self.cache.state.shape[1]:
                    self.cache.state.index_copy_(0, slots_dev, rec_dev[:, self.dim:])
                self.cache.dirty.index_fill_(0, slots_dev, False)
                self.slot_ids[slots] = ids
                n = int(ids.numel())
                self.counts.rows_fetched += n
                self.counts.bytes_fetched += n * self.backing.width * FLOAT_BYTES
                table = torch.searchsorted(self.bounds, ids, right=True) - 1
                self.fetched_per_table += torch.bincount(table, minlength=len(self.fetched_per_table))

    def flush(self) -> None:
        """Write every dirty resident row back: the backing tier is then complete."""
        with self._lock:
            if self.cache.weights.is_cuda:  # copies queued on the mover's stream land first
                torch.cuda.synchronize(self.cache.weights.device)
            slots = torch.nonzero(self.cache.dirty.cpu() & (self.slot_ids >= 0)).squeeze(1)
            if slots.numel():
                self._write_back(self.slot_ids[slots], slots)
                self.cache.dirty[slots.to(self.cache.dirty.device)] = False
            self.backing.flush()

    def close(self) -> None:
        self.backing.close()
