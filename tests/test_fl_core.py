"""FLuID core: tied groups, sub-models, masked aggregation, dropout, invariance, profiling.

Each optimized piece is checked against a brute-force reference written as
loops over neurons or elements.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hotpipe.errors import ConfigError
from hotpipe.fl.aggregate import fedavg, masked_average
from hotpipe.fl.dropout import n_dropped, plan_submodel, select_dropped
from hotpipe.fl.errors import SubModelShapeError
from hotpipe.fl.groups import Tie, check_groups, widths_from_shapes
from hotpipe.fl.invariance import (
    ThresholdConfig,
    ThresholdSchedule,
    invariant_neurons,
    max_relative_change,
)
from hotpipe.fl.models import CNNSpec, LSTMSpec, MLPSpec, widths_of
from hotpipe.fl.profiling import StragglerProfiler, r_for_ratio
from hotpipe.fl.submodel import expand, extract, shapes_of

# small versions of the three families keep hypothesis fast
SPECS = {
    "mlp": MLPSpec(in_features=6, hidden=(7, 5), classes=3),
    "cnn": CNNSpec(channels=(3, 4), fc=6, classes=5, side=8),
    "lstm": LSTMSpec(vocab=11, embed=3, hidden=(5, 4), classes=11, seq_len=6),
}

pytestmark = pytest.mark.usefixtures("one_thread")




def _inputs(name: str, gen: torch.Generator) -> torch.Tensor:
    if name == "mlp":
        return torch.randn(4, 6, generator=gen)
    if name == "cnn":
        return torch.randn(4, 1, 8, 8, generator=gen)
    return torch.randint(0, 11, (4, 6), generator=gen)


def _state(spec, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.detach().clone() for k, v in spec.build().state_dict().items()}


def _random_keep(spec, gen: torch.Generator, r: float) -> dict[str, torch.Tensor]:
    return plan_submodel("random", spec.groups(), r, gen)


# --- tied groups --------------------------------------------------------------------------


def test_tie_indices_match_a_loop_over_neurons():
    n = 5
    for block, repeat in [(1, 1), (3, 1), (1, 4), (2, 3)]:
        tie = Tie("w", 0, block=block, repeat=repeat)
        keep = torch.tensor([0, 2, 4])
        want = [rep * n * block + i * block + k
                for rep in range(repeat) for i in keep.tolist() for k in range(block)]
        assert tie.indices(keep, n).tolist() == want
        assert tie.axis_len(n) == repeat * n * block


@pytest.mark.parametrize("name", list(SPECS))
def test_groups_match_the_built_model(name):
    spec = SPECS[name]
    shapes = shapes_of(spec.build().state_dict())
    check_groups(spec.groups(), shapes)  # raises if any tie is off
    assert widths_from_shapes(spec.groups(), shapes) == {g.name: g.size for g in spec.groups()}


def test_check_groups_catches_a_wrong_tie():
    spec = SPECS["cnn"]
    shapes = shapes_of(spec.build().state_dict())
    bad = list(spec.groups())
    conv2 = bad[1]
    # forgetting the conv -> FC block makes the FC axis the wrong length
    bad[1] = type(conv2)(conv2.name, conv2.size, (*conv2.ties[:2], Tie("fc1.weight", 1)))
    with pytest.raises(ConfigError, match="fc1.weight"):
        check_groups(bad, shapes)


@pytest.mark.parametrize("name", list(SPECS))
def test_macs_count_matches_a_flop_counter_or_hand_count(name):
    from torch.utils.flop_counter import FlopCounterMode

    spec = SPECS[name]
    for widths in (None, {g.name: max(1, g.size // 2) for g in spec.groups()}):
        model = spec.build(widths)
        x = _inputs(name, torch.Generator().manual_seed(0))[:1]
        if name == "lstm":  # the flop counter does not see the fused LSTM kernel
            hs = [model.lstm[0].hidden_size, model.lstm[1].hidden_size]
            want = 6 * (4 * hs[0] * (3 + hs[0]) + 4 * hs[1] * (hs[0] + hs[1])) + hs[1] * 11
        else:
            with FlopCounterMode(display=False) as fc:
                model(x)
            want = fc.get_total_flops() // 2  # one MAC = two flops
        assert spec.macs(widths) == want


# --- sub-model extraction ------------------------------------------------------------------


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(list(SPECS)), seed=st.integers(0, 10_000),
       r=st.sampled_from([0.95, 0.85, 0.75, 0.65, 0.5, 0.2]))
def test_extract_then_expand_is_identity_on_kept_weights(name, seed, r):
    spec = SPECS[name]
    state = _state(spec, seed)
    keep = _random_keep(spec, torch.Generator().manual_seed(seed), r)
    sub = extract(state, spec.groups(), keep)
    full, mask = expand(sub, shapes_of(state), spec.groups(), keep)
    for p, t in state.items():
        assert torch.equal(full[p][mask[p]], t[mask[p]])
        assert not full[p][~mask[p]].any()
    # reference mask: an element is kept iff every tied index of it is kept
    ref = {p: torch.ones(s, dtype=torch.bool) for p, s in shapes_of(state).items()}
    for g in spec.groups():
        for t in g.ties:
            dropped = set(range(g.size)) - set(keep[g.name].tolist())
            for i in dropped:
                for rep, k in itertools.product(range(t.repeat), range(t.block)):
                    ref[t.param].select(t.dim, rep * g.size * t.block + i * t.block + k).fill_(False)
    for p in ref:
        assert torch.equal(mask[p], ref[p]), p


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(list(SPECS)), seed=st.integers(0, 10_000),
       r=st.sampled_from([0.85, 0.5, 0.3]))
def test_submodel_computes_the_full_model_with_dropped_neurons_silenced(name, seed, r):
    """The strongest check that the ties are right: a dropped neuron whose own
    weights and bias are zero outputs 0 (ReLU(0); an LSTM unit with all-zero gate
    rows keeps c = h = 0), so the full model then equals the narrow one."""
    spec = SPECS[name]
    state = _state(spec, seed)
    gen = torch.Generator().manual_seed(seed)
    keep = _random_keep(spec, gen, r)
    small = spec.build(widths_of(spec, keep))
    small.load_state_dict(extract(state, spec.groups(), keep))
    silenced = {k: v.clone() for k, v in state.items()}
    for g in spec.groups():
        dropped = sorted(set(range(g.size)) - set(keep[g.name].tolist()))
        for t in g.ties:
            own = t.param.startswith(g.name) and t.dim == 0  # outgoing rows, not the consumer
            if own and dropped:
                idx = t.indices(torch.tensor(dropped), g.size)
                silenced[t.param].index_fill_(0, idx, 0.0)
    big = spec.build()
    big.load_state_dict(silenced)
    x = _inputs(name, gen)
    torch.testing.assert_close(small(x), big(x), rtol=1e-5, atol=1e-6)


def test_expand_rejects_a_wrong_shaped_submodel():
    spec = SPECS["mlp"]
    state = _state(spec, 0)
    keep = _random_keep(spec, torch.Generator().manual_seed(0), 0.5)
    sub = extract(state, spec.groups(), keep)
    sub["hidden.0.weight"] = sub["hidden.0.weight"][:-1]
    with pytest.raises(SubModelShapeError, match="hidden.0.weight") as e:
        expand(sub, shapes_of(state), spec.groups(), keep, client=3)
    assert e.value.client == 3 and e.value.found == (2, 6) and e.value.expected == (3, 6)
    missing = extract(state, spec.groups(), keep)
    del missing["out.bias"]
    with pytest.raises(SubModelShapeError, match="out.bias"):
        expand(missing, shapes_of(state), spec.groups(), keep)


# --- aggregation ---------------------------------------------------------------------------


def _brute_masked(states, masks, weights, fallback):
    out = {}
    for p, old in fallback.items():
        res = old.clone().reshape(-1)
        for e in range(res.numel()):
            num = den = 0.0
            for s, m, w in zip(states, masks, weights, strict=True):
                if m[p].reshape(-1)[e]:
                    num += w * float(s[p].reshape(-1)[e])
                    den += w
            if den > 0:
                res[e] = num / den
        out[p] = res.reshape(old.shape)
    return out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), clients=st.integers(1, 5), p_keep=st.floats(0.0, 1.0))
def test_masked_average_matches_brute_force(seed, clients, p_keep):
    gen = torch.Generator().manual_seed(seed)
    shapes = {"a": (3, 4), "b": (5,)}
    fallback = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
    states = [{k: torch.randn(s, generator=gen) for k, s in shapes.items()} for _ in range(clients)]
    masks = [{k: torch.rand(s, generator=gen) < p_keep for k, s in shapes.items()}
             for _ in range(clients)]
    for s, m in zip(states, masks, strict=True):  # dropped content must never leak in
        for k in s:
            s[k][~m[k]] = float("nan")
    weights = [float(torch.randint(1, 50, (1,), generator=gen)) for _ in range(clients)]
    got = masked_average(states, masks, weights, fallback)
    want = _brute_masked(states, masks, weights, fallback)
    for k in shapes:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), clients=st.integers(1, 6))
def test_all_kept_masked_average_is_fedavg_bit_for_bit(seed, clients):
    gen = torch.Generator().manual_seed(seed)
    states = [{"w": torch.randn(7, 3, generator=gen)} for _ in range(clients)]
    masks = [{"w": torch.ones(7, 3, dtype=torch.bool)} for _ in range(clients)]
    weights = [float(torch.randint(1, 500, (1,), generator=gen)) for _ in range(clients)]
    a = masked_average(states, masks, weights, {"w": torch.zeros(7, 3)})["w"]
    b = fedavg(states, weights)["w"]
    assert torch.equal(a, b)
    # and the reference is a real average: not e.g. the first client's weights
    ref = sum(s["w"].double() * w for s, w in zip(states, weights, strict=True)) / sum(weights)
    torch.testing.assert_close(b.double(), ref, rtol=1e-6, atol=1e-6)


# --- dropout selection ---------------------------------------------------------------------


def test_drop_counts_follow_the_reference_formula():
    assert n_dropped(120, 0.95) == 120 - int(0.95 * 120) == 6
    assert n_dropped(16, 0.5) == 8
    assert n_dropped(64, 1.0) == 0
    assert n_dropped(3, 0.1) == 2  # never drop the last neuron


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.01, 2, float("nan"), float("inf")])
def test_r_outside_unit_interval_is_rejected(bad):
    with pytest.raises(ConfigError, match="'r'"):
        plan_submodel("random", SPECS["mlp"].groups(), bad, torch.Generator())


def test_ordered_keeps_a_prefix():
    keep = plan_submodel("ordered", SPECS["cnn"].groups(), 0.5, torch.Generator())
    for g in SPECS["cnn"].groups():
        k = g.size - n_dropped(g.size, 0.5)
        assert keep[g.name].tolist() == list(range(k))


def test_random_is_seeded_and_varies_with_the_seed():
    groups = MLPSpec(hidden=(64, 64)).groups()
    a = plan_submodel("random", groups, 0.5, torch.Generator().manual_seed(1))
    b = plan_submodel("random", groups, 0.5, torch.Generator().manual_seed(1))
    c = plan_submodel("random", groups, 0.5, torch.Generator().manual_seed(2))
    assert all(torch.equal(a[g], b[g]) for g in a)
    assert any(not torch.equal(a[g], c[g]) for g in a)
    assert all(len(a[g]) == 32 and bool((a[g].diff() > 0).all()) for g in a)


def test_invariant_dropout_priority_order():
    n, gen = 10, torch.Generator().manual_seed(0)
    inv = torch.zeros(n, dtype=torch.bool)
    inv[[1, 3, 5, 7]] = True
    last = torch.zeros(n, dtype=torch.bool)
    last[[3, 7, 8]] = True  # 8 was dropped but is no longer invariant
    assert select_dropped("invariant", n, 2, gen, invariant=inv, last_dropped=last).tolist() == [3, 7]
    three = select_dropped("invariant", n, 3, gen, invariant=inv, last_dropped=last)
    assert {3, 7} < set(three.tolist()) and set(three.tolist()) <= {1, 3, 5, 7}
    six = set(select_dropped("invariant", n, 6, gen, invariant=inv, last_dropped=last).tolist())
    assert {1, 3, 5, 7} < six and len(six) == 6


def test_r_one_keeps_everything_and_draws_nothing():
    gen = torch.Generator().manual_seed(5)
    before = gen.get_state()
    for method in ("random", "ordered", "invariant"):
        keep = plan_submodel(method, SPECS["lstm"].groups(), 1.0, gen)
        assert all(torch.equal(keep[g.name], torch.arange(g.size)) for g in SPECS["lstm"].groups())
    assert torch.equal(gen.get_state(), before)


# --- invariance ----------------------------------------------------------------------------


def _mlp_clients(n_clients: int):
    spec = MLPSpec(in_features=4, hidden=(6,), classes=3)
    g = _state(spec, 0)
    return spec, g, [{k: v.clone() for k, v in g.items()} for _ in range(n_clients)]


def test_neuron_with_zero_update_is_invariant_and_one_that_changes_is_not():
    spec, g, clients = _mlp_clients(4)
    for c in clients:
        for k in c:
            c[k] += 0.5 * c[k].abs() + 0.1  # every element moves a lot...
        c["hidden.0.weight"][2] = g["hidden.0.weight"][2]  # ...except all of neuron 2's ties
        c["hidden.0.bias"][2] = g["hidden.0.bias"][2]
        c["out.weight"][:, 2] = g["out.weight"][:, 2]
        c["hidden.0.weight"][4] = g["hidden.0.weight"][4]  # neuron 4: only its consumer moves
        c["hidden.0.bias"][4] = g["hidden.0.bias"][4]
    inv = invariant_neurons(g, clients, spec.groups(), th=0.01)["hidden.0"]
    assert inv.tolist() == [False, False, True, False, False, False]
    change = max_relative_change(g, clients, spec.groups())["hidden.0"]
    assert change[2] == 0 and bool((change[[0, 1, 3, 4, 5]] > 0.01).all())


def test_invariance_needs_a_75_percent_quorum():
    spec, g, clients = _mlp_clients(4)
    clients[0]["hidden.0.bias"][1] += 10.0  # 3 of 4 still stable: invariant
    assert invariant_neurons(g, clients, spec.groups(), th=0.01)["hidden.0"][1]
    clients[1]["hidden.0.bias"][1] += 10.0  # 2 of 4: not
    assert not invariant_neurons(g, clients, spec.groups(), th=0.01)["hidden.0"][1]


def test_lstm_gate_rows_all_count_for_invariance():
    spec = SPECS["lstm"]
    g = _state(spec, 0)
    c = {k: v.clone() for k, v in g.items()}
    n = spec.hidden[0]
    c["lstm.0.weight_ih_l0"][3 * n + 1] += 5.0  # the output gate's row of neuron 1
    inv = invariant_neurons(g, [c], spec.groups(), th=0.01)["lstm.0"]
    assert inv.tolist() == [True, False, True, True, True]


def test_threshold_schedule_init_average_and_raise():
    s = ThresholdSchedule(ThresholdConfig(initial=0.1, every=3, step=0.01), rounds=10)
    assert s.raise_from == 5
    s.observe(1, 7.0, False)
    assert s.value == 0.1
    s.observe(2, 0.04, False)
    assert s.value == 0.04
    s.observe(3, 0.02, False)
    assert math.isclose(s.value, 0.03)
    values = [s.before_round_aggregation(r) for r in range(4, 13)]
    assert [round(v, 4) for v in values] == [0.03, 0.03, 0.03, 0.03, 0.04, 0.04, 0.04, 0.05, 0.05]
    s.observe(12, 1.0, True)  # enough invariant neurons: stop raising
    assert all(s.before_round_aggregation(r) == values[-1] for r in range(13, 40))


# --- profiling -----------------------------------------------------------------------------


@pytest.mark.parametrize("ratio, r", [(1.0, 0.95), (0.9, 0.95), (0.89, 0.85), (0.8, 0.85),
                                      (0.79, 0.75), (0.7, 0.75), (0.69, 0.65), (0.6, 0.65),
                                      (0.59, 0.5), (0.1, 0.5)])
def test_r_follows_the_table(ratio, r):
    assert r_for_ratio(ratio) == r


def test_profiler_picks_the_slowest_and_repicks_when_it_changes():
    p = StragglerProfiler()
    speeds = [1, 1, 0.9, 0.8, 0.5]
    assert p.update({c: 100 / s for c, s in enumerate(speeds)}, {})
    assert p.straggler == 4 and p.r == 0.65  # 125 / 200 = 0.625
    # the straggler now trains r = 0.65 and looks fast; its estimate t / r keeps it the straggler
    assert not p.update({0: 100, 1: 100, 2: 111, 3: 125, 4: 200 * 0.6}, {4: 0.65})
    assert p.straggler == 4
    # client 3 slows down past the straggler's full-model time: re-picked
    assert p.update({0: 100, 1: 100, 2: 111, 3: 400, 4: 120}, {4: 0.65})
    assert p.straggler == 3 and p.r == r_for_ratio(120 / 0.65 / 400)


def test_fl_imports_only_errors_from_the_rest_of_hotpipe():
    import ast
    from pathlib import Path

    import hotpipe.fl

    allowed = ("hotpipe.errors", "hotpipe.fl")
    for path in Path(hotpipe.fl.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                if name.startswith("hotpipe"):
                    assert name.startswith(allowed), f"{path.name} imports {name}"
