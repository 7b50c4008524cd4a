"""The compiled lookahead planner gives exactly the numpy reference's plans.

Every array of every StepPlan is compared (ids, slots, their order), on
random traces with evictions, prefetch depths 0..3, pinned rows, aging, and
the error paths; plus the fallback when numba is missing.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotpipe.errors import CapacityError, ConfigError, DataFormatError
from hotpipe.plan import LookaheadPolicy, Planner, kernel, min_capacity
from hotpipe.plan.reference import check_plans
from hotpipe.plan.types import StepPlan
from tests.test_plan_valid import traces

pytestmark = pytest.mark.skipif(not kernel.AVAILABLE, reason="numba is not installed")

_FIELDS = ("lookup_slots", "unique_ids", "unique_slots", "fetch_ids", "fetch_slots",
           "evict_ids", "evict_slots")


def assert_same_plans(got: list[StepPlan], want: list[StepPlan]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (g.step, g.preloaded) == (w.step, w.preloaded)
        for f in _FIELDS:
            a, b = getattr(g, f), getattr(w, f)
            assert a.dtype == b.dtype and a.shape == b.shape, (w.step, f, a, b)
            assert np.array_equal(a, b), (w.step, f, a, b)


def both(steps: list[np.ndarray], num_rows: int, capacity: int, window: int, depth: int,
         age_every: int | None = None) -> tuple[list[StepPlan], list[StepPlan]]:
    """(compiled plans, reference plans) of the same planner settings."""
    planner = Planner(num_rows=num_rows, capacity=capacity, window=window, depth=depth,
                      kernel="compiled")
    fast = list(kernel.CompiledLookahead(planner, age_every=age_every).run(iter(steps)))
    ref = Planner(num_rows=num_rows, capacity=capacity, window=window, depth=depth,
                  policy=LookaheadPolicy(age_every=age_every), kernel="reference")
    return fast, list(ref.plan(steps))


@settings(max_examples=80, deadline=None)
@given(trace=traces(max_rows=40, max_steps=40, max_width=12), extra=st.integers(0, 8),
       window=st.integers(1, 12), depth=st.integers(0, 3),
       age_every=st.one_of(st.none(), st.integers(1, 6)))
def test_compiled_plans_equal_the_reference(trace: tuple[int, list[np.ndarray]], extra: int,
                                            window: int, depth: int,
                                            age_every: int | None) -> None:
    num_rows, steps = trace
    capacity = max(1, min_capacity(steps, depth)) + extra
    fast, ref = both(steps, num_rows, capacity, window, depth, age_every)
    assert_same_plans(fast, ref)
    check_plans(steps, fast, capacity=capacity, depth=depth)


@pytest.mark.parametrize("depth,window,frac,age_every", [
    (0, 1, 0.3, None), (1, 16, 0.1, None), (2, 40, 0.2, None), (3, 7, 0.3, None),
    (0, 2, 0.5, 10**6), (1, 2, 0.5, 10**6)])  # rare aging: the no-use queues get compacted
def test_compiled_equals_reference_on_a_long_skewed_trace(depth: int, window: int, frac: float,
                                                          age_every: int | None) -> None:
    """Thousands of evictions, both victim kinds, aging and queue compaction."""
    rng = np.random.default_rng(depth)
    rows = 3000
    ranks = rng.zipf(1.2, size=(200, 96, 4)) - 1
    steps = list(rng.permutation(rows)[np.minimum(ranks, rows - 1)])
    capacity = max(min_capacity(steps, depth), int(frac * rows))
    fast, ref = both(steps, rows, capacity, window, depth, age_every)
    assert sum(p.evict_ids.shape[0] for p in ref) > 1000
    assert_same_plans(fast, ref)
    if age_every:
        planner = Planner(num_rows=rows, capacity=capacity, window=window, depth=depth)
        run = kernel.CompiledLookahead(planner, age_every=age_every)
        assert len(list(run.run(iter(steps)))) == len(steps)
        assert run.S[kernel.COMPACTIONS] > 0


def test_default_planner_uses_the_kernel_and_matches() -> None:
    rng = np.random.default_rng(7)
    steps = [rng.integers(0, 300, size=(32, 3)) for _ in range(50)]
    kw = dict(num_rows=300, capacity=150, window=6, depth=1)
    auto = Planner(**kw)
    assert auto.compiled
    assert_same_plans(list(auto.plan(steps)), list(Planner(**kw, kernel="reference").plan(steps)))
    assert auto.pinned_peak == min_capacity(steps, 1)


def test_errors_match_the_reference() -> None:
    rng = np.random.default_rng(3)
    steps = [rng.integers(0, 100, size=20) for _ in range(10)]
    need = min_capacity(steps, 2)
    msgs = []
    for k in ("compiled", "reference"):
        planner = Planner(num_rows=100, capacity=need - 1, window=4, depth=2, kernel=k)
        with pytest.raises(CapacityError) as e:
            list(planner.plan(steps))
        msgs.append((str(e.value), e.value.needed, planner.pinned_peak))
    assert msgs[0] == msgs[1]
    bad = [np.array([1, 2]), np.array([3, 100])]
    for k in ("compiled", "reference"):
        with pytest.raises(DataFormatError, match="step 1"):
            list(Planner(num_rows=100, capacity=10, window=4, kernel=k).plan(bad))
        with pytest.raises(DataFormatError, match="integers"):
            list(Planner(num_rows=100, capacity=10, window=4, kernel=k).plan([np.ones(2)]))


def test_without_numba_the_reference_plans_and_says_so(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(kernel, "AVAILABLE", False)
    monkeypatch.setattr(kernel, "_noted", False)
    with pytest.raises(ConfigError, match="numba"):
        Planner(num_rows=10, capacity=4, window=2, kernel="compiled")
    steps = [np.array([1, 2, 3]), np.array([4, 5, 1]), np.array([6, 2, 7])]
    planner = Planner(num_rows=10, capacity=4, window=2, depth=0)
    assert not planner.compiled
    plans = list(planner.plan(steps))
    list(planner.plan(steps))
    err = capsys.readouterr().err
    assert err.count("numba is not installed") == 1 and err.count("\n") == 1
    check_plans(steps, plans, capacity=4, depth=0)
    with pytest.raises(ConfigError, match="kernel"):
        Planner(num_rows=10, capacity=4, window=2, kernel="fast")
