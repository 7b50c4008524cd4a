"""Which neurons the non-straggler clients have stopped changing, and the threshold.

An element is *stable* on a client when ``|w_client - w_global| <= th * |w_global|``;
it is stable for the round when that holds on at least ``quorum`` (75%) of
the non-straggler clients; a neuron is *invariant* when every element tied to
it (see :mod:`hotpipe.fl.groups`) is stable.

The threshold ``th`` is not known up front; :class:`ThresholdSchedule` follows
the FLuID reference: set at round 2 to the smallest per-neuron maximum
relative change (so at least one neuron would qualify), averaged with round 3's
value, then from mid-training raised by ``step`` every ``every`` rounds until
enough neurons qualify to fill the straggler's drop quota.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from hotpipe.errors import ConfigError
from hotpipe.fl.groups import NeuronGroup, Tie

State = Mapping[str, torch.Tensor]


def _per_neuron(t: torch.Tensor, tie: Tie, n: int, reduce: str) -> torch.Tensor:
    """Reduce an element-wise tensor to one value per neuron along a tie: (n,)."""
    moved = t.movedim(tie.dim, 0).reshape(tie.repeat, n, tie.block, -1)
    moved = moved.transpose(0, 1).reshape(n, -1)  # (n, everything this neuron owns)
    return moved.all(dim=1) if reduce == "all" else moved.amax(dim=1)


def stable_elements(global_state: State, clients: Sequence[State], th: float,
                    quorum: float = 0.75) -> dict[str, torch.Tensor]:
    """Bool per element: within ``th`` relative change on >= ``quorum`` of ``clients``."""
    out = {}
    for p, g in global_state.items():
        count = torch.zeros(g.shape, dtype=torch.int32)
        for c in clients:
            count += ((c[p] - g).abs() <= th * g.abs()).to(torch.int32)
        out[p] = count >= quorum * len(clients)
    return out


def invariant_neurons(global_state: State, clients: Sequence[State], groups: list[NeuronGroup],
                      th: float, quorum: float = 0.75) -> dict[str, torch.Tensor]:
    """Bool (n,) per group: True where every tied element is stable.

    ``clients`` are the full-model updates of the non-stragglers only: a
    straggler trained a sub-model and its absent neurons say nothing.
    """
    if not clients:
        return {g.name: torch.zeros(g.size, dtype=torch.bool) for g in groups}
    stable = stable_elements(global_state, clients, th, quorum)
    out = {}
    for g in groups:
        ok = torch.ones(g.size, dtype=torch.bool)
        for t in g.ties:
            ok &= _per_neuron(stable[t.param], t, g.size, "all")
        out[g.name] = ok
    return out


def max_relative_change(global_state: State, clients: Sequence[State],
                        groups: list[NeuronGroup]) -> dict[str, torch.Tensor]:
    """Float (n,) per group: the largest ``|dw| / |w|`` over clients and tied elements.

    ``0/0`` (a zero weight that stayed zero) counts as no change; ``x/0`` as infinite.
    """
    rel: dict[str, torch.Tensor] = {}
    for p, g in global_state.items():
        worst = torch.zeros(g.shape, dtype=g.dtype)
        for c in clients:
            d = (c[p] - g).abs()
            worst = torch.maximum(worst, torch.where(d == 0, 0.0, d / g.abs()))
        rel[p] = worst
    out = {}
    for grp in groups:
        m = torch.zeros(grp.size, dtype=torch.float32)
        for t in grp.ties:
            m = torch.maximum(m, _per_neuron(rel[t.param], t, grp.size, "max").float())
        out[grp.name] = m
    return out


@dataclass(frozen=True)
class ThresholdConfig:
    """Knobs of the invariance threshold.

    Args:
        initial: threshold before round ``init_rounds[0]`` sets it from data.
        init_rounds: rounds whose smallest per-neuron change sets (first) and
            then averages into (second) the threshold — the reference's 2 and 3.
        raise_from: round after which the threshold starts rising; ``None``
            means half the run (the reference: 125 of 250 FEMNIST rounds).
        every: rounds between raises (the reference: 10).
        step: amount added per raise (the reference: 0.01).
        quorum: fraction of non-straggler clients an element must be stable on.
    """

    initial: float = 0.1
    init_rounds: tuple[int, int] = (2, 3)
    raise_from: int | None = None
    every: int = 10
    step: float = 0.01
    quorum: float = 0.75

    def __post_init__(self) -> None:
        if not self.initial >= 0:
            raise ConfigError("threshold.initial", f"expected >= 0, got {self.initial}")
        if self.every < 1:
            raise ConfigError("threshold.every", f"expected >= 1, got {self.every}")
        if not 0 < self.quorum <= 1:
            raise ConfigError("threshold.quorum", f"expected in (0, 1], got {self.quorum}")


class ThresholdSchedule:
    """The threshold's state over a run; call :meth:`step` once per round, after training."""

    def __init__(self, config: ThresholdConfig, rounds: int) -> None:
        self.config = config
        self.value = config.initial
        self.raise_from = config.raise_from if config.raise_from is not None else rounds // 2
        self.stopped = False  # set once enough neurons qualified; never unset (as the reference)
        self._since_raise = 0

    def before_round_aggregation(self, rnd: int) -> float:
        """Raise the threshold if due this round; return the value to flag neurons with."""
        if rnd > self.raise_from and not self.stopped:
            self._since_raise += 1
            if self._since_raise >= self.config.every:
                self.value += self.config.step
                self._since_raise = 0
        return self.value

    def observe(self, rnd: int, smallest_change: float, enough: bool) -> None:
        """Feed this round's smallest per-neuron max change and whether the quota was met."""
        first, second = self.config.init_rounds
        if rnd == first:
            self.value = smallest_change
        elif rnd == second:
            self.value = (self.value + smallest_change) / 2
        if enough:
            self.stopped = True
