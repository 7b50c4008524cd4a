"""FLuID server and simulator: FedAvg equivalence, failures, determinism, data loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hotpipe.errors import ConfigError, DataFormatError
from hotpipe.fl.aggregate import masked_average
from hotpipe.fl.data import ClientData, load_digits_clients, load_femnist_clients
from hotpipe.fl.models import MLPSpec
from hotpipe.fl.server import ClientUpdate, FluidConfig, FluidServer
from hotpipe.fl.simulator import SimConfig, simulate
from hotpipe.fl.submodel import expand, extract, shapes_of
from hotpipe.fl.tasks import Task, load_task
from hotpipe.fl.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPEEDS = (1.0, 1.0, 0.9, 0.8, 0.5)




@pytest.fixture(scope="module")
def digits() -> Task:
    # equal-sized clients so the straggler is the slowest device (speed 0.5)
    clients = load_digits_clients(5, seed=0, alpha=100.0)
    n = min(len(c.y_train) for c in clients)
    clients = [ClientData(c.x_train[:n], c.y_train[:n], c.x_test, c.y_test) for c in clients]
    return Task("digits", MLPSpec(hidden=(32, 32)), clients, TrainConfig(lr=0.1, batch_size=32))


def _run(task: Task, method: str, r: float | None, rounds: int = 4, **kw):
    return simulate(task, FluidConfig(method=method, r=r), SimConfig(rounds, SPEEDS), **kw)


def test_r_one_reduces_to_fedavg_bit_for_bit(digits):
    ref = _run(digits, "fedavg", None, rounds=3)
    for method in ("invariant", "random", "ordered"):
        got = _run(digits, method, 1.0, rounds=3)
        for k, v in ref.final_state.items():
            assert torch.equal(got.final_state[k], v), (method, k)
        assert [r["accuracy"] for r in got.rounds] == [r["accuracy"] for r in ref.rounds]
    # the comparison can fail: a real sub-model changes the weights
    dropped = _run(digits, "invariant", 0.5, rounds=3)
    assert any(not torch.equal(dropped.final_state[k], v) for k, v in ref.final_state.items())


def test_straggler_gets_a_submodel_and_the_round_time_drops(digits):
    fed = _run(digits, "fedavg", None)
    inv = _run(digits, "invariant", None)
    assert inv.rounds[1]["straggler"] == 4 and inv.rounds[1]["kept"] == {}  # round 1 profiles
    assert inv.rounds[2]["r"] == 0.65  # next-slowest 0.8 vs 0.5: ratio 0.625
    assert inv.rounds[2]["kept"] == {"hidden.0": 20, "hidden.1": 20}  # int(0.65 * 32)
    assert inv.rounds[2]["clients"]["4"]["r"] == 0.65
    next_slowest = inv.rounds[2]["clients"]["3"]["sim_time"]
    assert fed.rounds[2]["round_time"] == fed.rounds[2]["clients"]["4"]["sim_time"]
    assert inv.rounds[2]["round_time"] == pytest.approx(next_slowest)  # straggler hidden
    assert inv.rounds[-1]["sim_clock"] < fed.rounds[-1]["sim_clock"]
    assert all(r["cpu_time"] > 0 for r in inv.rounds[1:])


def test_simulator_is_deterministic(digits):
    a, b = _run(digits, "random", 0.75), _run(digits, "random", 0.75)
    assert all(torch.equal(a.final_state[k], b.final_state[k]) for k in a.final_state)


def test_failing_client_is_recorded_and_the_round_goes_on(digits):
    def fault(rnd, cid, sent):
        if (rnd, cid) == (3, 1):
            raise RuntimeError("device went offline")

    h = _run(digits, "invariant", 0.75, fault=fault)
    assert h.rounds[3]["failures"] == {"1": "RuntimeError: device went offline"}
    assert "1" not in h.rounds[3]["clients"] and len(h.rounds[3]["clients"]) == 4
    assert not h.rounds[2]["failures"] and not h.rounds[4]["failures"]
    assert all(torch.isfinite(v).all() for v in h.final_state.values())


def test_all_clients_failing_leaves_the_model_unchanged(digits):
    def fault(rnd, cid, sent):
        if rnd == 2:
            raise OSError("network down")

    seen = []
    h = _run(digits, "invariant", 0.75, rounds=2, fault=fault, on_round=seen.append)
    assert len(h.rounds[2]["failures"]) == 5 and h.rounds[2]["round_time"] == 0.0
    assert h.rounds[2]["accuracy"] == h.rounds[1]["accuracy"]
    assert seen == h.rounds[1:]  # the per-round callback saw every record


def _server(r: float = 0.5):
    spec = MLPSpec(in_features=4, hidden=(6,), classes=3)
    torch.manual_seed(0)
    g = {k: v.detach().clone() for k, v in spec.build().state_dict().items()}
    srv = FluidServer(spec.groups(), shapes_of(g), FluidConfig(method="random", r=r), rounds=5)
    return spec, g, srv


def _updates(srv, g, plans, rnd, bump=0.1):
    out = []
    for cid, keep in plans.items():
        sent = extract(g, srv.groups, keep) if keep is not None else g
        out.append(ClientUpdate(cid, {k: v + bump * (cid + 1) for k, v in sent.items()},
                                num_examples=10 + cid, time=[1.0, 1.0, 4.0][cid] * (rnd or 1)))
    return out


def test_wrong_shaped_reply_is_rejected_and_nothing_else_is_lost():
    spec, g, srv = _server()
    srv.aggregate(1, g, _updates(srv, g, srv.plan(1, [0, 1, 2]), 1))  # profiles: 2 is the straggler
    plans = srv.plan(2, [0, 1, 2])
    assert plans[2] is not None and plans[0] is None
    ups = _updates(srv, g, plans, 2)
    bad = dict(ups[2].state)
    bad["hidden.0.weight"] = g["hidden.0.weight"].clone()  # sent back the full layer
    before = {k: v.clone() for k, v in g.items()}
    new, info = srv.aggregate(2, g, [ups[0], ups[1], ClientUpdate(2, bad, 12, 2.0)])
    assert set(info.failures) == {2} and "hidden.0.weight" in info.failures[2]
    assert info.aggregated == [0, 1]
    assert all(torch.equal(g[k], before[k]) for k in g)  # the server's copy is untouched
    full = [expand(u.state, shapes_of(g), srv.groups, {}) for u in ups[:2]]
    want = masked_average([f for f, _ in full], [m for _, m in full], [10, 11], g)
    assert all(torch.equal(new[k], want[k]) for k in g)


def test_reply_from_a_client_not_asked_is_rejected():
    spec, g, srv = _server()
    plans = srv.plan(1, [0, 1])
    ups = _updates(srv, g, plans, 1) + [ClientUpdate(7, dict(g), 5, 1.0)]
    _, info = srv.aggregate(1, g, ups)
    assert "not sent a model" in info.failures[7]


def test_straggler_update_does_not_decide_invariance():
    spec, g, srv = _server(r=0.5)
    srv.aggregate(1, g, _updates(srv, g, srv.plan(1, [0, 1, 2]), 1, bump=0.0))
    plans = srv.plan(2, [0, 1, 2])
    ups = _updates(srv, g, plans, 2, bump=0.0)  # the two full clients change nothing
    moved = {k: v + 100.0 for k, v in ups[2].state.items()}  # the straggler changes a lot
    srv.aggregate(2, g, [ups[0], ups[1], ClientUpdate(2, moved, 12, 2.0)])
    assert all(bool(v.all()) for v in srv.invariant.values())


def test_bad_config_is_a_config_error(digits):
    with pytest.raises(ConfigError, match="'r'"):
        FluidConfig(method="invariant", r=1.5)
    with pytest.raises(ConfigError, match="'method'"):
        FluidConfig(method="dropall")
    with pytest.raises(ConfigError, match="'speeds'"):
        simulate(digits, FluidConfig(), SimConfig(2, (1.0, 1.0)))
    with pytest.raises(ConfigError, match="'task'"):
        load_task("cifar", 5, 0)


def test_digits_split_is_seeded_and_covers_the_data():
    a, b = load_digits_clients(5, seed=3), load_digits_clients(5, seed=3)
    assert all(torch.equal(x.y_train, y.y_train) for x, y in zip(a, b, strict=True))
    total = sum(len(c.y_train) + len(c.y_test) for c in a)
    assert total == 1797 and all(c.x_train.shape[1] == 64 for c in a)


def test_femnist_bad_file_is_a_data_format_error(tmp_path):
    root = tmp_path / "leaf_samples" / "femnist_test"
    root.mkdir(parents=True)
    (root / "0_test.json").write_text("{not json")
    with pytest.raises(DataFormatError, match="0_test.json"):
        load_femnist_clients(1, 0, tmp_path)
    (root / "0_test.json").write_text(json.dumps(
        {"users": ["w"], "user_data": {"w": {"x": [[0.0] * 10], "y": [1]}}}))
    with pytest.raises(DataFormatError, match="user_data.w.x"):
        load_femnist_clients(1, 0, tmp_path)
    with pytest.raises(DataFormatError, match="1_test.json"):
        (root / "0_test.json").write_text(json.dumps(
            {"user_data": {"w": {"x": [[0.0] * 784] * 3, "y": [1, 2, 3]}}}))
        load_femnist_clients(2, 0, tmp_path)


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED / "leaf_samples").is_dir(), reason="../shared/data absent")
@pytest.mark.parametrize("name, n_test_total", [("femnist", None), ("shakespeare", 1000)])
def test_leaf_tasks_load_and_train_one_round(name, n_test_total):
    task = load_task(name, 5, seed=0, data_dir=SHARED)
    if name == "femnist":
        assert sum(len(c.y_train) + len(c.y_test) for c in task.clients) == 1761
        assert task.clients[0].x_train.shape[1:] == (1, 28, 28)
    else:
        assert sum(len(c.y_test) for c in task.clients) == n_test_total
        assert task.clients[0].x_train.shape[1] == 80
    small = Task(name, task.spec, [ClientData(c.x_train[:16], c.y_train[:16], c.x_test[:16],
                                              c.y_test[:16]) for c in task.clients], task.train)
    h = simulate(small, FluidConfig(method="invariant", r=0.5), SimConfig(2, SPEEDS))
    assert h.rounds[2]["kept"] and 0 <= h.rounds[2]["accuracy"] <= 1


def test_straggler_stays_put_when_its_submodel_makes_it_fast():
    """At r = 0.5 a CNN/LSTM sub-model does ~1/4 of the work. Estimating the
    straggler's full time as t / r (the reference) would make it look faster
    than the next-slowest client and swap it out every other round."""
    spec = MLPSpec(in_features=4, hidden=(6,), classes=3)
    torch.manual_seed(0)
    g = {k: v.detach().clone() for k, v in spec.build().state_dict().items()}
    srv = FluidServer(spec.groups(), shapes_of(g), FluidConfig(method="random", r=0.5),
                      rounds=6, work_fraction=lambda keep: 0.25)
    base = {0: 100.0, 1: 125.0, 2: 200.0}  # full-model times; next-slowest / straggler = 0.625
    for rnd in range(1, 6):
        plans = srv.plan(rnd, [0, 1, 2])
        ups = [ClientUpdate(c, extract(g, srv.groups, k) if k is not None else dict(g), 10,
                            base[c] * (0.25 if k is not None else 1.0)) for c, k in plans.items()]
        _, info = srv.aggregate(rnd, g, ups)
        assert info.straggler == 2
        assert (plans[2] is not None) == (rnd > 1)
    # the default work share is the parameter share, not r
    plain = FluidServer(spec.groups(), shapes_of(g), FluidConfig(method="random", r=0.5), rounds=6)
    keep = {"hidden.0": torch.arange(3)}
    assert plain.work_fraction(keep) == pytest.approx((3 * 4 + 3 + 3 * 3 + 3) / (6 * 4 + 6 + 6 * 3 + 3))
