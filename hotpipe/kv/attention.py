"""The ``hotpipe_kv`` attention function: eager attention that reports its logits.

Why a registered attention function rather than hooks: the scores need the
pre-softmax logits ``q . k / sqrt(d)``, which only exist inside the attention
computation; a forward hook sees the module's output, and SDPA never forms the
logits at all. Registering with transformers' ``AttentionInterface`` keeps the
model code untouched and works for every model that dispatches through it.

How the logits reach the cache: every transformers attention module calls
``cache.update(k, v, layer_idx)`` and then, immediately, the attention function
with the states that update returned. The cache layer hands itself over in
:func:`hand_over` (a context variable, so threads do not mix), and the attention
function picks it up when ``key`` is the very tensor that layer returned. A
cache layer that never hears back raises :class:`KVAttentionError` at the next
step, so a model left on ``sdpa``/``eager`` fails loudly instead of never evicting.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

import torch

from hotpipe.kv.config import KVAttentionError

if TYPE_CHECKING:
    from hotpipe.kv.cache import KVLayer

NAME = "hotpipe_kv"
_HANDED: contextvars.ContextVar[tuple[KVLayer, torch.Tensor] | None] = contextvars.ContextVar(
    "hotpipe_kv_handed", default=None)


def hand_over(layer: KVLayer, keys: torch.Tensor) -> None:
    """Called by ``KVLayer.update``: the next attention over ``keys`` reports to ``layer``."""
    _HANDED.set((layer, keys))


def _take(key: torch.Tensor) -> KVLayer | None:
    handed = _HANDED.get()
    if handed is None or handed[1] is not key:
        return None
    _HANDED.set(None)
    return handed[0]


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``(B, Hkv, L, D) -> (B, Hkv * groups, L, D)``; query head h reads KV head h // groups."""
    if groups == 1:
        return x
    b, h, n, d = x.shape
    return x[:, :, None].expand(b, h, groups, n, d).reshape(b, h * groups, n, d)


def _new_valid(mask: torch.Tensor | None, q: int, n: int, batch: int, device: torch.device) -> torch.Tensor:
    """``(B, Q)``: whether each new token is a real token (not left padding).

    transformers' mask puts new token ``i`` on column ``n - q + i`` (the cache's
    ``get_mask_sizes`` offset guarantees it even after eviction); padding masks
    its own column, a real token sees itself.
    """
    if mask is None:
        return torch.ones(batch, q, dtype=torch.bool, device=device)
    diag = mask[:, 0, torch.arange(q, device=device), torch.arange(n - q, n, device=device)]  # (B, Q)
    return diag if diag.dtype == torch.bool else diag == 0


def _allowed(layer: KVLayer, mask: torch.Tensor | None, q: int, n: int, batch: int,
             n_kv: int, groups: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(allowed (B, Hq, Q, N), new_valid (B, Q))`` from the cache's own positions.

    After eviction, kept tokens are no longer contiguous (and differ per head),
    so the causal mask is rebuilt from each kept token's slot rather than from
    column numbers.
    """
    new_valid = _new_valid(mask, q, n, batch, device)
    kpos, qpos = layer.positions, layer.query_positions(q)  # (B, Hkv, N), (Q,)
    old = layer.valid if layer.valid.numel() else torch.ones(batch, n_kv, n - q, dtype=torch.bool,
                                                             device=device)
    valid = torch.cat([old, new_valid[:, None, :].expand(batch, n_kv, q)], dim=-1)
    allowed = (kpos[:, :, None, :] <= qpos[:, None]) & valid[:, :, None, :]  # (B, Hkv, Q, N)
    allowed = allowed[:, :, None].expand(batch, n_kv, groups, q, n).reshape(batch, n_kv * groups, q, n)
    return allowed, new_valid


def _plain_allowed(mask: torch.Tensor | None, q: int, n: int, device: torch.device) -> torch.Tensor:
    """``(B or 1, 1, Q, N)``: a forward without a KVCache uses transformers' mask, or causal."""
    if mask is not None:
        return mask if mask.dtype == torch.bool else mask == 0
    return (torch.arange(n, device=device)[None, :] <= torch.arange(n - q, n, device=device)[:, None])[None, None]


def kv_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention with the transformers attention-function signature.

    Args:
        query: ``(B, Hq, Q, D)``; key, value: ``(B, Hkv, N, D)`` (kept + new).
        attention_mask: transformers' 4D mask ``(B, 1, Q, N)`` or ``None``; only
            its new-token columns are read (which tokens are padding).

    Returns:
        ``(output (B, Q, Hq, D), probabilities (B, Hq, Q, N))``. The arithmetic is
        transformers' eager attention op for op, so a never-evicting cache gives
        the same bits as eager attention with its own dynamic cache.
    """
    layer = _take(key)
    b, hq, q, _ = query.shape
    n_kv, n = key.shape[1], key.shape[2]
    groups = hq // n_kv
    logits = torch.matmul(query, _repeat_kv(key, groups).transpose(2, 3)) * scaling  # (B, Hq, Q, N)
    if layer is None:
        allowed = _plain_allowed(attention_mask, q, n, query.device)
    else:
        allowed, new_valid = _allowed(layer, attention_mask, q, n, b, n_kv, groups, query.device)
    masked = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)
    probs = torch.softmax(masked, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = torch.nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(probs, _repeat_kv(value, groups)).transpose(1, 2).contiguous()
    if layer is not None:
        layer.observe(logits, allowed, new_valid)
    return out, probs


def register() -> None:
    """Make ``attn_implementation="hotpipe_kv"`` available to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, kv_attention)
    # the boolean SDPA mask: kv_attention reads which new tokens are padding from it
    AttentionMaskInterface.register(NAME, sdpa_mask)


def require(model: Any) -> None:
    """Raise :class:`KVAttentionError` unless ``model`` runs ``hotpipe_kv`` attention."""
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if impl != NAME:
        raise KVAttentionError(
            f"attention implementation {impl!r} exposes no logits to the KV cache; expected {NAME!r} "
            "(call hotpipe.kv.register() and load with attn_implementation='hotpipe_kv' "
            "or model.set_attn_implementation('hotpipe_kv'))")
