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

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from hotpipe._fs import check_memory
from hotpipe.data.layout import TableLayout
from hotpipe.errors import ConfigError
from hotpipe.model.sparse_optim import RowOptimizer
from hotpipe.placement import exchange_model
from hotpipe.storage.init import init_rows
from hotpipe.storage.slots import FLOAT_BYTES, SlotStore


@dataclass(frozen=True)
class RowSharding:
    """Which rank owns a row, and where in its store.

    Args:
        layout: the tables' fused row space.
        world_size: ranks W.
        rank: this process.

    A table with fewer rows than ranks leaves some ranks owning none of its
    rows; that is fine here (local slots stay contiguous), and the runtime
    replicates such tables on every rank (``small_table_rows``), so no rank
    ever asks for them.

    Raises:
        ConfigError: the rank is out of range.

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

    def local_layout(self) -> TableLayout:
        """This rank's rows as a layout of their own: table t holds the owned rows of t.

        Owned rows of a table are contiguous in local slots (global ``g = r + W*i``
        lies in ``[a, b)`` iff ``i`` lies in ``[ceil((a-r)/W), ceil((b-r)/W))``),
        so a per-rank tiered store can keep per-table files and counters.

        Example:
            >>> RowSharding(TableLayout([4, 3]), world_size=2, rank=1).local_layout().cardinalities
            (2, 1)
        """
        w, r = self.world_size, self.rank
        first = -((r - self.layout.bounds) // w)  # (T+1,) ceil((bound - r) / W)
        return TableLayout(np.diff(first).tolist(), self.layout.names)

    def init_owned(self, dim: int, seed: int, put: Callable[[int, torch.Tensor], None]) -> None:
        """Call ``put(first_slot, rows (n, D))`` with this rank's initial rows, the same
        bits as the single-process store (``storage/init.py`` draws by global row).

        Every rank draws every chunk and keeps its own rows: one chunk
        (``CHUNK_ROWS`` rows) is in memory at a time, and drawing is cheap next
        to training, so no rank needs another's generator state.
        """
        w, r = self.world_size, self.rank

        def mine(g0: int, rows: torch.Tensor) -> None:
            first = (r - g0) % w  # offset in this chunk of the first row we own
            own = rows[first::w]  # (m, D): global rows g0+first, g0+first+W, ...
            if len(own):
                put((g0 + first) // w, own)

        init_rows(list(self.layout.cardinalities), dim, seed, mine)


def small_table_rows(layout: TableLayout, world_size: int) -> np.ndarray:
    """(N,) int64 ascending global rows of the tables with fewer rows than ranks.

    Such a table cannot give every rank rows (Criteo has 3- and 4-row tables),
    and a handful of rows costs nothing to hold everywhere: the runtime
    replicates them on every rank, which keeps the result exact (their
    gradients are all-reduced like any replicated row's).
    """
    # One rule for the runtime and the cost model that predicts its bytes.
    return exchange_model.small_table_rows(layout.cardinalities, world_size)


def build_shard_store(sharding: RowSharding, *, dim: int, optimizer: RowOptimizer,
                      seed: int) -> SlotStore:
    """This rank's rows, untiered (slot = local row), initialised to the same bits
    as the single-process store (:meth:`RowSharding.init_owned`)."""
    n = sharding.num_owned
    check_memory(n * (dim + optimizer.state_width) * FLOAT_BYTES,
                 f"rank {sharding.rank}'s {n} rows (dim {dim})",
                 "use more ranks, a smaller dim, or a tiered run (cache.policy=lookahead)")
    store = SlotStore.allocate(n, dim, optimizer)

    def put(s0: int, rows: torch.Tensor) -> None:
        store.weights[s0:s0 + len(rows)].copy_(rows)

    sharding.init_owned(dim, seed, put)
    return store
