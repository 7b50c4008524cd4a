"""Replay a dataset's access trace through the planner alone (no training).

Each configuration (policy x capacity) plans the same trace; the results say
how many rows each policy moves and how fast it plans. Definitions:

* ``lookups``: ids looked up (batch x tables per step, summed).
* ``unique_lookups``: distinct ids per step, summed over steps.
* ``misses``: distinct ids of a step that were not resident, summed.
* ``hit_rate = 1 - misses / unique_lookups``: per distinct row per step,
  since a step fetches a row once however often it looks it up.
* ``rows_fetched``: rows read from backing, misses plus rows loaded ahead of
  use (``static``'s hot set), so policies compare on the traffic they cause.
* ``seconds``: time spent planning, without the time spent reading the trace;
  ``setup_seconds`` is the part before the first plan (allocating per-row
  state, O(rows), and reading the first window), which long runs amortize.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hotpipe.capacity import Capacity
from hotpipe.config import ScheduleConfig
from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.schedule import ScheduledTrace
from hotpipe.errors import CapacityError, ConfigError
from hotpipe.plan.movement import MoveCounter
from hotpipe.plan.planner import Planner
from hotpipe.plan.policies import make_policy


@dataclass
class SimResult:
    """Totals of one planned replay; ``error`` is set when it could not run."""

    policy: str
    capacity: float  # fraction of all rows
    capacity_rows: int
    window: int
    depth: int
    steps: int = 0
    samples: int = 0
    lookups: int = 0
    unique_lookups: int = 0
    misses: int = 0
    rows_fetched: int = 0
    rows_evicted: int = 0
    seconds: float = 0.0
    setup_seconds: float = 0.0
    error: str | None = None

    @property
    def rows_fetched_per_1k_samples(self) -> float:
        return 1000.0 * self.rows_fetched / max(self.samples, 1)

    @property
    def hit_rate(self) -> float:
        return 1.0 - self.misses / max(self.unique_lookups, 1)

    @property
    def lookups_per_s(self) -> float:
        return self.lookups / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(rows_fetched_per_1k_samples=self.rows_fetched_per_1k_samples,
                   hit_rate=self.hit_rate, lookups_per_s=self.lookups_per_s)
        return out


class _TimedTrace:
    """An iterable of steps that adds the time spent producing them to ``waited``."""

    def __init__(self, steps: Iterable[np.ndarray]) -> None:
        self._steps, self.waited = steps, 0.0

    def __iter__(self) -> Iterator[np.ndarray]:
        it = iter(self._steps)
        while True:
            t0 = time.perf_counter()
            ids = next(it, None)
            self.waited += time.perf_counter() - t0
            if ids is None:
                return
            yield ids


class _SizedTimedTrace(_TimedTrace):
    """A :class:`_TimedTrace` of known length (so ``static`` can profile a share)."""

    def __init__(self, steps: Iterable[np.ndarray], length: int) -> None:
        super().__init__(steps)
        self._length = length

    def __len__(self) -> int:
        return self._length


def replay(steps: Iterable[np.ndarray], *, num_rows: int, capacity_rows: int, policy: str,
           window: int, depth: int) -> SimResult:
    """Plan ``steps`` and add up what the plans move.

    Args:
        steps: each step's global ids; (B, T) batches count B samples. A
            sequence (with ``len``) lets ``static`` profile 5% of it.
        num_rows: rows in the fused id space.
        capacity_rows: fast-tier slots.
        policy: a planner policy name.
        window, depth: as for :class:`~hotpipe.plan.planner.Planner`.

    Returns:
        the totals; on a :class:`CapacityError` the totals so far and ``error``.
    """
    res = SimResult(policy, capacity_rows / num_rows, capacity_rows, window, depth)
    trace = (_SizedTimedTrace(steps, len(steps)) if isinstance(steps, Sized)
             else _TimedTrace(steps))
    planner = Planner(num_rows=num_rows, capacity=capacity_rows, window=window, depth=depth,
                      policy=policy)
    counter = MoveCounter(num_rows)  # the cost model's counter: one count of what plans move
    t0 = time.perf_counter()
    try:
        for plan in planner.plan(trace):
            if not counter.cols:
                res.setup_seconds = time.perf_counter() - t0 - trace.waited
            counter.add(plan)
    except CapacityError as e:
        res.error = str(e)
    res.seconds = time.perf_counter() - t0 - trace.waited
    tot = counter.result().totals()
    res.steps, res.samples, res.lookups = int(tot["steps"]), int(tot["samples"]), int(tot["lookups"])
    res.unique_lookups, res.misses = int(tot["unique_lookups"]), int(tot["misses"])
    res.rows_fetched, res.rows_evicted = int(tot["rows_fetched"]), int(tot["rows_evicted"])
    return res


def simulate(data: str | Path, *, policies: Sequence[str], capacities: Sequence[object],
             window: int = 64, depth: int = 1, batch_size: int = 2048, val_fraction: float = 0.1,
             epochs: int = 1, max_steps: int | None = None, bytes_per_row: int | None = None,
             schedule: ScheduleConfig | None = None, seed: int = 0,
             on_result: Callable[[SimResult], None] | None = None) -> list[SimResult]:
    """Replay the training steps of a run for every (capacity, policy) pair.

    The trace is :class:`~hotpipe.data.loader.TrainTrace`, the one training
    plans: the validation split is left out and a short last batch dropped, so
    the rows moved here are the rows ``hotpipe train`` moves. Under a
    ``schedule`` (``fae``, ``hotline``) each capacity plans the order a run at
    that capacity trains (its hot set is the fast tier's rows:
    :class:`~hotpipe.data.schedule.ScheduledTrace`).

    Args:
        data: a columnar dataset directory.
        policies: planner policy names.
        capacities: any spelling :class:`~hotpipe.capacity.Capacity` accepts
            (``0.05``, ``10%``, ``4096`` rows, ``64MiB``).
        window, depth: as for :class:`~hotpipe.plan.planner.Planner`.
        batch_size, val_fraction, epochs: as in the run's ``data``/``train`` config.
        max_steps: plan at most this many steps.
        bytes_per_row: a row's record size (storage's ``record_bytes``); needed
            only for capacities given in bytes.
        schedule, seed: the run's ``schedule`` section and ``train.seed`` (default:
            the data's order).
        on_result: called with each result as soon as it is ready.

    Returns:
        one result per pair, capacity-major; too-small capacities carry ``error``.

    Raises:
        ConfigError: an unknown policy, a malformed capacity, a bad window,
            depth, batch size or step limit (before anything runs).
    """
    for p in policies:
        make_policy(p)
    for key, value in (("batch_size", batch_size), ("max_steps", max_steps or 1), ("epochs", epochs)):
        if value < 1:
            raise ConfigError(key, f"expected an integer >= 1, found {value}")
    if not 0 <= val_fraction < 1:
        raise ConfigError("val_fraction", f"expected a fraction in [0, 1), found {val_fraction}")
    ds = ColumnarDataset.open(data)
    specs = [Capacity.parse(c, "capacity") for c in capacities]
    if bytes_per_row is None and any(c.kind == "bytes" for c in specs):
        raise ConfigError("capacity", "a capacity in bytes needs the row size (bytes_per_row)")
    num_rows = int(sum(ds.cardinalities))
    rows = [c.rows(num_rows, bytes_per_row or 1) for c in specs]
    Planner(num_rows=num_rows, capacity=1, window=window, depth=depth)  # checks them
    trace = ScheduledTrace(ds, batch_size=batch_size, val_fraction=val_fraction, epochs=epochs,
                           max_steps=max_steps or 0, schedule=schedule or ScheduleConfig(),
                           hot_rows=rows[0] if rows else 1, seed=seed)
    results = []
    for r in rows:
        for p in policies:
            results.append(replay(trace.at_capacity(r), num_rows=num_rows, capacity_rows=r,
                                  policy=p, window=window, depth=depth))
            if on_result is not None:
                on_result(results[-1])
    return results


TABLE_HEADER = (f"{'capacity':>9} {'rows':>10} {'policy':>9} {'fetched/1k':>10} {'vs lru':>7} "
                f"{'hit rate':>8} {'evicted':>10} {'Mlookups/s':>10} {'vs lru':>7}")


def table_row(r: SimResult, lru: SimResult | None = None) -> str:
    """One line of the results table; ``lru`` (same capacity) gives the ratio columns."""
    head = f"{r.capacity:>9.4f} {r.capacity_rows:>10} {r.policy:>9}"
    if r.error is not None:
        return f"{head}  error: {r.error}"
    fetched = f"{r.rows_fetched / lru.rows_fetched:.3f}" if lru and lru.rows_fetched else "-"
    speed = f"{r.lookups_per_s / lru.lookups_per_s:.2f}" if lru and lru.lookups_per_s else "-"
    return (f"{head} {r.rows_fetched_per_1k_samples:>10.1f} {fetched:>7} {r.hit_rate:>8.4f} "
            f"{r.rows_evicted:>10} {r.lookups_per_s / 1e6:>10.2f} {speed:>7}")


def format_table(results: Sequence[SimResult]) -> str:
    """All results, with rows fetched relative to LRU at the same capacity."""
    lru = {r.capacity_rows: r for r in results if r.policy == "lru" and r.error is None}
    return "\n".join([TABLE_HEADER, *(table_row(r, lru.get(r.capacity_rows)) for r in results)])


def plot_miss_ratio_curve(results: Sequence[SimResult], path: str | Path) -> None:
    """Rows fetched per 1k samples against capacity, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for policy in dict.fromkeys(r.policy for r in results):
        pts = sorted((r.capacity, r.rows_fetched_per_1k_samples)
                     for r in results if r.policy == policy and r.error is None)
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=policy)
    ax.set_xscale("log")
    ax.set_xlabel("fast-tier capacity (fraction of rows)")
    ax.set_ylabel("rows fetched per 1k samples")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
