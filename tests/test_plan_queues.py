"""The lazy-deletion FIFOs against a plain list."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hotpipe.plan import POLICIES, Planner
from hotpipe.plan.queues import BucketedFifo, RowFifo, log2_bucket

ops = st.lists(st.one_of(
    st.tuples(st.just("push"), st.lists(st.integers(0, 50), max_size=300)),
    st.tuples(st.just("pop"), st.integers(1, 400)),
    st.tuples(st.just("kill"), st.integers(0, 50)),  # entries of this id go stale
), max_size=40)


@settings(max_examples=150, deadline=None)
@given(ops=ops)
def test_row_fifo_matches_a_list(ops: list[tuple]) -> None:
    q, ref = RowFifo(initial=4), []
    dead: set[int] = set()
    stamp = 0
    for op, arg in ops:
        if op == "push":
            q.push(np.array(arg, dtype=np.int64), np.full(len(arg), stamp, dtype=np.int32))
            ref += [(x, stamp) for x in arg]
            stamp += 1
        elif op == "kill":
            dead.add(arg)
        else:
            def alive(ids: np.ndarray, stamps: np.ndarray) -> np.ndarray:
                return ~np.isin(ids, list(dead))

            got = q.pop(arg, alive).tolist()
            keep = [i for i, (x, _) in enumerate(ref) if x not in dead][:arg]
            assert got == [ref[i][0] for i in keep]
            # Popped entries and every stale one before the last popped are gone.
            cut = keep[-1] + 1 if len(keep) == arg else len(ref)
            ref = [e for i, e in enumerate(ref) if i >= cut and i not in keep]


def test_bucketed_fifo_drains_low_buckets_first_in_order() -> None:
    q = BucketedFifo(4)
    q.push(np.array([10, 11, 12, 13]), np.zeros(4, dtype=np.int32), np.array([2, 0, 2, 0]))
    q.push(np.array([14, 15]), 7, np.array([1, 0]))
    always = lambda ids, stamps: np.ones(ids.shape[0], dtype=bool)  # noqa: E731
    assert q.pop(3, always).tolist() == [11, 13, 15]
    assert q.pop(10, lambda ids, st: ids != 12).tolist() == [14, 10]
    assert len(q) == 0


def test_log2_bucket() -> None:
    assert log2_bucket(np.array([1, 2, 3, 4, 7, 8, 1 << 30])).tolist() == [0, 1, 1, 2, 2, 3, 30]


def test_queues_stay_bounded_when_nothing_is_evicted() -> None:
    # 50 rows reused forever in a 50-slot cache: every step unpins rows,
    # nothing is ever popped, so without compaction the queues would grow.
    rng = np.random.default_rng(0)
    steps = [rng.integers(0, 50, 8) for _ in range(3000)]
    for name in ("lru", "lfu", "lookahead"):
        policy = POLICIES[name]()
        planner = Planner(num_rows=50, capacity=50, window=4, depth=1, policy=policy)
        for plan in planner.plan(steps):
            assert plan.evict_ids.size == 0
        queue = {"lru": "_fifo", "lfu": "_buckets", "lookahead": "_never"}[name]
        assert len(getattr(policy, queue)) <= 2 * 50 + 4096, name


def test_compact_keeps_valid_entries_in_order() -> None:
    q = RowFifo(initial=2)
    q.push(np.arange(10), np.zeros(10, dtype=np.int32))
    q.pop(2, lambda ids, st: np.ones(ids.shape[0], dtype=bool))
    q.compact(lambda ids, st: ids % 3 != 0)
    assert len(q) == 5
    assert q.pop(10, lambda ids, st: np.ones(ids.shape[0], dtype=bool)).tolist() == [2, 4, 5, 7, 8]
