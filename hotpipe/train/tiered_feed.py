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

import numpy as np
import torch

from hotpipe.data.layout import TableLayout
from hotpipe.data.loader import BatchLoader
from hotpipe.plan.planner import Planner
from hotpipe.plan.types import StepPlan
from hotpipe.storage.slots import RowSource, SlotStore
from hotpipe.storage.tiered import TieredStore
from hotpipe.train.feed import FeedStats, StepInput

_DONE = object()


class TieredFeed:
    """Feeds steps whose rows the planner made resident in a small fast tier.

    Args:
        tiers: the cache + backing store.
        planner: plans slot assignments for the cache's capacity; its ``depth``
            is how many steps are fetched ahead of compute. Each call to
            :meth:`steps` starts a fresh plan from the given step.
        layout: the tables' row ranges (local -> global ids, per-table stats).

    Example:
        >>> feed = TieredFeed(tiers=tiers, planner=Planner(num_rows=layout.num_rows,
        ...     capacity=tiers.cache.num_slots, window=64, depth=1), layout=layout)  # doctest: +SKIP
    """

    def __init__(self, *, tiers: TieredStore, planner: Planner, layout: TableLayout) -> None:
        if planner.capacity != tiers.cache.num_slots or planner.num_rows != layout.num_rows:
            raise ValueError(f"planner sized for {planner.capacity} slots of {planner.num_rows} rows; "
                             f"cache has {tiers.cache.num_slots} slots of {layout.num_rows} rows")
        self.tiers, self.planner, self.layout = tiers, planner, layout
        planner.warm()  # set-up time, not a stall of the first step
        self.store: SlotStore = tiers.cache
        self.depth = planner.depth
        self.stats = FeedStats(moves=tiers.counts)
        self._done = -1
        self._cond = threading.Condition()
        self._misses_per_table = np.zeros(layout.num_tables, dtype=np.int64)
        self._unique_per_table = np.zeros(layout.num_tables, dtype=np.int64)
        # On CUDA the mover copies on a side stream; events order it against
        # compute: plan s waits for the update of step s-depth-1 to have run
        # on the GPU (not just been queued), and step s's compute waits for
        # plan s's copies.
        dev = self.store.weights.device
        self._side = torch.cuda.Stream(dev) if dev.type == "cuda" else None
        self._done_event: torch.cuda.Event | None = None
        self._out: queue.Queue | None = None  # the running steps()'s hand-over queue

    # -- the pipeline -----------------------------------------------------

    def _mover(self, loader: BatchLoader, start: int, stop: int, out: queue.Queue,
               stop_evt: threading.Event) -> None:
        try:
            for plan in self.planner.plan(loader.id_stream(self.layout.offsets, start, stop)):
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
                # Per-table counts are computed here, off the training thread's
                # critical path; the training thread adds them when it takes the step.
                out.put((s, plan, loader.batch(s), ready, self._counts(plan)))
            out.put(_DONE)
        except BaseException as e:  # surfaced in the main thread
            out.put(e)

    def steps(self, loader: BatchLoader, start: int, stop: int) -> Iterator[StepInput]:
        self._done = start - 1
        out: queue.Queue = queue.Queue()
        self._out = out
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
                s, plan, batch, ready, counts = item
                if ready is not None:
                    torch.cuda.current_stream().wait_event(ready)
                self._add_counts(counts)
                yield StepInput(s, batch, torch.from_numpy(plan.lookup_slots).to(dev))
        finally:
            stop_evt.set()
            mover.join()
            self._sync_stats()

    def _counts(self, plan: StepPlan) -> tuple[int, int, np.ndarray, np.ndarray]:
        """(misses, hits, distinct rows per table, misses per table) of one plan."""
        lay = self.layout
        misses = plan.num_misses
        t_u = np.bincount(lay.table_of(plan.unique_ids), minlength=lay.num_tables)
        t_m = np.bincount(lay.table_of(plan.fetch_ids[:misses]), minlength=lay.num_tables)
        return misses, int(plan.unique_ids.size) - misses, t_u, t_m

    def _add_counts(self, counts: tuple[int, int, np.ndarray, np.ndarray]) -> None:
        misses, hits, t_u, t_m = counts
        self.stats.misses += misses
        self.stats.hits += hits
        self._unique_per_table += t_u
        self._misses_per_table += t_m

    def _sync_stats(self) -> None:
        st = self.stats
        fetched = self.tiers.fetched_per_table.tolist()
        st.per_table = {
            name: {"hits": int(self._unique_per_table[t] - self._misses_per_table[t]),
                   "misses": int(self._misses_per_table[t]), "rows_fetched": int(fetched[t])}
            for t, name in enumerate(self.layout.names)
        }

    def next_ready(self) -> bool:
        """Whether the running :meth:`steps` can hand out its next step without waiting
        (the mover has made it resident, or has ended)."""
        return self._out is not None and not self._out.empty()

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
        """(B, T) -> (B, T, D) from the backing tier, contiguous; call after flush().

        Contiguous on purpose: a strided view of the records would send the
        model's matmuls down another kernel, and evaluation would then differ
        from the untiered run in the last bits (val_logloss did).
        """
        b, t = global_ids.shape
        rec = self.tiers.backing.read(global_ids.reshape(-1))
        w = rec[:, : self.store.dim].contiguous()
        return w.reshape(b, t, -1).to(self.store.weights.device)

    def export(self) -> RowSource:
        return self.tiers.backing.export()

    def load(self, records: np.ndarray) -> None:
        self.tiers.backing.load(records)

    def close(self) -> None:
        self.tiers.close()
