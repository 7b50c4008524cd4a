"""Which neurons a straggler drops: invariant (FLuID) and the two baselines.

    random    Federated Dropout (Caldas et al.): a fresh seeded random subset
    ordered   FjORD (Horváth et al.): always keep the prefix 0..k-1
    invariant FLuID: drop, in priority order, neurons invariant again since
              they were last dropped, then other invariant ones, then random

Every method drops ``n - int(r * n)`` of a layer's ``n`` neurons (the
reference's count), keeping at least one.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from hotpipe.errors import ConfigError
from hotpipe.fl.groups import NeuronGroup

METHODS = ("fedavg", "random", "ordered", "invariant")


def check_r(r: float, key: str = "r") -> float:
    """Validate a sub-model size: ``r`` must lie in (0, 1]."""
    if not isinstance(r, int | float) or not 0.0 < float(r) <= 1.0:
        raise ConfigError(key, f"sub-model size must be in (0, 1], got {r!r}")
    return float(r)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ConfigError("method", f"expected one of {', '.join(METHODS)}, got {method!r}")
    return method


def n_dropped(n: int, r: float) -> int:
    """Neurons to drop from a layer of ``n`` for sub-model size ``r``."""
    return min(n - int(check_r(r) * n), n - 1)


def _pick(pool: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """``k`` random members of ``pool`` (all of it when ``k >= len(pool)``)."""
    if k >= pool.numel():
        return pool
    return pool[torch.randperm(pool.numel(), generator=gen)[:k]]


def select_dropped(method: str, n: int, n_drop: int, gen: torch.Generator, *,
                   invariant: torch.Tensor | None = None,
                   last_dropped: torch.Tensor | None = None) -> torch.Tensor:
    """Sorted int64 ids of the ``n_drop`` neurons to drop from a layer of ``n``.

    Args:
        invariant: bool (n,), the neurons currently invariant (``invariant`` method).
        last_dropped: bool (n,), the neurons this client dropped last time.
    """
    if method == "ordered":
        return torch.arange(n - n_drop, n)
    if method == "random":
        return torch.randperm(n, generator=gen)[:n_drop].sort().values
    if method != "invariant":
        raise ConfigError("method", f"no neurons are dropped by {method!r}")
    inv = invariant if invariant is not None else torch.zeros(n, dtype=torch.bool)
    last = last_dropped if last_dropped is not None else torch.zeros(n, dtype=torch.bool)
    again = inv & last
    tiers = [again, inv & ~again, ~inv]  # priority order
    chosen: list[torch.Tensor] = []
    left = n_drop
    for tier in tiers:
        if left == 0:
            break
        got = _pick(tier.nonzero().flatten(), left, gen)
        chosen.append(got)
        left -= got.numel()
    return torch.cat(chosen).sort().values if chosen else torch.zeros(0, dtype=torch.long)


def keep_from_dropped(n: int, dropped: torch.Tensor) -> torch.Tensor:
    mask = torch.ones(n, dtype=torch.bool)
    mask[dropped] = False
    return mask.nonzero().flatten()


def plan_submodel(method: str, groups: list[NeuronGroup], r: float, gen: torch.Generator, *,
                  invariant: Mapping[str, torch.Tensor] | None = None,
                  last_dropped: Mapping[str, torch.Tensor] | None = None,
                  ) -> dict[str, torch.Tensor]:
    """Kept neuron ids (sorted, int64) per hidden group for one straggler.

    ``fedavg`` and ``r == 1`` keep everything and draw no random numbers, so a
    run with r = 1 takes the same random stream as plain FedAvg.
    """
    check_method(method)
    check_r(r)
    keep = {}
    for g in groups:
        k = n_dropped(g.size, r)
        if method == "fedavg" or k == 0:
            keep[g.name] = torch.arange(g.size)
            continue
        dropped = select_dropped(method, g.size, k, gen,
                                 invariant=None if invariant is None else invariant.get(g.name),
                                 last_dropped=None if last_dropped is None
                                 else last_dropped.get(g.name))
        keep[g.name] = keep_from_dropped(g.size, dropped)
    return keep
