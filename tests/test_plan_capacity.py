"""A capacity below the pinned working set fails loudly, naming the minimum."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotpipe.errors import CapacityError
from hotpipe.plan import POLICIES, Planner, min_capacity
from tests.test_plan_valid import traces


def run(steps: list[np.ndarray], num_rows: int, capacity: int, depth: int, policy: str,
        window: int = 8) -> Planner:
    planner = Planner(num_rows=num_rows, capacity=capacity, window=window, depth=depth,
                      policy=policy)
    for _ in planner.plan(steps):
        pass
    return planner


@settings(max_examples=80, deadline=None)
@given(trace=traces(max_rows=30, max_steps=20, max_width=8), depth=st.integers(0, 3),
       policy=st.sampled_from(sorted(POLICIES)))
def test_min_capacity_is_exactly_enough(trace: tuple[int, list[np.ndarray]], depth: int,
                                        policy: str) -> None:
    num_rows, steps = trace
    need = min_capacity(steps, depth)
    if need == 0:
        return
    planner = run(steps, num_rows, need, depth, policy)
    assert planner.pinned_peak == need
    if need > 1:
        with pytest.raises(CapacityError) as info:
            run(steps, num_rows, need - 1, depth, policy)
        # The first failing step is the first to pin `need` rows, so the
        # peak so far is `need` itself.
        assert info.value.needed == need and info.value.capacity == need - 1
        assert re.search(rf"need at least {need} rows", str(info.value))


def test_message_names_the_step_and_depth() -> None:
    steps = [np.array([0, 1]), np.array([2, 3]), np.array([0, 4])]
    with pytest.raises(CapacityError, match=r"step 1: steps 0\.\.1 .*depth 1.* 4 distinct rows"):
        run(steps, 5, 3, 1, "lookahead")
    run(steps, 5, 4, 1, "lookahead")  # exactly enough
    run(steps, 5, 2, 0, "lookahead")  # no overlap: one step's rows suffice


def test_min_capacity_counts_distinct_rows_of_consecutive_steps() -> None:
    steps = [np.array([1, 1, 2]), np.array([[2, 3], [3, 3]]), np.array([7])]
    assert min_capacity(steps, 0) == 2
    assert min_capacity(steps, 1) == 3
    assert min_capacity(steps, 5) == 4
    assert min_capacity([], 1) == 0
