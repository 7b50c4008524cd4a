"""Score functions and the eviction choice, as pure tensor functions.

Kept apart from the cache so that each can be checked against a brute-force
reference (``tests/test_kv_scoring.py``).

Shapes: ``B`` batch, ``Hq`` query heads, ``Hkv`` KV heads (``Hq = G * Hkv``
under grouped-query attention), ``Q`` new query tokens, ``L`` cached keys.
"""

from __future__ import annotations

import torch


def gumbel_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard Gumbel noise shaped like ``x``: ``-log(E)`` with ``E ~ Exp(1)``.

    ``-log(E)`` is the same law as the textbook ``-log(-log(U))`` and never
    takes the log of zero, because ``exponential_`` draws strictly positive values.
    """
    e = torch.empty(x.shape, dtype=torch.float32, device=x.device).exponential_(generator=generator)
    return -e.log()


def step_scores(
    logits: torch.Tensor,
    allowed: torch.Tensor,
    *,
    n_kv_heads: int,
    tau: float = 1.0,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """One step's score of every cached key, summed over queries and over each KV group.

    ``softmax((x + g) / tau)`` over the keys each query may see, where ``x`` are
    the pre-softmax logits and ``g`` the noise (Keyformer); with no noise and
    ``tau = 1`` it is the attention probability itself (H2O).

    Args:
        logits: ``(B, Hq, Q, L)`` scaled pre-softmax logits ``q . k / sqrt(d)``.
        allowed: ``(B, Hq, Q, L)`` bool, the keys each query may attend to.
        n_kv_heads: ``Hkv``; query head ``h`` reads KV head ``h // (Hq // Hkv)``.
        tau: softmax temperature of the score.
        noise: ``(B, Hq, Q, L)`` added to the logits, or ``None``.

    Returns:
        ``(B, Hkv, L)`` float32 scores; a query that may see no key (a left-pad
        row) contributes nothing.
    """
    x = logits.float()
    if noise is not None:
        x = x + noise
    x = (x / tau).masked_fill(~allowed, float("-inf"))
    p = torch.softmax(x, dim=-1)
    # a fully masked row is all -inf -> NaN; such a query (padding) scores nothing
    p = torch.where(allowed.any(dim=-1, keepdim=True), p, torch.zeros((), dtype=p.dtype))
    b, hq, _, n = p.shape
    # (B, Hq, L) -> (B, Hkv, G, L): query heads of a group are adjacent (repeat_kv's layout)
    return p.sum(dim=2).view(b, n_kv_heads, hq // n_kv_heads, n).sum(dim=2)


def protect_last(valid: torch.Tensor, count: int) -> torch.Tensor:
    """``(B, H, L)`` bool: the last ``count`` valid entries along ``L`` of each row."""
    from_end = valid.flip(-1).long().cumsum(-1).flip(-1)  # 1 at the last valid entry
    return valid & (from_end <= count)


def protect_first(valid: torch.Tensor, count: int) -> torch.Tensor:
    """``(B, H, L)`` bool: the first ``count`` valid entries along ``L`` of each row."""
    return valid & (valid.long().cumsum(-1) <= count)


def choose(priority: torch.Tensor, budget: int) -> torch.Tensor:
    """Indices of the ``budget`` highest priorities of each row, in ascending order.

    Args:
        priority: ``(B, H, L)`` float; ``+inf`` always kept, ``-inf`` dropped first.
        budget: entries to keep, ``<= L``.

    Returns:
        ``(B, H, budget)`` int64 indices into ``L``, sorted so that the cache
        stays in sequence order.
    """
    idx = priority.topk(budget, dim=-1, sorted=False).indices
    return idx.sort(dim=-1).values
