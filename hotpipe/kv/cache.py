"""A transformers ``Cache`` that physically holds at most a budget of tokens per layer.

How a step flows (one decoder layer)::

    model: k, v = cache.update(k_new, v_new, layer)   # kept (L) + new (Q) -> L + Q
           hotpipe_kv attention(q, k, v)               # logits (B, Hq, Q, L+Q)
             -> layer.observe(logits, allowed)         # score, then drop back to the budget

Positions stay absolute: ``get_seq_length`` counts every token ever seen, so
transformers gives the next token its true RoPE position, while the tensors hold
only the kept tokens. ``positions`` records each kept token's slot in the
sequence, which is all the causal mask needs after eviction.

Eviction happens *after* the step's attention, where the scores are known, so
each step attends to the budget plus its new tokens and the cache then holds
exactly the budget (the prompt is attended in full before the first eviction).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

from hotpipe.errors import ConfigError
from hotpipe.kv import scoring
from hotpipe.kv.attention import hand_over
from hotpipe.kv.config import SCORED_POLICIES, KVAttentionError, KVConfig


class KVLayer(DynamicLayer):
    """One layer's kept keys/values plus the bookkeeping eviction needs.

    Attributes:
        keys, values: ``(B, Hkv, L, D)``, only the kept tokens.
        positions: ``(B, Hkv, L)`` int64, each kept token's slot in the sequence.
        valid: ``(B, Hkv, L)`` bool, False for left padding.
        scores: ``(B, Hkv, L)`` float32 accumulated scores (scored policies).
        seen: tokens this layer has seen, kept or not.
        budget: tokens kept after the prompt; ``None`` until the prompt is seen.

    The first forward pass is the prompt (``generate`` prefills in one pass);
    the budget is ``config.budget`` of its length.
    """

    is_croppable = False  # evicted tokens cannot be restored (assisted decoding needs it)

    def __init__(self, config: KVConfig) -> None:
        super().__init__()
        self.config = config
        self.positions = torch.empty(0, dtype=torch.long)
        self.valid = torch.empty(0, dtype=torch.bool)
        self.scores: torch.Tensor | None = None
        self.seen = 0
        self.budget: int | None = None
        self.decode_steps = 0
        self.pending = False  # update() ran, its attention has not reported yet
        self.generator: torch.Generator | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``(B, Hkv, Q, D)`` new states; return kept + new for this step's attention."""
        if self.pending:
            raise KVAttentionError(
                "the previous forward pass did not report its attention logits to the KV cache: "
                "load the model with attn_implementation='hotpipe_kv' (see hotpipe.kv.attention)")
        keys, values = super().update(key_states, value_states)
        b, h, q, _ = key_states.shape
        new_pos = torch.arange(self.seen, self.seen + q, device=keys.device).expand(b, h, q)
        self.positions = new_pos if self.positions.numel() == 0 else torch.cat([self.positions, new_pos], dim=-1)
        self.seen += q
        self.pending = True
        hand_over(self, keys)
        return keys, values

    def get_seq_length(self) -> int:
        # absolute: generate derives the next RoPE position from it
        return self.seen

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        kept = 0 if self.keys is None or self.keys.numel() == 0 else self.keys.shape[-2]
        # offset maps column i of (kept + new) so that the new tokens land on their
        # true slots; hotpipe_kv attention reads only those columns (see attention.py)
        return kept + query_length, self.seen - kept

    def query_positions(self, q: int) -> torch.Tensor:
        """``(Q,)`` slots of the tokens added by the last ``update``."""
        return torch.arange(self.seen - q, self.seen, device=self.positions.device)

    def observe(self, logits: torch.Tensor, allowed: torch.Tensor, new_valid: torch.Tensor) -> None:
        """Take the step's attention logits, score, and evict down to the budget.

        Args:
            logits: ``(B, Hq, Q, L+Q)`` scaled pre-softmax logits.
            allowed: ``(B, Hq, Q, L+Q)`` bool mask the attention used.
            new_valid: ``(B, Q)`` bool, False for left-padding tokens.
        """
        assert self.keys is not None  # update() ran first: pending guarantees it
        b, h = self.keys.shape[:2]
        q = new_valid.shape[-1]
        fresh = new_valid[:, None, :].expand(b, h, q)
        self.valid = fresh if self.valid.numel() == 0 else torch.cat([self.valid, fresh], dim=-1)
        cfg = self.config
        if cfg.policy in SCORED_POLICIES:
            self._accumulate(logits, allowed, h)
        self.pending = False
        if self.budget is None:  # this forward was the prompt: the budget is fixed now
            self.budget = cfg.budget(self.seen)
            if cfg.evicts:
                cfg.split(self.budget)  # a budget too small for the sinks fails here, named
        else:
            self.decode_steps += 1
        if cfg.evicts and self.keys.shape[-2] > self.budget:
            self._evict(self.budget)

    def _accumulate(self, logits: torch.Tensor, allowed: torch.Tensor, n_kv_heads: int) -> None:
        cfg = self.config
        noise = None
        if cfg.policy == "keyformer" and cfg.noise:
            if self.generator is None:
                self.generator = torch.Generator(device=logits.device).manual_seed(cfg.seed)
            noise = scoring.gumbel_like(logits, self.generator)
        tau = cfg.tau(self.decode_steps + (self.budget is not None)) if cfg.policy == "keyformer" else 1.0
        step = scoring.step_scores(logits, allowed, n_kv_heads=n_kv_heads, tau=tau, noise=noise)
        old = self.scores if self.scores is not None else step.new_zeros(step.shape[:2] + (0,))
        pad = step.shape[-1] - old.shape[-1]  # new tokens start from zero
        self.scores = torch.nn.functional.pad(old, (0, pad)) + step

    def priority(self, budget: int) -> torch.Tensor:
        """``(B, Hkv, L)`` eviction priority of every held token: keep the highest."""
        cfg = self.config
        valid = self.valid
        if cfg.policy in SCORED_POLICIES:
            assert self.scores is not None
            recent, _ = cfg.split(budget)
            prio = self.scores.clone()
            prio[scoring.protect_last(valid, recent)] = float("inf")
        else:  # window / streaming: the most recent slots win
            prio = self.positions.to(torch.float64)
            if cfg.policy == "streaming":
                sinks, _ = cfg.split(budget)
                prio[scoring.protect_first(valid, sinks)] = float("inf")
        # padding goes first, whatever it scored
        return prio.masked_fill(~valid, float("-inf"))

    def _evict(self, budget: int) -> None:
        assert self.keys is not None and self.values is not None
        idx = scoring.choose(self.priority(budget), budget)  # (B, Hkv, budget)
        d = self.keys.shape[-1]
        # gather makes new tensors of the budget's size: dropped tokens are freed, not masked
        self.keys = self.keys.gather(2, idx[..., None].expand(-1, -1, -1, d))
        self.values = self.values.gather(2, idx[..., None].expand(-1, -1, -1, self.values.shape[-1]))
        self.positions = self.positions.gather(2, idx)
        self.valid = self.valid.gather(2, idx)
        if self.scores is not None:
            self.scores = self.scores.gather(2, idx)

    def held_bytes(self) -> tuple[int, int]:
        """``(kv_bytes, bookkeeping_bytes)`` this layer holds right now."""
        if self.keys is None:
            return 0, 0
        kv = self.keys.nbytes + self.values.nbytes  # type: ignore[union-attr]
        extra = self.positions.nbytes + self.valid.nbytes
        return kv, extra + (self.scores.nbytes if self.scores is not None else 0)


class KVCache(Cache):
    """A drop-in ``Cache`` for ``model.generate`` that keeps at most a budget of tokens.

    The model must run the ``hotpipe_kv`` attention function, which hands the
    logits to the cache (:func:`hotpipe.kv.attention.register`).

    Args:
        config: policy, budget and score settings.

    Example:
        >>> from hotpipe.kv import KVCache, KVConfig, register
        >>> register()
        >>> model.set_attn_implementation("hotpipe_kv")  # doctest: +SKIP
        >>> cache = KVCache(KVConfig(policy="keyformer", kv=0.5, tau_steps=64))
        >>> model.generate(ids, cache=cache, max_new_tokens=64)  # doctest: +SKIP
    """

    def __init__(self, config: KVConfig) -> None:
        super().__init__(layer_class_to_replicate=functools.partial(KVLayer, config))  # type: ignore[arg-type]
        self.config = config

    @property
    def kv_layers(self) -> list[KVLayer]:
        return [layer for layer in self.layers if isinstance(layer, KVLayer)]

    def held_bytes(self) -> tuple[int, int]:
        """``(kv_bytes, bookkeeping_bytes)`` over all layers: what the cache holds now."""
        pairs = [layer.held_bytes() for layer in self.kv_layers]
        return sum(p[0] for p in pairs), sum(p[1] for p in pairs)

    def kept_lengths(self) -> list[int]:
        """Physical tokens held by each layer."""
        return [0 if layer.keys is None else layer.keys.shape[-2] for layer in self.kv_layers]

    def fork(self, kv: float, *, policy: str | None = None, tau_steps: int | None = None) -> KVCache:
        """A copy of this prefilled cache that keeps ``kv`` of the prompt instead.

        The scores gathered over the prompt do not depend on the budget, so one
        prefill at ``kv=1`` can serve every budget; the copy equals a cache
        prefilled at ``kv`` directly (``tests/test_kv_cache.py`` checks it).

        Args:
            kv: the copy's budget fraction.
            policy: switch policy; allowed to one that needs no scores, or to the
                same scored policy (another one's prompt scores would be wrong).
            tau_steps: the copy's temperature schedule length.
        """
        layers = self.kv_layers
        if not layers or any(layer.budget is None or layer.decode_steps for layer in layers):
            raise KVAttentionError("fork() needs a cache that has seen the prompt and no decode step")
        target = policy or self.config.policy
        if target in SCORED_POLICIES and target != self.config.policy:
            raise ConfigError("kv.policy", f"cannot fork a {self.config.policy!r} prefill into {target!r}: "
                                           "its prompt scores were not gathered")
        cfg = dataclasses.replace(self.config, kv=kv, policy=target,
                                  tau_steps=tau_steps or self.config.tau_steps)
        twin = copy.deepcopy(self)
        twin.config = cfg
        twin.layer_class_to_replicate = functools.partial(KVLayer, cfg)  # type: ignore[assignment]
        for layer in twin.kv_layers:
            layer.config = cfg
            layer.budget = cfg.budget(layer.seen)
            if cfg.policy not in SCORED_POLICIES:
                layer.scores = None  # kept in step with the tokens only while scored
            if cfg.evicts and layer.keys is not None and layer.keys.shape[-2] > layer.budget:
                layer._evict(layer.budget)
        return twin
