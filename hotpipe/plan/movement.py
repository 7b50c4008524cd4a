"""Rows moved per step, read off the planner's own plans: the one counter.

``hotpipe simulate`` (:func:`hotpipe.plan.simulate.replay`) and the cost
model (``placement/``) both count traffic here, over the one trace of
training steps (:class:`~hotpipe.data.loader.TrainTrace`) and the planner
the tiered feed runs, so what they report is what training moves.

Write-backs are counted the way :class:`hotpipe.storage.tiered.TieredStore`
writes: an evicted row goes back only if it is dirty, i.e. a step used (and
so updated) it since it was fetched; rows still dirty at the end go back at
the final flush (the end-of-run checkpoint).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from hotpipe.plan.planner import Planner
from hotpipe.plan.types import StepPlan

__all__ = ["MoveCounter", "StepTrace", "trace_movement"]


@dataclass(frozen=True)
class StepTrace:
    """Per-step counts of one planned run; every array is (S,) int64.

    Attributes:
        lookups: ids looked up (batch x tables).
        unique: distinct ids.
        misses: distinct ids not resident when the step was planned.
        fetched: rows read from backing (misses + rows loaded ahead).
        evicted: rows leaving the fast tier.
        written_back: evicted rows that were dirty (written to backing).
        flushed: dirty rows written back by the final flush (a scalar).
        batch_sizes: samples per step.
    """

    lookups: np.ndarray
    unique: np.ndarray
    misses: np.ndarray
    fetched: np.ndarray
    evicted: np.ndarray
    written_back: np.ndarray
    flushed: int
    batch_sizes: np.ndarray

    @classmethod
    def untiered(cls, batch_sizes: np.ndarray) -> StepTrace:
        """A trace with no traffic (every row in the fast tier): only batch sizes matter."""
        z = np.zeros(batch_sizes.shape[0], dtype=np.int64)
        return cls(z, z, z, z, z, z, 0, np.asarray(batch_sizes, dtype=np.int64))

    @property
    def steps(self) -> int:
        return int(self.batch_sizes.shape[0])

    @property
    def hit_rate(self) -> float:
        u = int(self.unique.sum())
        return 1.0 - int(self.misses.sum()) / u if u else 1.0

    def totals(self) -> dict[str, int | float]:
        return {
            "steps": self.steps,
            "samples": int(self.batch_sizes.sum()),
            "lookups": int(self.lookups.sum()),
            "unique_lookups": int(self.unique.sum()),
            "misses": int(self.misses.sum()),
            "rows_fetched": int(self.fetched.sum()),
            "rows_evicted": int(self.evicted.sum()),
            "rows_written_back": int(self.written_back.sum()) + self.flushed,
            "hit_rate": self.hit_rate,
        }


class MoveCounter:
    """Accumulates :class:`StepTrace` columns plan by plan.

    Args:
        num_rows: rows in the fused id space (for the dirty bits).
    """

    def __init__(self, num_rows: int) -> None:
        self.dirty = np.zeros(num_rows, dtype=bool)  # used since fetched
        self.cols: list[tuple[int, int, int, int, int, int, int]] = []

    def add(self, plan: StepPlan) -> None:
        ev = plan.evict_ids
        wb = int(np.count_nonzero(self.dirty[ev]))
        self.dirty[ev] = False
        self.dirty[plan.unique_ids] = True  # every row a step looks up gets its update
        b = int(plan.lookup_slots.shape[0]) if plan.lookup_slots.ndim else 1
        self.cols.append((int(plan.lookup_slots.size), int(plan.unique_ids.shape[0]), plan.num_misses,
                          int(plan.fetch_ids.shape[0]), int(ev.shape[0]), wb, b))

    def result(self) -> StepTrace:
        arr = np.array(self.cols, dtype=np.int64).reshape(-1, 7)
        return StepTrace(lookups=arr[:, 0], unique=arr[:, 1], misses=arr[:, 2], fetched=arr[:, 3],
                         evicted=arr[:, 4], written_back=arr[:, 5],
                         flushed=int(np.count_nonzero(self.dirty)), batch_sizes=arr[:, 6])


def trace_movement(steps: Iterable[np.ndarray], *, num_rows: int, capacity: int, window: int,
                   depth: int, policy: str) -> StepTrace:
    """Plan ``steps`` and count each step's traffic.

    Args:
        steps: each step's global ids, (B, T) int64. Pass what training
            passes (a sized trace, e.g. :class:`~hotpipe.data.loader.TrainTrace`):
            ``static`` profiles a share of a sized trace but a fixed number of steps otherwise.
            A trace whose order depends on the fast tier's size (a scheduled run's
            hot set is its ``capacity`` rows:
            :class:`~hotpipe.data.schedule.ScheduledTrace`) is planned in the order
            its ``at_capacity(capacity)`` gives.
        num_rows, capacity, window, depth, policy: as for :class:`Planner`.

    Raises:
        CapacityError: ``capacity`` cannot hold a step's in-flight rows.
    """
    at_capacity = getattr(steps, "at_capacity", None)
    if callable(at_capacity):
        steps = at_capacity(capacity)
    planner = Planner(num_rows=num_rows, capacity=capacity, window=window, depth=depth, policy=policy)
    counter = MoveCounter(num_rows)
    for plan in planner.plan(steps):
        counter.add(plan)
    return counter.result()
