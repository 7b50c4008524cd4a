"""KVCache on a tiny random Llama (GQA: 4 query heads, 2 KV heads): exactness, budget, positions."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hotpipe.errors import ConfigError  # noqa: E402
from hotpipe.kv import KVAttentionError, KVCache, KVConfig, register, require  # noqa: E402

P, T = 24, 8  # prompt and decode lengths


@pytest.fixture(scope="module")
def model():
    register()
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    m = transformers.LlamaForCausalLM(cfg).eval()
    m.set_attn_implementation("hotpipe_kv")
    return m


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 97, (1, P + T), generator=torch.Generator().manual_seed(1))


def _run(model, cache, ids):
    """Prefill ids[:, :P], then feed the rest one token per step; logits ``(T + 1, V)`` and lengths."""
    logits, lengths = [], []
    with torch.no_grad():
        out = model(input_ids=ids[:, :P], cache=cache, use_cache=True)
        logits.append(out.logits[0, -1])
        lengths.append(cache.kept_lengths() if isinstance(cache, KVCache) else None)
        for t in range(P, ids.shape[1]):
            out = model(input_ids=ids[:, t:t + 1], cache=cache, use_cache=True)
            logits.append(out.logits[0, -1])
            lengths.append(cache.kept_lengths() if isinstance(cache, KVCache) else None)
    return torch.stack(logits), lengths


@pytest.mark.parametrize("cfg", [KVConfig(policy="full", kv=0.3), KVConfig(policy="keyformer", kv=1.0)])
def test_never_evicting_cache_is_bit_identical_to_dynamic_cache(model, ids, cfg):
    model.set_attn_implementation("eager")
    try:
        want, _ = _run(model, transformers.DynamicCache(), ids)
        ref_tokens = model.generate(ids[:, :P], cache=transformers.DynamicCache(), max_new_tokens=T,
                                    do_sample=False)
    finally:
        model.set_attn_implementation("hotpipe_kv")
    got, _ = _run(model, KVCache(cfg), ids)
    assert torch.equal(got, want)
    tokens = model.generate(ids[:, :P], cache=KVCache(cfg), max_new_tokens=T, do_sample=False)
    assert torch.equal(tokens, ref_tokens)


@pytest.mark.parametrize("policy", ["keyformer", "h2o", "streaming", "window"])
@pytest.mark.parametrize("kv", [pytest.param(0.3, marks=pytest.mark.slow), 0.5])
def test_physical_length_is_the_budget_at_every_step(model, ids, policy, kv):
    cache = KVCache(KVConfig(policy=policy, kv=kv, sinks=2, tau_steps=T))
    _, lengths = _run(model, cache, ids)
    budget = KVConfig(kv=kv).budget(P)
    assert lengths == [[budget, budget]] * (T + 1)
    assert cache.get_seq_length() == P + T  # positions stay absolute
    kv_bytes, _ = cache.held_bytes()
    assert kv_bytes == 2 * 2 * 1 * 2 * budget * 8 * 4  # K and V, layers, batch, heads, tokens, dim, fp32


def _kept(cache):
    return [layer.positions[0].tolist() for layer in cache.kv_layers]


def test_window_and_streaming_keep_exactly_the_expected_positions(model, ids):
    budget = KVConfig(kv=0.5).budget(P)
    window, stream = KVCache(KVConfig(policy="window", kv=0.5)), KVCache(KVConfig(policy="streaming", kv=0.5, sinks=3))
    _run(model, window, ids)
    _run(model, stream, ids)
    end = P + T
    assert _kept(window) == [[list(range(end - budget, end))] * 2] * 2
    assert _kept(stream) == [[[0, 1, 2, *range(end - budget + 3, end)]] * 2] * 2


def _masked_reference(model, ids, keep):
    """Logits of a full-sequence forward where query t sees only ``keep(t)``: no cache involved."""
    n = ids.shape[1]
    mask = torch.full((1, 1, n, n), torch.finfo(torch.float32).min)
    for t in range(n):
        mask[0, 0, t, keep(t)] = 0.0
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=mask).logits[0, P - 1:]
    finally:
        model.set_attn_implementation("hotpipe_kv")


@pytest.mark.parametrize("policy", ["window", "streaming"])
def test_eviction_equals_a_masked_full_forward_with_absolute_positions(model, ids, policy):
    # window/streaming keep the same slots in every layer and head, so the evicting
    # cache must equal a plain forward with a mask; RoPE positions must stay absolute
    sinks, budget = 2, KVConfig(kv=0.5).budget(P)

    def keep(t):
        if t < P:
            return list(range(t + 1))  # the prompt is attended in full
        recent = list(range(t - budget + (sinks if policy == "streaming" else 0), t + 1))
        return ([0, 1] if policy == "streaming" else []) + recent

    got, _ = _run(model, KVCache(KVConfig(policy=policy, kv=0.5, sinks=sinks)), ids)
    want = _masked_reference(model, ids, keep)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # and the reference can tell: relative positions (a re-based window) would differ
    rebased, _ = _run(model, KVCache(KVConfig(policy="full")), ids[:, T:])  # shorter context, shifted
    assert not torch.allclose(rebased[-1], want[-1], atol=1e-4)


def test_h2o_equals_keyformer_without_noise_at_tau_one(model, ids):
    h2o = KVCache(KVConfig(policy="h2o", kv=0.4))
    kf = KVCache(KVConfig(policy="keyformer", kv=0.4, noise=False, tau_start=1.0, tau_end=1.0))
    a, _ = _run(model, h2o, ids)
    b, _ = _run(model, kf, ids)
    assert torch.equal(a, b) and _kept(h2o) == _kept(kf)
    for x, y in zip(h2o.kv_layers, kf.kv_layers, strict=True):
        assert torch.equal(x.scores, y.scores)
    noisy = KVCache(KVConfig(policy="keyformer", kv=0.4))
    _run(model, noisy, ids)
    assert not all(torch.equal(x.scores, y.scores) for x, y in zip(h2o.kv_layers, noisy.kv_layers, strict=True))


def test_keyformer_is_deterministic_per_seed(model, ids):
    def scores(seed):
        cache = KVCache(KVConfig(policy="keyformer", kv=0.4, seed=seed, tau_steps=T))
        logits, _ = _run(model, cache, ids)
        return logits, _kept(cache), [layer.scores for layer in cache.kv_layers]

    a, b, c = scores(0), scores(0), scores(1)
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    assert all(torch.equal(x, y) for x, y in zip(a[2], b[2], strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a[2], c[2], strict=True))


@pytest.mark.parametrize("policy", ["keyformer", "window", *(pytest.param(p, marks=pytest.mark.slow)
                                                               for p in ("h2o", "streaming", "full"))])
def test_fork_equals_prefilling_at_that_budget(model, ids, policy):
    scorer = "keyformer" if policy == "keyformer" else "h2o"
    base = KVCache(KVConfig(policy=scorer, kv=1.0, sinks=2, tau_steps=T))
    direct = KVCache(KVConfig(policy=policy, kv=0.4, sinks=2, tau_steps=T))
    with torch.no_grad():
        model(input_ids=ids[:, :P], cache=base, use_cache=True)
    forked = base.fork(0.4, policy=policy)
    want, _ = _run(model, direct, ids)
    with torch.no_grad():  # continue the fork exactly like _run's decode steps
        got = [model(input_ids=ids[:, t:t + 1], cache=forked, use_cache=True).logits[0, -1] for t in range(P, P + T)]
    torch.testing.assert_close(torch.stack(got), want[1:], rtol=0, atol=0)
    assert _kept(forked) == _kept(direct)


@pytest.mark.slow
def test_left_padded_batch_matches_each_prompt_alone(model, ids):
    short = ids[:, 5:P]
    pad = torch.zeros(1, 5, dtype=torch.long)
    batch = torch.cat([ids[:, :P], torch.cat([pad, short], dim=1)])
    mask = torch.ones_like(batch)
    mask[1, :5] = 0
    out = model.generate(batch, attention_mask=mask, cache=KVCache(KVConfig(policy="full")), max_new_tokens=T,
                         do_sample=False, output_scores=True, return_dict_in_generate=True)
    for row, prompt in ((0, ids[:, :P]), (1, short)):
        alone = model.generate(prompt, cache=KVCache(KVConfig(policy="full")), max_new_tokens=T, do_sample=False,
                               output_scores=True, return_dict_in_generate=True)
        assert out.sequences[row, P:].tolist() == alone.sequences[0, prompt.shape[1]:].tolist()
        torch.testing.assert_close(torch.stack(out.scores)[:, row], torch.stack(alone.scores)[:, 0],
                                   rtol=1e-4, atol=1e-4)
    # an evicting cache drops padding before any real token
    cache = KVCache(KVConfig(policy="h2o", kv=0.5))
    model.generate(batch, attention_mask=mask, cache=cache, max_new_tokens=2, do_sample=False)
    assert all(bool(layer.valid.all()) for layer in cache.kv_layers)


def test_attention_without_logits_is_a_clear_error(model, ids):
    model.set_attn_implementation("sdpa")
    try:
        with pytest.raises(KVAttentionError, match="hotpipe_kv"):
            require(model)
        cache = KVCache(KVConfig(policy="keyformer", kv=0.5))
        with pytest.raises(KVAttentionError, match="attn_implementation='hotpipe_kv'"), torch.no_grad():
            model(input_ids=ids[:, :P], cache=cache, use_cache=True)
            model(input_ids=ids[:, P:P + 1], cache=cache, use_cache=True)
    finally:
        model.set_attn_implementation("hotpipe_kv")
    require(model)


@pytest.mark.parametrize("kwargs,key", [
    ({"kv": 0.0}, "kv.kv"), ({"kv": 1.5}, "kv.kv"), ({"kv": -0.2}, "kv.kv"),
    ({"policy": "lru"}, "kv.policy"), ({"recent": 1.0}, "kv.recent"), ({"tau_start": 0.0}, "kv.tau_start"),
    ({"tau_steps": 0}, "kv.tau_steps"), ({"sinks": -1}, "kv.sinks"),
])
def test_bad_settings_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        KVConfig(**kwargs)


def test_streaming_budget_below_the_sinks_is_an_error(model, ids):
    cache = KVCache(KVConfig(policy="streaming", kv=0.1, sinks=4))  # budget 3 < 4 sinks + 1
    with pytest.raises(ConfigError, match="sinks"), torch.no_grad():
        model(input_ids=ids[:, :P], cache=cache, use_cache=True)


def test_fork_needs_a_prefilled_cache_and_matching_scores(model, ids):
    with pytest.raises(KVAttentionError, match="prompt"):
        KVCache(KVConfig()).fork(0.5)
    base = KVCache(KVConfig(policy="h2o", kv=1.0))
    with torch.no_grad():
        model(input_ids=ids[:, :P], cache=base, use_cache=True)
    with pytest.raises(ConfigError, match="keyformer"):
        base.fork(0.5, policy="keyformer")
