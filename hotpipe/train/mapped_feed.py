"""The memory-mapped feed: every row read and updated in place in a file map.

The baseline for tables bigger than RAM: no cache, no planner, no mover
thread. The :class:`SlotStore`'s ``weights`` and ``state`` are strided views
into a :class:`~hotpipe.storage.backing.FileBacking`'s map (slot = global
row), so a lookup is a page fault whenever a row's page is not in the OS page
cache, and an update dirties the page for the kernel to write back whenever
it likes. This is what "just mmap the table" gives you::

    file record r:  [ w_0 .. w_{D-1} | s_0 .. s_{W-1} ]     (D + W) float32
    store.weights   = map[:, :D]   (R, D) view, row stride D + W
    store.state     = map[:, D:]   (R, W) view, row stride D + W

Only single-table datasets are supported: FileBacking keeps one file (one
map) per table, and a SlotStore needs one tensor over the fused row space.
Stitching several maps into one address range would need ``MAP_FIXED``
tricks that numpy/torch do not expose, and the benchmark this feed exists
for (``benchmarks/bench_bigger_than_ram.py``) uses one huge table anyway.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from hotpipe.data.loader import BatchLoader
from hotpipe.errors import ConfigError
from hotpipe.storage.backing import FileBacking
from hotpipe.storage.slots import RowSource, SlotStore
from hotpipe.train.feed import FeedStats, StepInput, global_slots


class MappedFeed:
    """Every row in a memory-mapped file, read and written through the page cache.

    Args:
        backing: a :class:`FileBacking` over exactly one table; the feed takes
            ownership (``close()`` closes it).
        dim: embedding dimension D (the record's first D floats are weights).

    Raises:
        ConfigError: (key ``cache.backing``) the backing holds more than one
            table, or ``dim`` does not fit in its records.

    Example:
        >>> backing = FileBacking(directory=d, cardinalities=[1000], dim=16,  # doctest: +SKIP
        ...                       optimizer=opt, seed=0)
        >>> feed = MappedFeed(backing=backing, dim=16)  # a drop-in for DirectFeed
    """

    def __init__(self, *, backing: FileBacking, dim: int) -> None:
        if len(backing.tensors) != 1:
            raise ConfigError("cache.backing", f"a memory-mapped feed needs a file backing with "
                                               f"exactly one table; found {len(backing.tensors)} "
                                               f"tables (cardinalities {backing.cards})")
        if not 0 < dim <= backing.width:
            raise ConfigError("model.embedding_dim", f"expected 1..{backing.width} (the backing's "
                                                     f"record width); found {dim}")
        self.backing = backing
        table = backing.tensors[0]  # (R, D+W) over the map
        # dirty is never read back (nothing is written back: the map is the
        # table) but SparseEmbedding sets it; a plain tensor, 1 byte per row.
        self.store = SlotStore(weights=table[:, :dim], state=table[:, dim:],
                               dirty=torch.zeros(table.shape[0], dtype=torch.bool))
        self.stats = FeedStats()
        self._zero = torch.zeros(1, dtype=torch.int64)  # the one table starts at row 0

    def steps(self, loader: BatchLoader, start: int, stop: int) -> Iterator[StepInput]:
        for k in range(start, stop):
            batch = loader.batch(k)
            # one table: local id = global row = slot (a multi-hot batch: one per id, (1, L))
            yield StepInput(k, batch, global_slots(batch, self._zero))

    def step_done(self, step: int) -> None:
        pass

    def flush(self) -> None:
        """Write the map's dirty pages to the file (msync)."""
        self.backing.flush()

    def read_rows(self, global_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) global ids -> (B, T, D) current weights (for evaluation)."""
        b, t = global_ids.shape
        return self.store.weights.index_select(0, global_ids.reshape(-1)).view(b, t, -1)

    def export(self) -> RowSource:
        return self.backing.export()

    def load(self, records: np.ndarray) -> None:
        self.backing.load(records)

    def close(self) -> None:
        self.backing.close()
