"""Feeds: what the training loop iterates — each step's batch plus the slots
its rows occupy in the fast tier, once they are resident.

``DirectFeed`` keeps every row in one :class:`SlotStore` (untiered: slot =
global row). The tiered feed (``train/tiered_feed.py``) plans with lookahead
and moves rows between tiers in the background; the loop cannot tell them
apart, which is what the exactness tests rely on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from hotpipe.data.batch import Batch
from hotpipe.data.layout import TableLayout
from hotpipe.data.loader import BatchLoader
from hotpipe.storage.slots import RowBlocks, RowSource, SlotStore, copy_rows
from hotpipe.storage.tiered import MoveCounts


@dataclass
class StepInput:
    step: int
    batch: Batch
    # (B, T) int64 slots in the feed's SlotStore; for a multi-hot batch (1, L):
    # the slot of each id of ``batch.sparse.values`` (model/bags.py)
    slots: torch.Tensor


@dataclass
class FeedStats:
    """Cumulative counters (all zero for an untiered feed).

    ``moves`` is the tiered store's own counter object (shared, not copied),
    so rows/bytes moved are never out of date.
    """

    hits: int = 0
    misses: int = 0
    stall_seconds: float = 0.0
    moves: MoveCounts = field(default_factory=MoveCounts)
    per_table: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        lookups = self.hits + self.misses
        return {
            "hits": self.hits, "misses": self.misses,
            "hit_rate": self.hits / lookups if lookups else 1.0,
            **asdict(self.moves),
            "stall_seconds": self.stall_seconds,
            "per_table": self.per_table,
        }


class Feed(Protocol):
    store: SlotStore
    stats: FeedStats

    def steps(self, loader: BatchLoader, start: int, stop: int) -> Iterator[StepInput]: ...
    def step_done(self, step: int) -> None: ...
    def flush(self) -> None: ...
    def read_rows(self, global_ids: torch.Tensor) -> torch.Tensor: ...
    def export(self) -> RowSource: ...
    def load(self, records: np.ndarray) -> None: ...
    def close(self) -> None: ...


def global_slots(batch: Batch, table_offsets: torch.Tensor) -> torch.Tensor:
    """Global rows of a batch's lookups: (B, T) one-hot; (1, L) multi-hot, one per id."""
    if isinstance(batch.sparse, torch.Tensor):
        return batch.sparse + table_offsets
    return batch.sparse.global_rows(table_offsets).view(1, -1)


class DirectFeed:
    """Every row resident: the untiered reference.

    Args:
        store: one slot per global row, initialised
            (``train/builders.py:build_direct_store``).
        layout: the tables' row ranges (local -> global ids).
    """

    def __init__(self, *, store: SlotStore, layout: TableLayout) -> None:
        if store.num_slots != layout.num_rows:
            raise ValueError(f"an untiered store needs one slot per row: {store.num_slots} "
                             f"slots for {layout.num_rows} rows")
        self.store, self.layout = store, layout
        self.offsets = torch.from_numpy(layout.offsets.copy())
        self.stats = FeedStats()

    def steps(self, loader: BatchLoader, start: int, stop: int) -> Iterator[StepInput]:
        for k in range(start, stop):
            batch = loader.batch(k)
            yield StepInput(k, batch, global_slots(batch, self.offsets))

    def step_done(self, step: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def read_rows(self, global_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) global ids -> (B, T, D) current weights (for evaluation), contiguous."""
        b, t = global_ids.shape
        return self.store.weights.index_select(0, global_ids.reshape(-1)).view(b, t, -1)

    def export(self) -> RowSource:
        return RowBlocks([[self.store.weights.numpy(), self.store.state.numpy()]])

    def load(self, records: np.ndarray) -> None:
        d = self.store.dim
        copy_rows(self.store.weights, records[:, :d])
        copy_rows(self.store.state, records[:, d:])

    def close(self) -> None:
        pass
