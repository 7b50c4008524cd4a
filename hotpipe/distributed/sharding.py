"""Row-wise partitioning of the fused row space over ranks.

Global row ``g`` (``data/layout.py``'s fused id) is owned by rank ``g % W``
and sits in that rank's store at local slot ``g // W``::

    global rows   0  1  2  3  4  5  6  7  8 ...      (W = 3)
    owner         0  1  2  0  1  2  0  1  2
    local slot    0  0  0  1  1  1  2  2  2

Why round-robin rather than contiguous blocks: ids are hashed, but the
hottest rows of every table still cluster wherever the preprocessing put
them, and contiguous blocks would hand whole tables (and their hot heads)
to one rank. Round-robin spreads each table's rows, hot or not, evenly, so
every rank stores ~R/W rows and serves ~1/W of the lookups. It is also the
layout ``placement/ranks.py`` models, so its predicted bytes describe this
runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hotpipe._fs import check_memory
from hotpipe.data.layout import TableLayout
from hotpipe.errors import ConfigError
from hotpipe.model.sparse_optim import RowOptimizer
from hotpipe.storage.init import init_rows
from hotpipe.storage.slots import FLOAT_BYTES, SlotStore


@dataclass(frozen=True)
class RowSharding:
    """Which rank owns a row, and where in its store.

    Args:
        layout: the tables' fused row space.
        world_size: ranks W.
        rank: this process.

    Raises:
        ConfigError: a table has fewer rows than there are ranks (some rank
            would own none of it), or the rank is out of range.

    Example:
        >>> sh = RowSharding(TableLayout([4, 3]), world_size=2, rank=1)
        >>> sh.num_owned, sh.owned_rows().tolist(), sh.owner(torch.tensor([5, 6])).tolist()
        (3, [1, 3, 5], [1, 0])
    """

    layout: TableLayout
    world_size: int
    rank: int

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ConfigError("rank", f"expected 0 <= rank < {self.world_size}, found {self.rank}")
        for name, card in zip(self.layout.names, self.layout.cardinalities, strict=True):
            if card < self.world_size:
                raise ConfigError("world_size", f"table {name} has {card} rows, fewer than the "
                                                f"{self.world_size} ranks it is partitioned over; "
                                                "use fewer ranks (each rank must own rows of every table)")

    @property
    def num_owned(self) -> int:
        """Rows this rank owns: ceil((R - rank) / W)."""
        return -(-(self.layout.num_rows - self.rank) // self.world_size)

    def owner(self, global_ids: torch.Tensor) -> torch.Tensor:
        """(N,) int64 global ids -> (N,) owning rank."""
        return global_ids.remainder(self.world_size)

    def local(self, global_ids: torch.Tensor) -> torch.Tensor:
        """(N,) int64 global ids owned by this rank -> (N,) slots of its store."""
        return global_ids.div(self.world_size, rounding_mode="floor")

    def owned_rows(self) -> torch.Tensor:
        """(num_owned,) int64 global ids of this rank's rows, in slot order."""
        return torch.arange(self.rank, self.layout.num_rows, self.world_size, dtype=torch.int64)


def build_shard_store(sharding: RowSharding, *, dim: int, optimizer: RowOptimizer,
                      seed: int) -> SlotStore:
    """This rank's rows, untiered (slot = local row), initialised to the same bits
    as the single-process store (``storage/init.py`` draws by global row).

    Every rank draws every chunk and keeps its own rows: one chunk
    (``CHUNK_ROWS`` rows) is in memory at a time, and drawing is cheap next
    to training, so no rank needs another's generator state.
    """
    n = sharding.num_owned
    check_memory(n * (dim + optimizer.state_width) * FLOAT_BYTES,
                 f"rank {sharding.rank}'s {n} rows (dim {dim})", "use more ranks or a smaller dim")
    store = SlotStore.allocate(n, dim, optimizer)
    w, r = sharding.world_size, sharding.rank

    def put(g0: int, rows: torch.Tensor) -> None:
        first = (r - g0) % w  # offset in this chunk of the first row we own
        mine = rows[first::w]  # (m, D): global rows g0+first, g0+first+W, ...
        s0 = (g0 + first) // w
        store.weights[s0:s0 + len(mine)].copy_(mine)

    init_rows(list(sharding.layout.cardinalities), dim, seed, put)
    return store
