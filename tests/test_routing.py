"""placement/routing.py against a plain, per-rank reference written from its contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hotpipe.placement.routing import Routing

R = 60


def reference(needs: list[list[int]], rank: int, hot: set[int]) -> dict[str, list[int]]:
    """Rank ``rank`` of W = len(needs): rows it serves, requester by requester, ascending
    within one; its distinct ids, exchanged ones by owner then replicated ones; touched."""
    w = len(needs)
    serve, counts = [], []
    for ids in needs:
        mine = sorted({g for g in ids if g % w == rank and g not in hot})
        serve += mine
        counts.append(len(mine))
    own = sorted(set(needs[rank]))
    cold = [g for g in own if g not in hot]
    uniq = sorted(cold, key=lambda g: (g % w, g)) + [g for g in own if g in hot]
    touched = sorted({g for ids in needs for g in ids if g in hot})
    return {"serve": serve, "counts": counts, "uniq": uniq, "touched": touched,
            "recv": [sum(1 for g in cold if g % w == o) for o in range(w)]}


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5).flatmap(lambda w: st.tuples(
    st.just(w), st.integers(0, w - 1),
    st.lists(st.lists(st.integers(0, R - 1), max_size=12), min_size=w, max_size=w),
    st.sets(st.integers(0, R - 1), max_size=8))))
def test_routing_matches_the_plain_reference(case: tuple[int, int, list[list[int]], set[int]]) -> None:
    w, rank, needs, hot = case  # unequal lengths and empty requests included
    rt = Routing(R, world_size=w, rank=rank,
                 replicated=torch.tensor(sorted(hot), dtype=torch.int64) if hot else None)
    got = rt.route([torch.tensor(n, dtype=torch.int64) for n in needs])
    ref = reference(needs, rank, hot)
    assert got.serve_ids.tolist() == ref["serve"]
    assert got.serve.tolist() == [g // w for g in ref["serve"]]
    assert got.send_counts == ref["counts"] and got.recv_counts == ref["recv"]
    assert got.uniq.tolist() == ref["uniq"]
    assert got.touched.tolist() == (ref["touched"] if hot else [])
    # inverse: every lookup finds its id
    assert got.uniq[got.inverse].tolist() == needs[rank]
    # the scratch flags are all clear between calls
    assert not rt.scratch().any()


def test_member_clears_its_flags_even_when_it_fails() -> None:
    rt = Routing(10, world_size=2, rank=0)
    assert rt.member(torch.tensor([1, 2, 3]), torch.tensor([[2, 2], [9, 3]])).tolist() == [False, True, True]
    with pytest.raises(IndexError):
        rt.member(torch.tensor([1, 99]), torch.tensor([4, 5]))  # 99 is out of range
    assert not rt.scratch().any()
    assert np.array_equal(rt.member(torch.tensor([4]), torch.tensor([5])).numpy(), [False])
