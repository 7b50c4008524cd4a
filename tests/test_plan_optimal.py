"""With the whole trace in the window, lookahead fetches the fewest rows possible."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotpipe.plan import Planner, min_capacity
from hotpipe.plan.reference import belady_fetches, check_plans
from tests.test_plan_valid import traces


def exhaustive_min_fetches(steps: list[np.ndarray], capacity: int, depth: int) -> int:
    """The true optimum by trying every legal eviction set at every step.

    Same model as ``belady_fetches`` (a step's distinct ids are needed at
    once; rows of steps s-depth..s are pinned), but any number of unpinned
    rows may be evicted at a step, not just as many as the misses need.
    """
    sets = [frozenset(np.asarray(x).ravel().tolist()) for x in steps]

    @functools.cache
    def best(s: int, cache: frozenset[int]) -> float:
        if s == len(sets):
            return 0
        pinned = frozenset().union(*sets[max(0, s - depth) : s + 1])
        miss = sets[s] - cache
        evictable = sorted(cache - pinned)
        over = len(cache) + len(miss) - capacity
        out = float("inf")
        for n in range(max(over, 0), len(evictable) + 1):
            for gone in itertools.combinations(evictable, n):
                out = min(out, len(miss) + best(s + 1, (cache - frozenset(gone)) | miss))
        return out

    return int(best(0, frozenset()))


def fetched(steps: list[np.ndarray], num_rows: int, capacity: int, window: int, depth: int,
            policy: str) -> int:
    planner = Planner(num_rows=num_rows, capacity=capacity, window=window, depth=depth,
                      policy=policy)
    plans = list(planner.plan(steps))
    return check_plans(steps, plans, capacity=capacity, depth=depth,
                       demand=policy != "static")["fetched"]


@settings(max_examples=120, deadline=None)
@given(trace=traces(max_rows=6, max_steps=8, max_width=3), extra=st.integers(0, 3),
       depth=st.integers(0, 2))
def test_belady_reference_is_optimal(trace: tuple[int, list[np.ndarray]], extra: int,
                                     depth: int) -> None:
    _, steps = trace
    capacity = max(1, min_capacity(steps, depth)) + extra
    assert belady_fetches(steps, capacity=capacity, depth=depth) == \
        exhaustive_min_fetches(steps, capacity, depth)


@settings(max_examples=200, deadline=None)
@given(trace=traces(max_rows=40, max_steps=40, max_width=10), extra=st.integers(0, 10),
       depth=st.integers(0, 3))
@pytest.mark.slow
def test_full_window_lookahead_matches_belady(trace: tuple[int, list[np.ndarray]], extra: int,
                                              depth: int) -> None:
    num_rows, steps = trace
    capacity = max(1, min_capacity(steps, depth)) + extra
    window = len(steps) + 1
    assert fetched(steps, num_rows, capacity, window, depth, "lookahead") == \
        belady_fetches(steps, capacity=capacity, depth=depth)


@settings(max_examples=150, deadline=None)
@given(trace=traces(max_rows=40, max_steps=40, max_width=10), extra=st.integers(0, 10),
       depth=st.integers(0, 3))
@pytest.mark.slow
def test_full_window_lookahead_never_fetches_more_than_the_others(
        trace: tuple[int, list[np.ndarray]], extra: int, depth: int) -> None:
    num_rows, steps = trace
    capacity = max(1, min_capacity(steps, depth)) + extra
    window = len(steps) + 1
    best = fetched(steps, num_rows, capacity, window, depth, "lookahead")
    for policy in ("lru", "lfu", "static"):
        assert best <= fetched(steps, num_rows, capacity, window, depth, policy), policy


def test_lookahead_beats_lru_on_a_cyclic_scan() -> None:
    # Cycling over capacity + 1 rows is LRU's worst case: every access misses.
    steps = [np.array([i % 5]) for i in range(40)]
    assert fetched(steps, 5, 4, 64, 0, "lru") == 40
    assert fetched(steps, 5, 4, 64, 0, "lookahead") == belady_fetches(steps, capacity=4, depth=0)
    assert belady_fetches(steps, capacity=4, depth=0) < 15
