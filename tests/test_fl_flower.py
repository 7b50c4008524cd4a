"""FLuID on Flower's simulation engine (Ray): 2 rounds end to end, with a failing client."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr")
pytest.importorskip("ray")


@pytest.mark.slow
def test_flower_simulation_two_rounds_with_a_failing_client():
    from hotpipe.fl.flower import run_flower
    from hotpipe.fl.server import FluidConfig

    # partition 1 raises in round 2: Flower turns it into an error reply, the
    # strategy records it and averages the other two
    recs = run_flower("digits", FluidConfig(method="invariant", r=0.5), 2, (1.0, 1.0, 0.5),
                      seed=0, fail={(2, 1)})
    assert [r["round"] for r in recs] == [0, 1, 2]
    assert recs[1]["failures"] == {} and recs[1]["kept"] == {}  # round 1 profiles
    assert len(recs[2]["failures"]) == 1
    assert "injected fault" in next(iter(recs[2]["failures"].values()))
    assert recs[2]["kept"] == {"hidden.0": 32, "hidden.1": 32}  # the straggler got r = 0.5
    assert recs[2]["straggler"] == recs[1]["straggler"]
    # the sub-model hides the straggler: round 2 is faster than round 1's straggler time
    assert recs[2]["round_time"] < recs[1]["round_time"]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in recs)

    # the same run in the in-process simulator: same straggler choice, sub-model,
    # simulated times and (up to the order of the float sums) the same model
    from hotpipe.fl.simulator import SimConfig, simulate
    from hotpipe.fl.tasks import load_task

    def fault(rnd, cid, sent):
        if (rnd, cid) == (2, 1):
            raise RuntimeError("injected fault")

    sim = simulate(load_task("digits", 3, 0), FluidConfig(method="invariant", r=0.5),
                   SimConfig(2, (1.0, 1.0, 0.5), seed=0), fault=fault).rounds
    for a, b in zip(recs, sim, strict=True):
        assert a["accuracy"] == pytest.approx(b["accuracy"], abs=0.006)  # <= 2 of 360 flip
    for a, b in zip(recs[1:], sim[1:], strict=True):
        assert a["round_time"] == pytest.approx(b["round_time"], rel=1e-9)
        assert a["kept"] == b["kept"]
