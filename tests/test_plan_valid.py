"""Every policy's plans are valid, checked by the plain-Python replay."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotpipe.errors import ConfigError, DataFormatError
from hotpipe.plan import POLICIES, Planner, StaticPolicy, min_capacity
from hotpipe.plan.reference import InvalidPlanError, check_plans


@st.composite
def traces(draw: st.DrawFn, max_rows: int = 24, max_steps: int = 24,
           max_width: int = 8) -> tuple[int, list[np.ndarray]]:
    """(num_rows, steps): steps of 1..max_width ids, sometimes 2-D, skewed to low ids."""
    num_rows = draw(st.integers(1, max_rows))
    hot = draw(st.integers(1, num_rows))  # most ids come from a hot prefix
    ids = st.one_of(st.integers(0, hot - 1), st.integers(0, num_rows - 1))
    steps = []
    for _ in range(draw(st.integers(0, max_steps))):
        step = np.array(draw(st.lists(ids, min_size=1, max_size=max_width)), dtype=np.int64)
        if draw(st.booleans()) and step.shape[0] % 2 == 0:
            step = step.reshape(-1, 2)  # a (B, T) batch
        steps.append(step)
    return num_rows, steps


def plan_all(steps: list[np.ndarray], num_rows: int, capacity: int, window: int, depth: int,
             policy: str | StaticPolicy) -> list:
    planner = Planner(num_rows=num_rows, capacity=capacity, window=window, depth=depth,
                      policy=policy)
    return list(planner.plan(steps))


@settings(max_examples=150, deadline=None)
@given(trace=traces(), extra=st.integers(0, 6), window=st.integers(1, 30),
       depth=st.integers(0, 3), policy=st.sampled_from(sorted(POLICIES)))
def test_plans_are_valid(trace: tuple[int, list[np.ndarray]], extra: int, window: int,
                         depth: int, policy: str) -> None:
    num_rows, steps = trace
    capacity = max(1, min_capacity(steps, depth)) + extra
    plans = plan_all(steps, num_rows, capacity, window, depth, policy)
    totals = check_plans(steps, plans, capacity=capacity, depth=depth, demand=policy != "static")
    assert totals["lookups"] == sum(s.size for s in steps)


@settings(max_examples=40, deadline=None)
@given(trace=traces(max_rows=60, max_steps=30, max_width=20), depth=st.integers(0, 2),
       profile=st.integers(1, 10), margin=st.sampled_from([0.0, 0.1, 1.0]))
def test_static_at_min_capacity_demotes_instead_of_failing(
        trace: tuple[int, list[np.ndarray]], depth: int, profile: int, margin: float) -> None:
    num_rows, steps = trace
    capacity = max(1, min_capacity(steps, depth))
    policy = StaticPolicy(profile_steps=profile, scratch_margin=margin)
    plans = plan_all(steps, num_rows, capacity, 4, depth, policy)
    check_plans(steps, plans, capacity=capacity, depth=depth, demand=False)


def test_static_preloads_the_hot_set_and_evicts_cold_rows_once_unpinned() -> None:
    steps = [np.array([0, 1, 5]), np.array([0, 1, 6]), np.array([0, 2, 7]), np.array([1, 8])]
    policy = StaticPolicy(profile_steps=2, scratch_margin=0.0)
    plans = plan_all(steps, 10, 5, 1, 0, policy)
    # The 4 profiled rows are hot; no profiled step pins a cold row, so 1
    # scratch slot is left. 6 is loaded ahead of its use at step 1.
    assert policy.hot_rows == 4
    assert plans[0].fetch_ids.tolist()[-1] == 6 and plans[0].preloaded == 1
    assert plans[1].fetch_ids.size == 0
    # Step 2 has 2 cold rows for 1 free slot: the least used hot row is demoted.
    assert plans[2].evict_ids.tolist() == [6]
    # Cold rows leave as soon as no step in flight uses them (depth 0).
    assert sorted(plans[3].evict_ids.tolist()) == [2, 7]
    check_plans(steps, plans, capacity=5, depth=0, demand=False)


def test_lookup_slots_keep_the_input_shape_and_dtype() -> None:
    steps = [np.arange(6, dtype=np.int32).reshape(2, 3), np.array([[5, 9, 9]])]
    plans = plan_all(steps, 10, 8, 2, 1, "lookahead")
    assert plans[0].lookup_slots.shape == (2, 3) and plans[1].lookup_slots.shape == (1, 3)
    assert all(p.lookup_slots.dtype == np.int64 for p in plans)
    check_plans(steps, plans, capacity=8, depth=1)


def test_a_policy_instance_can_be_passed_and_reused() -> None:
    steps = [np.array([1, 2]), np.array([3, 4]), np.array([1, 5])]
    planner = Planner(num_rows=6, capacity=3, window=3, depth=0, policy=POLICIES["lru"]())
    first = [p.fetch_ids.tolist() for p in planner.plan(steps)]
    assert first == [p.fetch_ids.tolist() for p in planner.plan(steps)]


def test_bad_configuration_and_ids_are_rejected() -> None:
    with pytest.raises(ConfigError, match="policy"):
        Planner(num_rows=4, capacity=2, window=1, policy="fifo")
    with pytest.raises(ConfigError, match="window"):
        Planner(num_rows=4, capacity=2, window=0)
    with pytest.raises(ConfigError, match="depth"):
        Planner(num_rows=4, capacity=2, window=1, depth=-1)
    for policy in ("lookahead", "static"):  # static reads ids early, to profile them
        planner = Planner(num_rows=4, capacity=2, window=1, policy=policy)
        with pytest.raises(DataFormatError, match=r"step 1: row id out of range.*found '4'"):
            list(planner.plan([np.array([1, 2]), np.array([1, 4])]))
        with pytest.raises(DataFormatError, match="out of range"):
            list(planner.plan([np.array([-1])]))
        with pytest.raises(DataFormatError, match="integer"):
            list(planner.plan([np.array([0.5])]))


def test_checker_catches_a_wrong_lookup() -> None:
    steps = [np.array([1, 2])]
    plan = plan_all(steps, 4, 2, 1, 0, "lru")[0]
    bad = type(plan)(**{**plan.__dict__, "lookup_slots": plan.lookup_slots[::-1].copy()})
    with pytest.raises(InvalidPlanError, match="looks row"):
        check_plans(steps, [bad], capacity=2, depth=0)
