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
* Row transfers are *not* saved: the tiered feed plans a window ahead, before
  a period's stale set exists, so a skipped sample's rows are still fetched.
  Write-backs go *up*: a row no kept sample updates stays clean, but reading
  a snapshot flushes a tiered feed (every dirty resident row written back at
  each period boundary), and that costs more (benchmarks/bench_skip.py).
* One-hot batches only (the training loop's case): ``batch.sparse`` is (B, T).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from hotpipe.config import SkipConfig
from hotpipe.data.layout import TableLayout
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


@dataclass
class Period:
    """One estimate, applied from ``step`` until the next one."""

    step: int  # steps done when it was estimated
    hot_rows: int  # rows compared
    stale_rows: int
    threshold: float
    estimated_drop: float  # share of the previous period's samples it would have dropped
    samples: int = 0  # samples seen while it applied
    skipped: int = 0  # of which skipped


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

    Example:
        >>> sk = StaleSkipper.from_config(cfg.skip, layout=layout, hot_rows=1000,
        ...                               read_rows=current_rows)  # doctest: +SKIP
        >>> keep = sk.keep_mask(inp)   # (B,) bool, or None: train all
        >>> ...; sk.observe(inp, keep); sk.step_done(inp.step + 1)  # doctest: +SKIP
    """

    def __init__(self, *, warmup: int, interval: int, target_drop: float, hot_rows: int,
                 offsets: torch.Tensor, num_rows: int, read_rows: ReadRows) -> None:
        if warmup < 1 or interval < 1 or not 0.0 <= target_drop < 1.0 or hot_rows < 1:
            raise ValueError(f"warmup {warmup} and interval {interval} must be >= 1, target_drop "
                             f"{target_drop} in [0, 1), hot_rows {hot_rows} >= 1")
        self.warmup, self.interval, self.target = warmup, interval, target_drop
        self.hot_rows, self.read_rows = hot_rows, read_rows
        self.offsets = offsets.reshape(1, -1)  # (1, T)
        self.counts = torch.zeros(num_rows, dtype=torch.int64)  # (R,) lookups so far
        self.stale = torch.zeros(num_rows, dtype=torch.bool)  # (R,) the current stale set
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
                    read_rows: ReadRows) -> StaleSkipper:
        """``hot_rows`` is used when ``c.hot_rows`` is 0 (the run passes the fast tier's size)."""
        return cls(warmup=c.warmup, interval=c.interval, target_drop=c.target_drop,
                   hot_rows=c.hot_rows or hot_rows, offsets=torch.from_numpy(layout.offsets.copy()),
                   num_rows=layout.num_rows, read_rows=read_rows)

    # -- per step -----------------------------------------------------------

    def _global(self, inp: StepInput) -> torch.Tensor:
        sparse = inp.batch.sparse
        if not isinstance(sparse, torch.Tensor):
            raise TypeError("stale-sample skipping takes one-hot batches ((B, T) ids)")
        return sparse + self.offsets  # (B, T)

    def keep_mask(self, inp: StepInput) -> torch.Tensor | None:
        """(B,) bool, False for a sample whose lookups are all stale; None when none is."""
        drop = self.stale[self._global(inp)].all(dim=1)  # (B,)
        return ~drop if bool(drop.any()) else None

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
        if self.periods:
            p = self.periods[-1]
            p.samples += b
            p.skipped += 0 if keep is None else b - int(keep.sum())

    def step_done(self, steps_done: int) -> None:
        """At a period boundary: compare with the snapshot (from the second on), re-snapshot."""
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
        stale_ids = self.hot[delta < thr]
        self.stale.zero_()
        self.stale[stale_ids] = True
        self.periods.append(Period(step=steps_done, hot_rows=int(self.hot.numel()),
                                   stale_rows=int(stale_ids.numel()), threshold=thr,
                                   estimated_drop=share))

    # -- reporting and checkpoints ------------------------------------------

    def summary(self) -> dict[str, Any]:
        """The metrics.json ``skip`` section."""
        skipped = sum(p.skipped for p in self.periods)
        active = sum(p.samples for p in self.periods)  # seen once a stale set existed
        t = self.offsets.shape[1]
        return {
            "mode": "slipstream", "target_drop": self.target, "warmup": self.warmup,
            "interval": self.interval, "hot_rows": self.hot_rows,
            "samples_seen": self.seen, "samples_skipped": skipped,
            "fraction_skipped": skipped / self.seen if self.seen else 0.0,
            "fraction_skipped_after_warmup": skipped / active if active else 0.0,
            "lookups_skipped": skipped * t,  # row updates not applied
            # Planned a window ahead, before the stale set exists: nothing is saved yet.
            "rows_not_transferred": 0,
            "periods": [asdict(p) for p in self.periods],
        }

    def state_dict(self) -> dict[str, Any]:
        seen_ids = torch.nonzero(self.counts).squeeze(1)
        return {
            "count_ids": seen_ids, "count_values": self.counts[seen_ids],
            "stale_ids": torch.nonzero(self.stale).squeeze(1),
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
        self.hot, self.snap = sd["hot"].clone(), sd["snap"].clone()
        self.is_hot.zero_()
        self.is_hot[self.hot] = True
        self.recorded = [] if sd["recorded"] is None else [sd["recorded"].clone()]
        self.period_samples, self.seen = int(sd["period_samples"]), int(sd["seen"])
        self.periods = [Period(**p) for p in sd["periods"]]


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
