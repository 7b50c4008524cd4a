"""The tiered feed: plan ahead, move rows in the background, compute.

Three things run at once (DESIGN.md's pipeline)::

    mover thread:  plan step k+W ... apply plan k+1 (write back, fetch)
    main thread:   compute step k  (lookup by slot, forward, backward, update)

The mover applies the plan of step ``s`` only after step ``s - depth - 1``
has finished its update: the planner pinned every row of steps
``s-depth .. s``, so any row it evicts was last touched by a finished step
(FBGEMM's hazard "prefetch evicts a row an in-flight batch needs" cannot
happen), and a row updated by step ``t`` stays in its slot for step ``t+1``
(the "dirty cache" hazard cannot happen either).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from hotpipe.data.loader import BatchLoader
from hotpipe.model.sparse_optim import RowOptimizer
from hotpipe.plan.planner import Planner
from hotpipe.storage.backing import BackingStore, FileBacking, HostBacking
from hotpipe.storage.slots import SlotStore
from hotpipe.storage.tiered import TieredStore
from hotpipe.train.checkpoint import RowSource
from hotpipe.train.feed import FeedStats, StepInput

if TYPE_CHECKING:
    from hotpipe.config import RunConfig

_DONE = object()


class TieredFeed:
    """Feeds steps whose rows the planner made resident in a small fast tier.

    Args:
        tiers: the cache + backing store.
        cardinalities: rows per table.
        capacity: cache slots (rows).
        policy: planner policy (``lookahead``, ``lru``, ``lfu``, ``static``).
        window: steps of lookahead.
        depth: steps prefetched ahead of compute.
    """

    def __init__(self, *, tiers: TieredStore, cardinalities: list[int], capacity: int,
                 policy: str, window: int, depth: int, table_names: list[str] | None = None) -> None:
        self.tiers = tiers
        self.store: SlotStore = tiers.cache
        self.cards = list(cardinalities)
        self.bounds = np.cumsum([0, *cardinalities])
        self.offsets = self.bounds[:-1]
        self.capacity, self.policy, self.window, self.depth = capacity, policy, window, depth
        self.names = table_names or [f"T{t}" for t in range(len(cardinalities))]
        self.stats = FeedStats(moves=tiers.counts)
        self._done = -1
        self._cond = threading.Condition()
        self._misses_per_table = np.zeros(len(cardinalities), dtype=np.int64)
        # On CUDA the mover copies on a side stream; events order it against
        # compute: plan s waits for the update of step s-depth-1 to have run
        # on the GPU (not just been queued), and step s's compute waits for
        # plan s's copies.
        dev = self.store.weights.device
        self._side = torch.cuda.Stream(dev) if dev.type == "cuda" else None
        self._done_event: torch.cuda.Event | None = None
        self._unique_per_table = np.zeros(len(cardinalities), dtype=np.int64)

    @classmethod
    def from_config(cls, cfg: RunConfig, cardinalities: list[int], optimizer: RowOptimizer,
                    run_dir: Path) -> TieredFeed:
        c, dim = cfg.cache, cfg.model.embedding_dim
        total = sum(cardinalities)
        width = dim + optimizer.state_width
        capacity = min(total, c.capacity_rows(total, bytes_per_row=width * 4))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        backing: BackingStore
        if c.backing == "file":
            backing = FileBacking(directory=c.backing_dir or run_dir / "tables",
                                  cardinalities=cardinalities, dim=dim, optimizer=optimizer,
                                  seed=cfg.train.seed)
        else:
            backing = HostBacking(cardinalities=cardinalities, dim=dim, optimizer=optimizer,
                                  seed=cfg.train.seed, pin=device == "cuda")
        cache = SlotStore.allocate(capacity, dim, optimizer, device=device)
        tiers = TieredStore(cache=cache, backing=backing, table_bounds=np.cumsum([0, *cardinalities]))
        return cls(tiers=tiers, cardinalities=cardinalities, capacity=capacity, policy=c.policy,
                   window=c.window, depth=c.depth)

    # -- the pipeline -----------------------------------------------------

    def _mover(self, loader: BatchLoader, start: int, stop: int, out: queue.Queue,
               stop_evt: threading.Event) -> None:
        try:
            planner = Planner(num_rows=int(self.bounds[-1]), capacity=self.capacity,
                              window=self.window, depth=self.depth, policy=self.policy)
            for plan in planner.plan(loader.id_stream(self.offsets, start, stop)):
                s = start + plan.step
                with self._cond:  # the rows plan s evicts were last used by step <= s-depth-1
                    while self._done < s - self.depth - 1 and not stop_evt.is_set():
                        self._cond.wait(0.1)
                    done_event = self._done_event
                if stop_evt.is_set():
                    return
                ready = None
                if self._side is not None:
                    with torch.cuda.stream(self._side):
                        if done_event is not None:
                            self._side.wait_event(done_event)
                        self.tiers.apply(plan)
                        ready = torch.cuda.Event()
                        ready.record(self._side)
                else:
                    self.tiers.apply(plan)
                out.put((s, plan, loader.batch(s), ready))
            out.put(_DONE)
        except BaseException as e:  # surfaced in the main thread
            out.put(e)

    def steps(self, loader: BatchLoader, start: int, stop: int) -> Iterator[StepInput]:
        self._done = start - 1
        out: queue.Queue = queue.Queue()
        stop_evt = threading.Event()
        mover = threading.Thread(target=self._mover, args=(loader, start, stop, out, stop_evt),
                                 name="hotpipe-mover", daemon=True)
        mover.start()
        dev = self.store.weights.device
        try:
            while True:
                t0 = time.perf_counter()
                item = out.get()
                self.stats.stall_seconds += time.perf_counter() - t0
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                s, plan, batch, ready = item
                if ready is not None:
                    torch.cuda.current_stream().wait_event(ready)
                self._count(plan)
                yield StepInput(s, batch, torch.from_numpy(plan.lookup_slots).to(dev))
        finally:
            stop_evt.set()
            mover.join()
            self._sync_stats()

    def _count(self, plan) -> None:
        st = self.stats
        misses = plan.num_misses
        st.misses += misses
        st.hits += int(plan.unique_ids.size) - misses
        t_u = np.searchsorted(self.bounds, plan.unique_ids, side="right") - 1
        self._unique_per_table += np.bincount(t_u, minlength=len(self.cards))
        t_m = np.searchsorted(self.bounds, plan.fetch_ids[:misses], side="right") - 1
        self._misses_per_table += np.bincount(t_m, minlength=len(self.cards))

    def _sync_stats(self) -> None:
        st = self.stats
        fetched = self.tiers.fetched_per_table.tolist()
        st.per_table = {
            self.names[t]: {"hits": int(self._unique_per_table[t] - self._misses_per_table[t]),
                            "misses": int(self._misses_per_table[t]), "rows_fetched": int(fetched[t])}
            for t in range(len(self.cards))
        }

    def step_done(self, step: int) -> None:
        with self._cond:
            if self._side is not None:  # the update is queued, not yet run
                self._done_event = torch.cuda.Event()
                self._done_event.record()
            self._done = step
            self._cond.notify_all()

    # -- state ------------------------------------------------------------

    def flush(self) -> None:
        self.tiers.flush()
        self._sync_stats()

    def read_rows(self, global_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, T, D) from the backing tier; call after flush()."""
        b, t = global_ids.shape
        rec = self.tiers.backing.read(global_ids.reshape(-1))
        return rec[:, : self.store.dim].reshape(b, t, -1).to(self.store.weights.device)

    def export(self) -> RowSource:
        return self.tiers.backing.export()

    def load(self, records: np.ndarray) -> None:
        self.tiers.backing.load(records)

    def close(self) -> None:
        self.tiers.close()
