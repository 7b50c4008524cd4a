"""Count-min (conservative update) and Misra-Gries against exact counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotpipe.errors import ConfigError
from hotpipe.profile.counters import ExactCounter, SketchCounter, SketchSettings, make_counter
from hotpipe.profile.sketch import CountMinSketch, MisraGries, _top

chunks = st.lists(st.lists(st.integers(0, 300), min_size=0, max_size=200), min_size=1, max_size=6)


def _zipf(n: int, card: int, a: float = 1.1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (np.minimum(rng.zipf(a, n), card) * 7919 % card).astype(np.int64)


@settings(max_examples=60, deadline=None)
@given(chunks, st.integers(2, 8), st.integers(1, 4))
def test_count_min_never_underestimates_and_stays_below_plain_count_min(chunk_list, width_log2, depth):
    cms = CountMinSketch(width_log2=width_log2, depth=depth, seed=3)
    plain = np.zeros_like(cms.table)  # a plain count-min with the same hashes
    exact: dict[int, int] = {}
    for c in chunk_list:
        ids = np.array(c, dtype=np.int64)
        cms.update(ids)
        if ids.size:
            np.add.at(plain, cms._cells(ids).ravel(), 1)
        for i in c:
            exact[i] = exact.get(i, 0) + 1
    assert cms.total == sum(exact.values())
    keys = np.array(sorted(exact) or [0], dtype=np.int64)
    est = cms.estimate(keys)
    truth = np.array([exact.get(int(k), 0) for k in keys])
    assert np.all(est >= truth)
    assert np.all(cms.table <= plain)


def test_count_min_error_within_bound_on_zipf():
    n = 200_000
    ids = _zipf(n, 50_000)
    cms = CountMinSketch(width_log2=12, depth=4, seed=1)
    for chunk in np.array_split(ids, 7):
        cms.update(chunk)
    uniq, truth = np.unique(ids, return_counts=True)
    over = cms.estimate(uniq) - truth
    bound = cms.epsilon * n
    assert over.min() >= 0
    # Per id: P(over > eps N) <= delta; the average is bounded by eps N / e.
    assert float(np.mean(over > bound)) <= cms.delta
    assert float(over.mean()) <= bound / math.e


@settings(max_examples=60, deadline=None)
@given(chunks, st.integers(1, 20))
def test_misra_gries_bounds_and_heavy_hitters(chunk_list, capacity):
    mg = MisraGries(capacity)
    exact: dict[int, int] = {}
    for c in chunk_list:
        mg.update(np.array(c, dtype=np.int64))
        for i in c:
            exact[i] = exact.get(i, 0) + 1
    n = sum(exact.values())
    assert mg.ids.shape[0] <= capacity
    assert mg.max_error <= n / (capacity + 1)
    keys = np.array(sorted(exact) or [0], dtype=np.int64)
    est = mg.estimate(keys)
    truth = np.array([exact.get(int(k), 0) for k in keys])
    assert np.all(est <= truth)
    assert np.all(truth - est <= mg.max_error)
    heavy = keys[truth > mg.max_error]
    assert np.isin(heavy, mg.ids).all()


def test_sketch_counter_recovers_the_top_rows():
    ids = _zipf(100_000, 1 << 16, a=1.2)
    sk = SketchCounter(SketchSettings(width_log2=12, depth=4, heavy=512))
    ex = ExactCounter(1 << 16)
    for chunk in np.array_split(ids, 5):
        sk.update(chunk)
        ex.update(chunk)
    k = 50
    assert k <= sk.known()
    got, _ = sk.top(k)
    want, _ = ex.top(k)
    assert set(got.tolist()) == set(want.tolist())


def test_top_breaks_ties_by_id_and_make_counter_picks_exact_for_small_tables():
    ids, counts = _top(np.array([5, 3, 9, 1]), np.array([2, 7, 2, 2]), 3)
    assert ids.tolist() == [3, 1, 5] and counts.tolist() == [7, 2, 2]
    s = SketchSettings(width_log2=4, depth=2)
    assert isinstance(make_counter(32, exact=False, settings=s), ExactCounter)
    assert isinstance(make_counter(33, exact=False, settings=s), SketchCounter)
    assert isinstance(make_counter(10**6, exact=True, settings=s), ExactCounter)


def test_bad_sketch_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="width_log2"):
        CountMinSketch(width_log2=0)
    with pytest.raises(ConfigError, match="heavy"):
        MisraGries(0)
