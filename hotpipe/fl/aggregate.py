"""FedAvg and its masked form for clients that trained only part of the model.

``masked_average`` is, per element,

    w = sum_i n_i m_i w_i / sum_i n_i m_i

where ``m_i`` is 1 where client i carried the element and 0 where it was
dropped, so a straggler's absent neurons neither pull the average to zero nor
count in the denominator. With every mask all-ones it performs the same
float operations in the same order as :func:`fedavg`, hence the same bits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

State = Mapping[str, torch.Tensor]


def fedavg(states: Sequence[State], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Plain weighted average of full states (McMahan et al.): ``sum n_i w_i / sum n_i``."""
    total = float(sum(weights))
    out = {}
    for p in states[0]:
        acc = states[0][p] * float(weights[0])
        for s, n in zip(states[1:], weights[1:], strict=True):
            acc = acc + s[p] * float(n)
        out[p] = acc / total
    return out


def masked_average(states: Sequence[State], masks: Sequence[Mapping[str, torch.Tensor]],
                   weights: Sequence[float], fallback: State) -> dict[str, torch.Tensor]:
    """Per-element weighted average over the clients whose mask is True there.

    Args:
        states: full-shaped client states (dropped elements may hold anything).
        masks: bool tensors of the same shapes, True where the client trained the element.
        weights: per-client weight ``n_i`` (examples trained on).
        fallback: value for an element no client carried (the old global one).
    """
    out = {}
    for p, old in fallback.items():
        wm = [m[p].to(old.dtype) * float(n) for m, n in zip(masks, weights, strict=True)]
        # where(m) so a dropped element's content (0 or garbage, even NaN) never leaks in
        num = torch.where(masks[0][p], states[0][p], 0.0) * wm[0]
        den = wm[0]
        for s, m, w in zip(states[1:], masks[1:], wm[1:], strict=True):
            num = num + torch.where(m[p], s[p], 0.0) * w
            den = den + w
        out[p] = torch.where(den > 0, num / den, old)
    return out
