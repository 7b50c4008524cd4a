"""Score function and eviction choice against brute-force references."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from hotpipe.kv import scoring  # noqa: E402
from hotpipe.kv.cache import KVLayer  # noqa: E402
from hotpipe.kv.config import KVConfig  # noqa: E402


def _brute_scores(logits, allowed, n_kv, tau, noise):
    b, hq, q, n = logits.shape
    g = hq // n_kv
    out = torch.zeros(b, n_kv, n, dtype=torch.float64)
    for bi in range(b):
        for kv in range(n_kv):
            for h in range(kv * g, (kv + 1) * g):  # the query heads that read this KV head
                for qi in range(q):
                    row = [j for j in range(n) if allowed[bi, h, qi, j]]
                    if not row:
                        continue
                    x = {j: (logits[bi, h, qi, j].item() + (noise[bi, h, qi, j].item() if noise is not None else 0))
                         / tau for j in row}
                    top = max(x.values())
                    z = sum(math.exp(v - top) for v in x.values())
                    for j in row:
                        out[bi, kv, j] += math.exp(x[j] - top) / z
    return out


@pytest.mark.parametrize("n_kv,hq", [(1, 3), (2, 6), (3, 3)])
@pytest.mark.parametrize("with_noise", [False, True])
def test_step_scores_match_brute_force_gqa(n_kv, hq, with_noise):
    gen = torch.Generator().manual_seed(n_kv * 10 + hq)
    logits = torch.randn(2, hq, 3, 7, generator=gen)
    allowed = torch.rand(2, hq, 3, 7, generator=gen) > 0.3
    allowed[0, 0, 0] = False  # a query that sees nothing (a pad row) must add nothing
    noise = scoring.gumbel_like(logits, gen) if with_noise else None
    got = scoring.step_scores(logits, allowed, n_kv_heads=n_kv, tau=1.7, noise=noise)
    want = _brute_scores(logits, allowed, n_kv, 1.7, noise)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_brute_force_reference_tells_heads_apart():
    # the reference above must catch a wrong grouping (heads interleaved instead of adjacent)
    gen = torch.Generator().manual_seed(3)
    logits, allowed = torch.randn(1, 4, 2, 5, generator=gen), torch.ones(1, 4, 2, 5, dtype=torch.bool)
    want = _brute_scores(logits, allowed, 2, 1.0, None)
    wrong = scoring.step_scores(logits[:, [0, 2, 1, 3]], allowed, n_kv_heads=2)
    assert not torch.allclose(wrong.double(), want, atol=1e-4)


def test_gumbel_noise_has_the_gumbel_mean():
    x = torch.zeros(200_000)
    g = scoring.gumbel_like(x, torch.Generator().manual_seed(0))
    assert abs(g.mean().item() - 0.5772) < 0.01  # Euler-Mascheroni constant
    assert abs(g.var().item() - math.pi**2 / 6) < 0.03


def _brute_keep(layer: KVLayer, budget: int) -> list[list[list[int]]]:
    """For every (batch, head): the kept positions, chosen by sorting in plain Python."""
    cfg = layer.config
    b, h, n = layer.valid.shape
    out = []
    for bi in range(b):
        heads = []
        for hi in range(h):
            pos = layer.positions[bi, hi].tolist()
            valid = layer.valid[bi, hi].tolist()
            real = [j for j in range(n) if valid[j]]  # slots are in sequence order
            if cfg.policy in ("keyformer", "h2o"):
                protected = set(real[len(real) - math.floor(cfg.recent * budget):]) if cfg.recent else set()
                key = {j: (j in protected, layer.scores[bi, hi, j].item()) for j in real}
            elif cfg.policy == "streaming":
                protected = set(real[:cfg.sinks])
                key = {j: (j in protected, pos[j]) for j in real}
            else:
                key = {j: (False, pos[j]) for j in real}
            ranked = sorted(real, key=lambda j: key[j], reverse=True)
            pads = [j for j in range(n) if not valid[j]]
            heads.append(sorted(pos[j] for j in (ranked + pads)[:budget]))
        out.append(heads)
    return out


@pytest.mark.parametrize("policy", ["keyformer", "h2o", "streaming", "window"])
@pytest.mark.parametrize("budget", [5, 9, 13])
def test_eviction_keeps_what_brute_force_keeps(policy, budget):
    gen = torch.Generator().manual_seed(budget)
    layer = KVLayer(KVConfig(policy=policy, kv=0.5, recent=0.3, sinks=2))
    b, h, n, d = 2, 3, 16, 4
    layer.keys = torch.randn(b, h, n, d, generator=gen)
    layer.values = torch.randn(b, h, n, d, generator=gen)
    layer.positions = torch.arange(n).expand(b, h, n).clone()
    layer.valid = torch.ones(b, h, n, dtype=torch.bool)
    layer.valid[1, :, :3] = False  # left padding in the second row
    layer.scores = torch.rand(b, h, n, generator=gen)
    want = _brute_keep(layer, budget)
    keys_before = layer.keys.clone()
    layer._evict(budget)
    assert layer.positions.tolist() == want
    # the kept K rows are the very rows at those positions: nothing shuffled between heads
    for bi in range(b):
        for hi in range(h):
            torch.testing.assert_close(layer.keys[bi, hi], keys_before[bi, hi, layer.positions[bi, hi]])
    assert layer.keys.shape[2] == budget and layer.values.shape[2] == budget


def test_brute_force_keep_notices_a_missing_recent_window():
    gen = torch.Generator().manual_seed(0)
    layer = KVLayer(KVConfig(policy="h2o", kv=0.5, recent=0.5))
    layer.positions = torch.arange(10).expand(1, 1, 10).clone()
    layer.valid = torch.ones(1, 1, 10, dtype=torch.bool)
    layer.scores = torch.linspace(1, 0, 10).expand(1, 1, 10).clone()  # old tokens score highest
    with_recent = _brute_keep(layer, 4)
    layer.config = KVConfig(policy="h2o", kv=0.5, recent=0.0)
    assert _brute_keep(layer, 4) != with_recent
    del gen
