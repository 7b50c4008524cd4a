"""Stale-sample skipping (Slipstream): stop training samples whose rows stopped moving.

Slipstream observes that many hot rows saturate early, so the updates that
flow through them change little. Its procedure, with ``W`` = warmup and
``I`` = interval (``after s`` = once ``s`` steps are done)::

    steps 0 .. W-1     train every sample; count every lookup
    after W            snapshot: H = the hot_rows most looked-up rows so far (ties by
                       id), w_H = their weights
    steps W .. W+I-1   train; record the period's samples whose lookups are all in H
                       (a sample with a non-hot lookup can never be stale)
    after W+I          compare: delta[h] = max_d |w_now[h, d] - w_H[h, d]|   (H,)
                       a row is stale when delta < thr (every dimension moved less);
                       thr is bisected so that the share of the period's samples
                       whose lookups are all stale lands near target_drop;
                       then a new snapshot (new H from the counts so far)
    steps W+I .. W+2I-1  samples whose lookups are all stale are skipped: no
                       forward, no backward, no row update; the rest train
    after W+2I         compare on the second snapshot -> new thr and stale set ...

Choices, and why:

* The threshold search only ever lands at or *below* the target (a step
  function of ``thr``: many samples may share one delta, e.g. frozen rows at
  exactly 0), so ``target_drop=0`` gives ``thr=0``, no stale row, and the
  loop takes the exact path bit for bit.
* Skipped samples still count as looked up (they are in the data stream) and
  still belong to the next period's estimate; a row touched only by skipped
  samples does not move and so stays stale: the procedure's own fixed point.
* Row transfers: the tiered feed plans ``cache.window`` steps ahead, so with
  Slipstream's order (a stale set applies from the step after its estimate,
  ``lag=0``) the planner has read a period's first steps before their stale
  set exists, and a skipped sample's rows are still fetched. With ``lag`` >=
  the planner's reach (``cache.window + cache.depth + 2`` steps: the mover
  reads step ``x`` only once step ``x - window - depth - 1`` is done, and one
  more because the feed hears of a finished step before the skipper), an
  estimate made after step ``b`` applies from step ``b + lag``, so it exists
  when the planner reads those steps: :meth:`StaleSkipper.planning_loader`
  hands the planner each step with the samples it will skip replaced by a
  kept sample's ids, and rows only skipped samples need are never fetched.
  The lag is part of the math (which samples a step skips), the same in a
  tiered and an untiered run of one config, and a step the planner reads
  before its stale set is known (it cannot happen at that lag) is planned
  whole: still exact, only not saving.
  Write-backs: a row no kept sample updates stays clean. A ``read_rows`` that
  flushes a tiered feed before each snapshot writes every dirty resident row
  back at each period boundary (16-36 % more write-backs,
  benchmarks/bench_skip.py); :func:`current_rows` reads the same weights
  without a flush.
* One-hot batches only (the training loop's case): ``batch.sparse`` is (B, T).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from hotpipe.config import CacheConfig, SkipConfig
from hotpipe.data.batch import Batch
from hotpipe.data.layout import TableLayout
from hotpipe.data.loader import BatchLoader, IdStream
from hotpipe.data.schedule import top_rows
from hotpipe.train.feed import StepInput

#: Bisection stops once the dropped share is this close below the target.
_TOL = 0.002
#: Bisection halvings at most (a float threshold is exhausted long before).
_ITERS = 60

ReadRows = Callable[[torch.Tensor], torch.Tensor]  # (H,) global ids -> (H, D) current weights


def stale_fraction(sample_delta: torch.Tensor, total: int, threshold: float) -> float:
    """Share of ``total`` samples dropped at ``threshold`` (those with ``sample_delta < threshold``)."""
    return int((sample_delta < threshold).sum()) / total if total else 0.0


def bisect_threshold(sample_delta: torch.Tensor, total: int, target: float) -> tuple[float, float]:
    """The staleness threshold whose dropped share lands near ``target`` from below.

    Args:
        sample_delta: (N,) float, for each sample whose lookups are all hot, the
            largest movement of any of its rows (it is dropped iff ``< threshold``).
        total: all samples of the period, the share's denominator (>= N).
        target: the share to drop, in [0, 1).

    Returns:
        ``(threshold, share)``; ``share <= target`` always, and
        ``target - share <= 0.002`` unless no threshold gets closer (ties).

    Example:
        >>> thr, share = bisect_threshold(torch.tensor([0.0, 0.1, 0.2, 0.3]), 10, 0.3)
        >>> share, 0.2 < thr <= 0.3
        (0.3, True)
    """
    if target <= 0.0 or sample_delta.numel() == 0:
        return 0.0, 0.0
    lo = 0.0
    hi = float(sample_delta.max()) * 2.0 + 1e-12  # drops every sample recorded
    top = stale_fraction(sample_delta, total, hi)
    if top <= target:
        return hi, top
    share = 0.0
    for _ in range(_ITERS):
        mid = (lo + hi) / 2.0
        f = stale_fraction(sample_delta, total, mid)
        if f > target:
            hi = mid
        else:
            lo, share = mid, f
            if target - share <= _TOL:
                break
    return lo, share


def current_rows(feed: Any) -> ReadRows:
    """A ``read_rows`` for :class:`StaleSkipper` that reads a feed's current weights
    without flushing it.

    Flushing a tiered feed at every snapshot writes back every dirty resident
    row (16-36% more write-backs measured, far more over a slow tier); the
    weights are current without it: a resident row in its slot (only the
    training thread, which calls this between steps, updates them), any other
    row in the backing tier (an evicted dirty row is written back before its
    slot is given up). The planner's thread may reassign slots meanwhile, so a
    row counts as resident only if its slot held it both before and after its
    weights were read (a row re-fetched into the same slot in between holds
    the same weights); the others are read from the backing tier after that.
    A feed without a ``tiers`` store (every row resident) is read directly.

    Returns:
        (H,) global ids -> (H, D) float32 current weights.
    """
    tiers = getattr(feed, "tiers", None)

    def direct(ids: torch.Tensor) -> torch.Tensor:
        feed.flush()  # a no-op for a feed that holds every row
        return feed.read_rows(ids.reshape(-1, 1)).reshape(ids.numel(), -1)

    if tiers is None:
        return direct

    def read(ids: torch.Tensor) -> torch.Tensor:
        dim = tiers.cache.dim
        before = tiers.slot_ids.clone()  # (C,) id held by each slot, -1 free
        held = torch.nonzero(before >= 0).squeeze(1)
        order = torch.argsort(before[held])
        sorted_ids, sorted_slots = before[held][order], held[order]  # resident ids ascending
        pos = torch.searchsorted(sorted_ids, ids).clamp(max=max(sorted_ids.numel() - 1, 0))
        found = (sorted_ids[pos] == ids) if sorted_ids.numel() else torch.zeros_like(ids, dtype=torch.bool)
        out = torch.empty(ids.numel(), dim)
        slots = sorted_slots[pos[found]]
        w = tiers.cache.weights.index_select(0, slots.to(tiers.cache.weights.device)).cpu()
        ok = tiers.slot_ids[slots] == ids[found]  # still there after the read
        idx = torch.nonzero(found).squeeze(1)
        out[idx[ok]] = w[ok]
        rest = torch.cat([torch.nonzero(~found).squeeze(1), idx[~ok]])
        if rest.numel():
            out[rest] = tiers.backing.read(ids[rest])[:, :dim]
        return out

    return read


def run_lag(skip: SkipConfig, cache: CacheConfig) -> int:
    """The lag a run's ``skip.lag`` asks for: ``plan`` -> :func:`plan_lag`, else the count."""
    return plan_lag(cache) if skip.lag == "plan" else int(skip.lag)


def plan_lag(cache: CacheConfig) -> int:
    """Steps between an estimate and its use that let the planner see it (module docstring):
    ``cache.window + cache.depth + 2``, a function of the config alone so that a
    tiered and an untiered run of it skip the same samples."""
    return cache.window + cache.depth + 2


@dataclass
class Period:
    """One estimate, applied from ``applies_from`` until the next one applies."""

    step: int  # steps done when it was estimated
    hot_rows: int  # rows compared
    stale_rows: int
    threshold: float
    estimated_drop: float  # share of the previous period's samples it would have dropped
    samples: int = 0  # samples seen while it applied
    skipped: int = 0  # of which skipped
    applies_from: int = -1  # first step it decides (step + lag)
    unplanned: int = 0  # skipped samples whose rows the planner never saw (tiered runs)


class StaleSkipper:
    """Decides which samples of a step to skip, and re-estimates every period.

    Args:
        warmup: steps before the first snapshot.
        interval: steps between snapshots (one period).
        target_drop: share of samples to skip, in [0, 1).
        hot_rows: rows snapshotted (the most looked-up so far).
        offsets: (T,) int64 first global row of each table.
        num_rows: all rows of all tables (R).
        read_rows: (H,) global ids -> (H, D) their *current* weights (the run
            flushes a tiered feed first), called twice per period.
        lag: steps from an estimate to the first step it decides (0: the next
            step, Slipstream's order; :func:`plan_lag`: the planner sees it).
        plan_filter: leave the samples it will skip out of the planner's view
            (off only to measure what that saves).

    Example:
        >>> sk = StaleSkipper.from_config(cfg.skip, layout=layout, hot_rows=1000,
        ...                               read_rows=current_rows)  # doctest: +SKIP
        >>> keep = sk.keep_mask(inp)   # (B,) bool, or None: train all
        >>> ...; sk.observe(inp, keep); sk.step_done(inp.step + 1)  # doctest: +SKIP
    """

    def __init__(self, *, warmup: int, interval: int, target_drop: float, hot_rows: int,
                 offsets: torch.Tensor, num_rows: int, read_rows: ReadRows, lag: int = 0,
                 plan_filter: bool = True) -> None:
        if warmup < 1 or interval < 1 or not 0.0 <= target_drop < 1.0 or hot_rows < 1 or lag < 0:
            raise ValueError(f"warmup {warmup} and interval {interval} must be >= 1, target_drop "
                             f"{target_drop} in [0, 1), hot_rows {hot_rows} >= 1, lag {lag} >= 0")
        self.warmup, self.interval, self.target, self.lag = warmup, interval, target_drop, lag
        self.plan_filter = plan_filter
        self.hot_rows, self.read_rows = hot_rows, read_rows
        self.offsets = offsets.reshape(1, -1)  # (1, T)
        self.counts = torch.zeros(num_rows, dtype=torch.int64)  # (R,) lookups so far
        self.stale = torch.zeros(num_rows, dtype=torch.bool)  # (R,) the set deciding the next step
        # Estimated stale sets (first step decided, sorted ids), oldest first; [0] is the one
        # in self.stale once its step is reached. Replaced, never mutated: the planner's
        # thread reads it (planned_ids) while the training thread estimates.
        self.sets: list[tuple[int, torch.Tensor]] = []
        self._in_mask = -1  # applies_from of the set in self.stale (-1: none)
        self.done = 0  # steps done (the planner's thread reads it: what is decided so far)
        self._plan_mask = torch.zeros(num_rows, dtype=torch.bool)  # the planner thread's copy
        self._plan_set = -1
        self._unplanned: dict[int, int] = {}  # step -> samples left out of its plan
        self.hot = torch.zeros(0, dtype=torch.int64)  # (H,) snapshot rows, ascending ids
        self.is_hot = torch.zeros(num_rows, dtype=torch.bool)  # (R,) membership of hot
        self.snap = torch.zeros(0, 0)  # (H, D) their weights at the snapshot
        # (n_i, T) global ids of each step's all-hot samples, int32 where they fit (half
        # the memory); a gather from a (R,) table per step beats a search in ``hot``.
        self.recorded: list[torch.Tensor] = []
        self._id_dtype = torch.int32 if num_rows < 2**31 else torch.int64
        self.period_samples = 0  # every sample seen since the snapshot
        self.periods: list[Period] = []
        self.seen = 0  # samples observed in all

    @classmethod
    def from_config(cls, c: SkipConfig, *, layout: TableLayout, hot_rows: int,
                    read_rows: ReadRows, lag: int = 0) -> StaleSkipper:
        """``hot_rows`` is used when ``c.hot_rows`` is 0 (the run passes the fast tier's size)."""
        return cls(warmup=c.warmup, interval=c.interval, target_drop=c.target_drop,
                   hot_rows=c.hot_rows or hot_rows, offsets=torch.from_numpy(layout.offsets.copy()),
                   num_rows=layout.num_rows, read_rows=read_rows, lag=lag)

    def with_lag(self, lag: int, *, plan_filter: bool = True,
                 read_rows: ReadRows | None = None) -> StaleSkipper:
        """A fresh skipper with these settings and another ``lag`` (``plan_filter``, ``read_rows``)."""
        return StaleSkipper(warmup=self.warmup, interval=self.interval, target_drop=self.target,
                            hot_rows=self.hot_rows, offsets=self.offsets.reshape(-1),
                            num_rows=self.counts.shape[0], read_rows=read_rows or self.read_rows,
                            lag=lag, plan_filter=plan_filter)

    # -- per step -----------------------------------------------------------

    def _global(self, inp: StepInput) -> torch.Tensor:
        sparse = inp.batch.sparse
        if not isinstance(sparse, torch.Tensor):
            raise TypeError("stale-sample skipping takes one-hot batches ((B, T) ids)")
        return sparse + self.offsets  # (B, T)

    @staticmethod
    def _latest(sets: list[tuple[int, torch.Tensor]], step: int) -> int:
        """Index of the last set deciding ``step`` (-1: none yet)."""
        i = -1
        for j, (first, _) in enumerate(sets):
            if first > step:
                break
            i = j
        return i

    def _advance(self, step: int) -> None:
        """Make ``self.stale`` the set deciding ``step``; drop the sets before it."""
        sets = self.sets
        i = self._latest(sets, step)
        if i < 0 or sets[i][0] == self._in_mask:
            return
        first, ids = sets[i]
        self.stale.zero_()
        self.stale[ids] = True
        self._in_mask = first
        self.sets = sets[i:]  # a new list: the planner's thread may be reading the old one

    def keep_mask(self, inp: StepInput) -> torch.Tensor | None:
        """(B,) bool, False for a sample whose lookups are all stale; None when none is."""
        self._advance(inp.step)
        drop = self.stale[self._global(inp)].all(dim=1)  # (B,)
        return ~drop if bool(drop.any()) else None

    # -- what the planner sees (the feed's thread) --------------------------

    def planned_ids(self, step: int, ids: np.ndarray) -> np.ndarray:
        """Step ``step``'s (B, T) global ids as the planner should see them.

        When the set deciding ``step`` is known (every estimate up to
        ``step - lag`` is made), the samples that :meth:`keep_mask` will drop
        get the ids of the step's first kept sample (the first sample when all
        are dropped), so the plan fetches no row only they need and a
        ``(B, T)`` plan still lines up with the batch (the dropped samples'
        slots are never read). Otherwise the step is planned whole.
        """
        if not self.plan_filter or self.done < step - self.lag:  # a deciding estimate may still come
            return ids
        if ids.ndim != 2:  # not (B, T) one-hot ids: keep_mask refuses the step itself
            return ids
        sets = self.sets
        i = self._latest(sets, step)
        if i < 0:
            return ids
        first, stale = sets[i]
        if first != self._plan_set:
            self._plan_mask.zero_()
            self._plan_mask[stale] = True
            self._plan_set = first
        drop = self._plan_mask.numpy()[ids].all(axis=1)  # (B,)
        n = int(drop.sum())
        if not n:
            return ids
        self._unplanned[step] = n
        keep = np.flatnonzero(~drop)
        out = ids.copy()
        out[drop] = ids[keep[0] if keep.size else 0]
        if not keep.size:
            self._unplanned[step] = n - 1  # the first sample's rows are planned after all
        return out

    def planning_loader(self, loader: BatchLoader) -> BatchLoader:
        """``loader`` with :meth:`planned_ids` applied to the ids the planner reads."""
        return _PlanningLoader(loader, self)

    def observe(self, inp: StepInput, keep: torch.Tensor | None) -> None:
        """Count the step's lookups and record its samples for the next estimate."""
        ids = self._global(inp)  # (B, T)
        flat = ids.reshape(-1)
        self.counts.index_add_(0, flat, torch.ones_like(flat))
        b = ids.shape[0]
        self.seen += b
        if self.hot.numel():
            all_hot = self.is_hot[ids].all(dim=1)  # (B,)
            self.recorded.append(ids[all_hot].to(self._id_dtype))
            self.period_samples += b
        unplanned = self._unplanned.pop(inp.step, 0)
        if self._in_mask >= 0:
            p = self.periods[self._period_of(self._in_mask)]
            p.samples += b
            p.skipped += 0 if keep is None else b - int(keep.sum())
            p.unplanned += unplanned

    def _period_of(self, applies_from: int) -> int:
        for i in range(len(self.periods) - 1, -1, -1):
            if self.periods[i].applies_from == applies_from:
                return i
        raise RuntimeError(f"skip bug: no period applies from step {applies_from}")

    def step_done(self, steps_done: int) -> None:
        """At a period boundary: compare with the snapshot (from the second on), re-snapshot."""
        self._boundary(steps_done)
        self._advance(steps_done)  # the set deciding the next step (lag 0: this estimate)
        self.done = steps_done  # last: the planner's thread may now use what it decides

    def _boundary(self, steps_done: int) -> None:
        if steps_done < self.warmup or (steps_done - self.warmup) % self.interval:
            return
        if self.hot.numel():
            self._estimate(steps_done)
        hot = torch.from_numpy(top_rows(self.counts.numpy(), self.hot_rows))
        self.hot = torch.sort(hot).values
        self.is_hot.zero_()
        self.is_hot[self.hot] = True
        self.snap = self.read_rows(self.hot).to(torch.float32).cpu().clone()  # (H, D)
        self.recorded, self.period_samples = [], 0

    def _estimate(self, steps_done: int) -> None:
        now = self.read_rows(self.hot).to(torch.float32).cpu()  # (H, D)
        delta = (now - self.snap).abs().amax(dim=1)  # (H,) largest move of any dimension
        rec = torch.cat(self.recorded) if self.recorded else torch.zeros(0, 1, dtype=torch.int32)
        row_delta = torch.full_like(self.is_hot, float("inf"), dtype=torch.float32)  # (R,)
        row_delta[self.hot] = delta
        sample_delta = row_delta[rec.long()].amax(dim=1) if rec.numel() else delta[:0]  # (N,)
        thr, share = bisect_threshold(sample_delta, self.period_samples, self.target)
        stale_ids = self.hot[delta < thr]  # ascending
        self.periods.append(Period(step=steps_done, hot_rows=int(self.hot.numel()),
                                   stale_rows=int(stale_ids.numel()), threshold=thr,
                                   estimated_drop=share, applies_from=steps_done + self.lag))
        self.sets = [*self.sets, (steps_done + self.lag, stale_ids)]

    # -- reporting and checkpoints ------------------------------------------

    def summary(self) -> dict[str, Any]:
        """The metrics.json ``skip`` section."""
        skipped = sum(p.skipped for p in self.periods)
        active = sum(p.samples for p in self.periods)  # seen once a stale set applied
        unplanned = sum(p.unplanned for p in self.periods)
        t = self.offsets.shape[1]
        return {
            "mode": "slipstream", "target_drop": self.target, "warmup": self.warmup,
            "interval": self.interval, "hot_rows": self.hot_rows, "lag": self.lag,
            "samples_seen": self.seen, "samples_skipped": skipped,
            "fraction_skipped": skipped / self.seen if self.seen else 0.0,
            "fraction_skipped_after_warmup": skipped / active if active else 0.0,
            "lookups_skipped": skipped * t,  # row updates not applied
            # Skipped samples the tiered feed's planner never saw: rows only they
            # need are not transferred (how many rows that saves: benchmarks/bench_modes.py).
            "samples_not_planned": unplanned,
            "lookups_not_planned": unplanned * t,
            "periods": [asdict(p) for p in self.periods],
        }

    def state_dict(self) -> dict[str, Any]:
        seen_ids = torch.nonzero(self.counts).squeeze(1)
        return {
            "count_ids": seen_ids, "count_values": self.counts[seen_ids],
            "stale_ids": torch.nonzero(self.stale).squeeze(1), "in_mask": self._in_mask,
            "sets": [(first, ids.clone()) for first, ids in self.sets], "done": self.done,
            "hot": self.hot.clone(), "snap": self.snap.clone(),
            "recorded": torch.cat(self.recorded) if self.recorded else None,
            "period_samples": self.period_samples, "seen": self.seen,
            "periods": [asdict(p) for p in self.periods],
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.counts.zero_()
        self.counts[sd["count_ids"]] = sd["count_values"]
        self.stale.zero_()
        self.stale[sd["stale_ids"]] = True
        # Checkpoints written before the lag existed hold the set in effect only.
        self._in_mask = int(sd.get("in_mask", sd["periods"][-1]["step"] if sd["periods"] else -1))
        self.sets = [(int(f), ids.clone()) for f, ids in sd["sets"]] if "sets" in sd else (
            [(self._in_mask, sd["stale_ids"].clone())] if self._in_mask >= 0 else [])
        self.done = int(sd.get("done", 0))
        self._plan_set, self._unplanned = -1, {}
        self.hot, self.snap = sd["hot"].clone(), sd["snap"].clone()
        self.is_hot.zero_()
        self.is_hot[self.hot] = True
        self.recorded = [] if sd["recorded"] is None else [sd["recorded"].clone()]
        self.period_samples, self.seen = int(sd["period_samples"]), int(sd["seen"])
        self.periods = [Period(**p) for p in sd["periods"]]
        for p in self.periods:
            if p.applies_from < 0:  # written before the lag existed: applied at once
                p.applies_from = p.step


class _PlanningIds(IdStream):
    """An :class:`IdStream` whose steps pass through :meth:`StaleSkipper.planned_ids`
    (a profile's :meth:`spread` reads them unchanged: it only counts)."""

    def __init__(self, loader: BatchLoader, offsets: np.ndarray, start: int, stop: int,
                 skipper: StaleSkipper) -> None:
        super().__init__(loader, offsets, start, stop)
        self.skipper = skipper

    def __iter__(self) -> Iterator[np.ndarray]:
        for k in range(self.start, self.stop):
            yield self.skipper.planned_ids(k, self.loader.sparse_ids(k) + self.offsets)


class _PlanningLoader(BatchLoader):
    """The training loader, but the planner's id stream leaves out the samples the
    skipper will drop (batches are unchanged: the loop drops them itself)."""

    def __init__(self, base: BatchLoader, skipper: StaleSkipper) -> None:
        self.ds, self.batch_size, self.start, self.stop = base.ds, base.batch_size, base.start, base.stop
        self._cards = base._cards
        self.steps_per_epoch, self.num_steps = base.steps_per_epoch, base.num_steps
        self.base, self.skipper = base, skipper

    def rows(self, step: int) -> slice | np.ndarray:
        return self.base.rows(step)

    def sparse_ids(self, step: int) -> np.ndarray:
        return self.base.sparse_ids(step)

    def batch(self, step: int) -> Batch:
        return self.base.batch(step)

    def id_stream(self, offsets: np.ndarray, start_step: int = 0,
                  stop_step: int | None = None) -> IdStream:
        stop = self.num_steps if stop_step is None else stop_step
        return _PlanningIds(self, np.asarray(offsets, dtype=np.int64), start_step, stop, self.skipper)


def kept_samples(inp: StepInput, keep: torch.Tensor) -> StepInput:
    """The step restricted to the samples ``keep`` (B,) bool marks: (K, ...) rows, same order."""
    idx = torch.nonzero(keep).squeeze(1)  # (K,)
    b = inp.batch
    sparse = b.sparse
    assert isinstance(sparse, torch.Tensor)  # keep_mask raised on anything else
    batch = replace(b, dense=b.dense.index_select(0, idx.to(b.dense.device)),
                    sparse=sparse.index_select(0, idx.to(sparse.device)),
                    labels=b.labels.index_select(0, idx.to(b.labels.device)))
    return StepInput(inp.step, batch, inp.slots.index_select(0, idx.to(inp.slots.device)))
