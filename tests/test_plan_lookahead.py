"""White-box checks of the lookahead policy at every eviction, any window.

A finite window makes no optimality promise, but each eviction must still
follow the rule: farthest next use within the window first, rows with no use
in the window before all others, lower access counts first on ties.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hotpipe.plan import LookaheadPolicy, Planner, min_capacity
from hotpipe.plan.reference import check_plans
from hotpipe.plan.types import NEVER, StepRecord
from tests.test_plan_valid import traces


class CheckedLookahead(LookaheadPolicy):
    """Checks each choice of victims against a brute-force reading of the trace."""

    def __init__(self, steps: list[np.ndarray]) -> None:
        super().__init__(age_every=5)  # short traces: make the aging happen
        self.sets = [set(np.asarray(x).ravel().tolist()) for x in steps]
        self.evictions = 0

    def window_next_use(self, x: int) -> float:
        s, w = self.state.step, self.state.window
        return next((t for t in range(s + 1, min(s + w, len(self.sets))) if x in self.sets[t]),
                    math.inf)

    def on_load(self, rec: StepRecord) -> None:
        super().on_load(rec)
        s, w = self.state.step, self.state.window
        for x in rec.uniq.tolist():  # next_use is the first use in s .. s+w-1
            want = next(t for t in range(s, s + w) if x in self.sets[t])
            assert self._next_use[x] == want, (x, self._next_use[x], want)

    def victims(self, k: int) -> np.ndarray:
        out = super().victims(k)
        st_ = self.state
        chosen = set(out.tolist())
        assert len(chosen) == k == out.shape[0]
        resident = np.flatnonzero(st_.slot_of >= 0)
        evictable = {int(x) for x in resident if st_.last_use[x] < st_.unpinned_below}
        assert chosen <= evictable
        self.evictions += k

        def rank(x: int) -> tuple[float, int]:
            nu = self.window_next_use(x)
            # Never-used rows compare by aged-count bucket; same next use by exact count.
            if nu == math.inf:
                return (-nu, int(np.log2(max(int(self._heat[x]), 1))))
            return (-nu, int(st_.freq[x]))

        worst_chosen = max(rank(x) for x in chosen)
        kept = [rank(x) for x in evictable - chosen]
        assert not kept or worst_chosen <= min(kept), (worst_chosen, min(kept))
        return out

    def on_planned(self, rec: StepRecord) -> None:
        super().on_planned(rec)
        for x in rec.uniq.tolist():
            nu = self.window_next_use(x)
            assert self._next_use[x] == (NEVER if nu == math.inf else nu)


@settings(max_examples=120, deadline=None)
@given(trace=traces(max_rows=40, max_steps=30, max_width=10), extra=st.integers(0, 8),
       window=st.integers(1, 12), depth=st.integers(0, 2))
def test_each_eviction_follows_the_rule(trace: tuple[int, list[np.ndarray]], extra: int,
                                        window: int, depth: int) -> None:
    num_rows, steps = trace
    capacity = max(1, min_capacity(steps, depth)) + extra
    policy = CheckedLookahead(steps)
    planner = Planner(num_rows=num_rows, capacity=capacity, window=window, depth=depth,
                      policy=policy)
    check_plans(steps, list(planner.plan(steps)), capacity=capacity, depth=depth)


def test_a_longer_window_sees_reuse_that_a_short_one_misses() -> None:
    # Rows 0..3 come back every 4 steps; fillers 10.. are used once.
    steps = [np.array([i % 4, 10 + i]) for i in range(24)]
    fetched = {}
    for window in (1, 2, 8):
        planner = Planner(num_rows=40, capacity=5, window=window, depth=0)
        plans = list(planner.plan(steps))
        fetched[window] = check_plans(steps, plans, capacity=5, depth=0)["fetched"]
    # With 8 steps of foresight the fillers are known to be dead: 4 + 24 fetches.
    assert fetched[8] == 28
    assert fetched[1] >= fetched[2] >= fetched[8]
