"""Where a rank keeps the rows it owns: all resident, or tiered behind a planned cache.

A rank owns global rows ``g % W == rank`` (``sharding.py``), addressed by
local id ``g // W``. Two ways to hold them, chosen by ``cache.policy``:

- :class:`DirectShard` (``none``): one slot per owned row, slot = local id.
- :class:`TieredShard` (``lookahead``, ``lru``, ...): the single-process
  tiered feed (``train/tiered_feed.py``: planner, mover thread, host or file
  backing) over the rank's own rows. ``cache.capacity`` applies **per rank**:
  a fraction means a fraction of the rows this rank owns, a row count or a
  size is this rank's fast tier.

What a tiered rank plans: every rank reads the whole global batch, so each
rank knows, without asking, which of its rows any rank will look up at a
step (rows it must serve to peers and then update). That set, as sorted
local ids, is the trace its planner reads (:class:`_OwnedTrace`); replicated
rows are left out (they live in the replica store on every rank). The plan
then keeps exactly the rows the step exchanges resident, and the loop reads
and updates them by slot, as the single-process loop does.

One step of either kind, as the distributed loop sees it::

    for step in shard.steps(loader, start, stop):     # rows of step resident
        slots = step.slots_of(local_ids)               # (N,) -> (N,) slots in shard.store
        ... read shard.store.weights[slots], update by slot ...
        shard.step_done(step.step)                     # its rows may be evicted now
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch

from hotpipe.config import CacheConfig
from hotpipe.data.batch import Batch
from hotpipe.data.layout import TableLayout
from hotpipe.data.loader import BatchLoader
from hotpipe.distributed.sharding import RowSharding, build_shard_store
from hotpipe.errors import ConfigError
from hotpipe.model.sparse_optim import RowOptimizer
from hotpipe.plan.planner import Planner
from hotpipe.storage.slots import RowBlocks, RowSource, SlotStore
from hotpipe.storage.tiered import TieredStore
from hotpipe.train import builders
from hotpipe.train.tiered_feed import TieredFeed


@dataclass
class ShardStep:
    """One global step whose owned rows are resident.

    Attributes:
        step: the global step number.
        batch: the global batch (every rank reads all of it).
        slots_of: (N,) int64 local ids of owned rows this step uses ->
            (N,) int64 slots of the shard's ``store``.
    """

    step: int
    batch: Batch
    slots_of: Callable[[torch.Tensor], torch.Tensor]


class OwnedRows(Protocol):
    """A rank's owned rows, as the exchange and the checkpoints use them."""

    store: SlotStore  # the slots rows are read from and updated in during a step

    def steps(self, loader: BatchLoader, start: int, stop: int) -> Generator[ShardStep, None, None]: ...
    def next_ready(self) -> bool: ...  # the next step can be taken from steps() without waiting
    def step_done(self, step: int) -> None: ...
    def flush(self) -> None: ...
    def read_weights(self, local: torch.Tensor) -> torch.Tensor: ...  # (N,) -> (N, D), after flush
    def write(self, local: torch.Tensor, records: torch.Tensor) -> None: ...  # rows not in flight
    def export(self) -> RowSource: ...  # (num_owned, D+W) in local order, after flush
    def stats(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


def _identity(local: torch.Tensor) -> torch.Tensor:
    return local


class DirectShard:
    """Every owned row resident: slot = local id (the untiered reference)."""

    def __init__(self, *, store: SlotStore) -> None:
        self.store = store

    def steps(self, loader: BatchLoader, start: int, stop: int) -> Generator[ShardStep, None, None]:
        for k in range(start, stop):
            yield ShardStep(k, loader.batch(k), _identity)

    def next_ready(self) -> bool:
        return True

    def step_done(self, step: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def read_weights(self, local: torch.Tensor) -> torch.Tensor:
        return self.store.weights.index_select(0, local)

    def write(self, local: torch.Tensor, records: torch.Tensor) -> None:
        d = self.store.dim
        self.store.weights.index_copy_(0, local, records[:, :d])
        self.store.state.index_copy_(0, local, records[:, d:])

    def export(self) -> RowSource:
        return RowBlocks([[self.store.weights.numpy(), self.store.state.numpy()]])

    def stats(self) -> dict[str, Any]:
        return {"policy": "none"}

    def close(self) -> None:
        pass


@dataclass
class _OwnedBatch:
    """What the tiered feed hands through for a step: the batch and the ids it planned."""

    batch: Batch
    ids: np.ndarray  # (U,) int64 sorted local ids of the owned rows the step uses


class _OwnedTrace:
    """The loader the tiered feed reads: per step, this rank's owned, non-replicated
    rows that any rank looks up, as sorted local ids (U,).

    The feed's mover thread reads ``id_stream`` (the planner's trace, up to a
    window ahead) and then ``batch(s)`` once per step in order, so each
    step's ids are kept from the first until the second and handed on with
    the batch (the main thread never recomputes them).
    """

    def __init__(self, loader: BatchLoader, sharding: RowSharding, replicated: np.ndarray) -> None:
        self.loader, self.sharding = loader, sharding
        self.replicated = np.asarray(replicated, dtype=np.int64)  # ascending
        self.offsets = sharding.layout.offsets
        self.batch_size = loader.batch_size
        self._ids: dict[int, np.ndarray] = {}

    def owned_ids(self, k: int) -> np.ndarray:
        g = (self.loader.sparse_ids(k) + self.offsets).ravel()  # (B*T,) global ids
        w, r = self.sharding.world_size, self.sharding.rank
        mine = np.unique(g[g % w == r])  # (U,) sorted; filtered first: sorts 1/W of the ids
        if len(self.replicated):
            mine = mine[~np.isin(mine, self.replicated, assume_unique=True)]
        return mine // w  # sorted: g -> g // W is monotone on one residue class

    def id_stream(self, offsets: np.ndarray, start: int, stop: int) -> _OwnedIds:
        return _OwnedIds(self, start, stop)

    def batch(self, k: int) -> _OwnedBatch:
        ids = self._ids.pop(k, None)
        return _OwnedBatch(self.loader.batch(k), ids if ids is not None else self.owned_ids(k))


class _OwnedIds:
    """Steps ``[start, stop)`` of an :class:`_OwnedTrace`, sized (policies size profiles by it)."""

    def __init__(self, trace: _OwnedTrace, start: int, stop: int) -> None:
        self.trace, self.start, self.stop = trace, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[np.ndarray]:
        for k in range(self.start, self.stop):
            ids = self.trace.owned_ids(k)
            self.trace._ids[k] = ids
            yield ids


class TieredShard:
    """This rank's rows in a tiered store: a planned fast tier over host or file backing.

    Args:
        feed: the single-process tiered feed over the rank's local row space
            (``sharding.local_layout()``), built by :func:`build_owned_rows`.
        sharding: who owns which row.
        replicated: (H,) ascending global ids held by every rank (never planned here).
    """

    def __init__(self, *, feed: TieredFeed, sharding: RowSharding, replicated: np.ndarray) -> None:
        if feed.depth < 1:
            # The loop takes step s+1 before step s is done; at depth 0 the mover
            # would wait for step s to finish before making s+1 resident: a deadlock.
            raise ConfigError("cache.depth", f"expected >= 1 for tiered ranks, found {feed.depth}")
        self.feed, self.sharding = feed, sharding
        self.replicated = np.asarray(replicated, dtype=np.int64)
        self.store = feed.store

    def steps(self, loader: BatchLoader, start: int, stop: int) -> Generator[ShardStep, None, None]:
        trace = _OwnedTrace(loader, self.sharding, self.replicated)
        for inp in self.feed.steps(cast(BatchLoader, trace), start, stop):
            owned = cast(_OwnedBatch, inp.batch)
            yield ShardStep(inp.step, owned.batch, _slot_map(owned.ids, inp.slots))

    def next_ready(self) -> bool:
        return self.feed.next_ready()

    def step_done(self, step: int) -> None:
        self.feed.step_done(step)

    def flush(self) -> None:
        self.feed.flush()

    def read_weights(self, local: torch.Tensor) -> torch.Tensor:
        # contiguous: the rows go straight into an all_to_all
        return self.feed.tiers.backing.read(local)[:, : self.store.dim].contiguous()

    def write(self, local: torch.Tensor, records: torch.Tensor) -> None:
        # Only rows the cache does not hold: replicated rows (never planned
        # here) and every row before the first step (a checkpoint load).
        self.feed.tiers.backing.write(local, records)

    def export(self) -> RowSource:
        return self.feed.export()

    def stats(self) -> dict[str, Any]:
        st = self.feed.stats.as_dict()
        resident = int((self.feed.tiers.slot_ids >= 0).sum())
        # Slots start empty, each fetch fills one, each eviction frees one.
        return {**st, "slots": self.store.num_slots, "evictions": st["rows_fetched"] - resident}

    def close(self) -> None:
        self.feed.close()


def _slot_map(ids: np.ndarray, slots: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """(U,) sorted local ids and their (U,) slots -> a map of any subset of ids to slots."""
    keys = torch.from_numpy(ids)

    def slots_of(local: torch.Tensor) -> torch.Tensor:
        return slots.index_select(0, torch.searchsorted(keys, local))

    return slots_of


def backing_dir(c: CacheConfig, run_dir: Path | None, rank: int) -> Path:
    """Rank ``rank``'s own table-file directory: ``(cache.backing_dir or RUN/tables)/rank-R``.

    One directory per rank, each locked by its ``FileBacking`` while open:
    two ranks never share a table file, and two runs sharing a backing_dir
    are refused by the lock.
    """
    if c.backing_dir is None and run_dir is None:
        raise ConfigError("cache.backing_dir", "file backing needs a directory; found none "
                                               "(set cache.backing_dir or give the run directory)")
    base = Path(c.backing_dir) if c.backing_dir is not None else Path(cast(Path, run_dir)) / "tables"
    return base / f"rank-{rank}"


def build_owned_rows(c: CacheConfig, *, sharding: RowSharding, dim: int, optimizer: RowOptimizer,
                     seed: int, replicated: np.ndarray, run_dir: Path | None = None) -> OwnedRows:
    """This rank's rows for ``cache.policy``: a :class:`DirectShard` or a :class:`TieredShard`.

    The tiered store's backing starts with the single-process bits of the
    rank's rows (:meth:`RowSharding.init_owned` written over the backing's
    own initial fill; one extra pass over the shard at start).

    Raises:
        ConfigError: no directory for file backing.
        CapacityError: (while training) ``cache.capacity`` per rank is smaller
            than the rows one rank's in-flight steps use.
        LockError: the rank's table directory is in use by another process.
    """
    local = sharding.local_layout()
    if c.policy == "none" or local.num_rows == 0:  # a rank owning nothing has nothing to tier
        return DirectShard(store=build_shard_store(sharding, dim=dim, optimizer=optimizer, seed=seed))
    slots = builders.capacity_rows(c, local, dim, optimizer)
    planner = Planner(num_rows=local.num_rows, capacity=slots, window=c.window, depth=c.depth,
                      policy=c.policy)
    per_rank = c.model_copy(update={"backing_dir": str(backing_dir(c, run_dir, sharding.rank))}) \
        if c.backing == "file" else c
    # Tables of which this rank owns no row (fewer rows than ranks) hold no
    # file: the local id space is the same without them.
    files = TableLayout([n for n in local.cardinalities if n])
    backing = builders.build_backing(per_rank, layout=files, dim=dim, optimizer=optimizer, seed=seed,
                                     run_dir=run_dir or Path("."))

    def put(s0: int, rows: torch.Tensor) -> None:
        rec = torch.cat([rows, optimizer.init_state(len(rows), dim)], dim=1)
        backing.write(torch.arange(s0, s0 + len(rows), dtype=torch.int64), rec)

    try:
        sharding.init_owned(dim, seed, put)
        backing.flush()
    except BaseException:
        backing.close()  # releases the table directory's lock
        raise
    cache = SlotStore.allocate(slots, dim, optimizer)
    tiers = TieredStore(cache=cache, backing=backing, layout=local)
    return TieredShard(feed=TieredFeed(tiers=tiers, planner=planner, layout=local),
                       sharding=sharding, replicated=replicated)
