"""FAE's static hot set as an eviction policy, for comparison.

FAE profiles a sample of the data, keeps the most frequently used rows in fast
memory for the whole run and sends every other ("cold") row through the slow
tier. Here the fast tier is split in two:

* **hot rows**: the ``h`` most looked-up ids of ``profile_steps`` steps
  (default 5% of the trace, at least 1) sampled over the whole trace as FAE
  does (runs of ``depth + 1`` consecutive steps spread evenly, when the trace
  offers ``spread()`` random access, as training's traces do; the first steps
  of a plain iterable otherwise), all fetched at step 0 (those
  fetches are counted: ``StepPlan.preloaded``) and not evicted (but see
  demotion below);
* **scratch slots**: ``capacity - h`` slots for the cold rows of the steps in
  flight. A cold row is fetched when a step needs it and evicted (written
  back) as soon as no in-flight step uses it, so it is never reused from the
  fast tier by a later step, which is FAE's cold path. (Steps in flight
  together share a cold row's one copy, which exactness requires; a row the
  step being planned uses again is kept rather than written back and read.)

Rows the profile never saw are cold whatever the capacity, so ``static``
leaves capacity unused when the profile is small: that is FAE's trade-off.

``h`` is the largest value for which ``h + ceil((1 + scratch_margin) * c(h))``
fits ``capacity``, where ``c(h)`` is the most cold rows any profiled step
pins together with its ``depth`` in-flight predecessors. A later step may
need more scratch than the profile showed; then the least frequent unpinned
hot rows are demoted to cold (evicted for good) instead of failing, so
``static`` runs at every capacity the other policies run at.
"""

from __future__ import annotations

import math

import numpy as np

from hotpipe.plan.state import CacheState, checked_ids
from hotpipe.plan.types import EvictionPolicy, StepRecord

#: Steps to profile when the trace length is unknown (a generator).
DEFAULT_PROFILE_STEPS = 64


class StaticPolicy(EvictionPolicy):
    """A static hot set plus transient scratch slots for cold rows (FAE).

    Args:
        profile_fraction: share of the trace's steps to profile.
        profile_steps: profile exactly this many steps (overrides the fraction).
        scratch_margin: headroom over the largest pinned cold set profiled.
    """

    name = "static"

    def __init__(self, *, profile_fraction: float = 0.05, profile_steps: int | None = None,
                 scratch_margin: float = 0.1) -> None:
        self.profile_fraction = profile_fraction
        self._profile_steps = profile_steps
        self.scratch_margin = scratch_margin
        self.hot_rows = 0  # h, chosen at start

    def profile_steps(self, total_steps: int | None) -> int:
        if self._profile_steps is not None:
            return max(1, self._profile_steps)
        if total_steps is None:
            return DEFAULT_PROFILE_STEPS
        return max(1, math.ceil(self.profile_fraction * total_steps))

    def start(self, state: CacheState, sample: list[np.ndarray]) -> None:
        super().start(state, sample)
        counts = np.zeros(state.num_rows, dtype=np.int64)
        uniqs = []
        for step, ids in enumerate(sample):
            u, c = np.unique(checked_ids(step, ids, state.num_rows), return_counts=True)
            counts[u] += c
            uniqs.append(u)
        seen = np.flatnonzero(counts)
        by_count = seen[np.argsort(-counts[seen], kind="stable")]  # most looked-up first
        h = self._choose_hot_rows(by_count, uniqs)
        self.hot_rows = h
        self._hot = by_count[:h]
        self._is_hot = np.zeros(state.num_rows, dtype=bool)
        self._is_hot[self._hot] = True
        self._demote_end = h  # candidates for demotion: self._hot[:end], last first

    def preload(self, rec: StepRecord) -> np.ndarray:
        if rec.step != 0:
            return np.empty(0, dtype=np.int64)
        return self._hot[~np.isin(self._hot, rec.uniq)]

    def on_release(self, ids: np.ndarray) -> np.ndarray:
        return ids[~self._is_hot[ids]]

    def victims(self, k: int) -> np.ndarray:
        """Demote the least looked-up unpinned hot rows."""
        out: list[np.ndarray] = []
        end = self._demote_end
        while k > 0 and end > 0:
            lo = max(0, end - max(2 * k, 256))
            chunk = self._hot[lo:end][::-1]
            ok = chunk[self._is_hot[chunk] & self.state.evictable(chunk)][:k]
            self._is_hot[ok] = False
            out.append(ok)
            k -= ok.shape[0]
            end = lo
        # Skip the demoted tail; pinned hot rows skipped above stay candidates.
        end = self._demote_end
        while end > 0 and not self._is_hot[self._hot[end - 1]]:
            end -= 1
        self._demote_end = end
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)

    def _choose_hot_rows(self, by_count: np.ndarray, uniqs: list[np.ndarray]) -> int:
        """The largest h with h + scratch(h) <= capacity (see the module docstring)."""
        st = self.state
        if not uniqs:
            return 0
        rank = np.full(st.num_rows, np.iinfo(np.int32).max, dtype=np.int32)
        rank[by_count] = np.arange(by_count.shape[0], dtype=np.int32)
        d = st.depth
        # Ranks of the rows each profiled step pins, tagged by step.
        pinned = [np.unique(np.concatenate(uniqs[max(0, s - d) : s + 1]))
                  for s in range(len(uniqs))]
        ranks = rank[np.concatenate(pinned)]
        tags = np.repeat(np.arange(len(pinned)), [p.shape[0] for p in pinned])

        def scratch(h: int) -> int:
            cold = np.bincount(tags[ranks >= h], minlength=1).max()
            return math.ceil((1 + self.scratch_margin) * int(cold))

        # Descend from the most h can be: each iterate stays >= the answer
        # because scratch() only grows as h shrinks, and stops at the answer.
        h = min(st.capacity, by_count.shape[0])
        while h > 0:
            room = st.capacity - scratch(h)
            if h <= room:
                break
            h = max(0, min(h - 1, room))
        return h
