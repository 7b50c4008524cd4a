"""Hot rows kept on every rank (BagPipe's logically replicated, physically partitioned layout).

~1% of rows take ~90% of lookups, so a handful of rows held by every rank
removes most of the row exchange. A replicated row is read from the local
copy; its gradient is all-reduced over the rows the step touched (every
rank knows which from the global batch), and every rank applies the same
row update to its copy, so the copies never diverge.

The owner's slot of a replicated row (``sharding.py``) is not used while the
row is replicated; ``RowExchange.write_back`` copies the replica there
when a complete shard is needed (final weights, evaluation, checkpoints).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hotpipe._fs import check_memory
from hotpipe.capacity import Capacity
from hotpipe.config import DistConfig
from hotpipe.data.layout import TableLayout
from hotpipe.data.loader import BatchLoader
from hotpipe.errors import ConfigError
from hotpipe.model.embedding import SparseEmbedding
from hotpipe.model.sparse_optim import RowOptimizer
from hotpipe.placement.ranks import hottest_rows
from hotpipe.storage.init import init_rows
from hotpipe.storage.slots import SlotStore, record_bytes


def replica_count(d: DistConfig, layout: TableLayout, dim: int, optimizer: RowOptimizer) -> int:
    """Rows ``dist.replicate`` asks every rank to hold.

    Spelled like a capacity (``hotpipe/capacity.py``): a fraction of all rows,
    a row count, or a per-rank memory budget (``64MiB``: as many of the
    hottest rows as fit, weights + optimizer state, ``record_bytes`` each).
    Nothing is clamped: a budget that cannot be met is an error.

    Raises:
        ConfigError: a row count or budget larger than all rows (naming
            ``dist.replicate``, the most that makes sense and what was found).
        ResourceError: a budget (or row count) whose replicas need more memory
            than the machine has available (``_fs.check_memory``).
    """
    if isinstance(d.replicate, int) and d.replicate == 0:
        return 0
    spec = Capacity.parse(d.replicate, "dist.replicate")
    rb = record_bytes(dim, optimizer)
    total = layout.num_rows
    if spec.kind == "rows" and spec.value > total:
        raise ConfigError("dist.replicate", f"expected at most {total} rows (all rows of every "
                                            f"table), found {int(spec.value)}")
    if spec.kind == "bytes" and spec.value > total * rb:
        raise ConfigError("dist.replicate", f"expected a budget of at most {total * rb} bytes "
                                            f"(all {total} rows of {rb} bytes), found "
                                            f"{int(spec.value)} bytes ({d.replicate})")
    n = spec.rows(total, rb)
    need = int(spec.value) if spec.kind == "bytes" else n * rb
    check_memory(need, f"dist.replicate={d.replicate} ({n} rows of {rb} bytes on every rank)",
                 "expected a budget that fits in this machine's free memory; lower dist.replicate")
    return n


def choose_replicated(loader: BatchLoader, layout: TableLayout, count: int,
                      profile_steps: int) -> np.ndarray:
    """The ``count`` most looked-up rows of the first ``profile_steps`` steps: (count,) int64 ascending.

    Every rank reads the same steps, so every rank picks the same rows.
    """
    if count < 0 or count > layout.num_rows:
        raise ConfigError("dist.replicate", f"expected 0..{layout.num_rows} rows, found {count}")
    steps = min(max(profile_steps, 1), len(loader))
    ids = (loader.sparse_ids(k) + layout.offsets for k in range(steps))
    return hottest_rows(ids, layout.num_rows, count)


@dataclass
class ReplicaSet:
    """The replicated rows, the same on every rank.

    Attributes:
        rows: (H,) int64 global ids, ascending (slot i holds ``rows[i]``).
        store: (H, D) weights and their optimizer state.
        embedding: the row optimizer over ``store``.
    """

    rows: torch.Tensor
    store: SlotStore
    embedding: SparseEmbedding

    @classmethod
    def build(cls, rows: np.ndarray, *, layout: TableLayout, dim: int, optimizer: RowOptimizer,
              seed: int) -> ReplicaSet:
        """Copies of ``rows`` with the single-process initial bits (``storage/init.py``)."""
        r = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        if len(r) and (bool((r[1:] <= r[:-1]).any()) or int(r[0]) < 0 or int(r[-1]) >= layout.num_rows):
            raise ConfigError("dist.replicate", f"expected distinct ascending row ids in "
                                                f"[0, {layout.num_rows}), found {r.tolist()[:10]}...")
        store = SlotStore.allocate(len(r), dim, optimizer)

        def put(g0: int, chunk: torch.Tensor) -> None:
            lo, hi = np.searchsorted(r.numpy(), [g0, g0 + len(chunk)])
            if hi > lo:
                store.weights[lo:hi].copy_(chunk[r[lo:hi] - g0])

        if len(r):
            init_rows(list(layout.cardinalities), dim, seed, put)
        return cls(r, store, SparseEmbedding(store=store, optimizer=optimizer))

    def __len__(self) -> int:
        return len(self.rows)

    def slots(self, global_ids: torch.Tensor) -> torch.Tensor:
        """(N,) replicated global ids -> (N,) slots of the replica store."""
        return torch.searchsorted(self.rows, global_ids)

    def records(self, global_ids: torch.Tensor) -> torch.Tensor:
        """(M,) replicated global ids -> (M, D+W) their records (weights, then optimizer state)."""
        s = self.slots(global_ids)
        return torch.cat([self.store.weights.index_select(0, s), self.store.state.index_select(0, s)],
                         dim=1)
