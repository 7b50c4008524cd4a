"""The three model families FLuID drops neurons from, each with its tied groups.

A spec builds the full model and any narrower sub-model (``widths`` says how
many neurons each hidden layer keeps), lists its :class:`NeuronGroup` ties, and
counts multiply-accumulates per sample — the simulator's unit of work.

    MLPSpec   digits:      x (B, 64)       -> hidden... -> (B, classes)
    CNNSpec   FEMNIST:     x (B, 1, 28, 28) -> conv5x5·16 -> pool -> conv5x5·64 -> pool
                           -> FC120 -> (B, 62)                      (FLuID's CNN)
    LSTMSpec  Shakespeare: x (B, T) chars   -> embed 8 -> LSTM 128 -> LSTM 128
                           -> last step -> (B, 80)                  (FLuID's LSTM)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from hotpipe.errors import ConfigError
from hotpipe.fl.groups import NeuronGroup, Tie

Widths = Mapping[str, int]


class ModelSpec(Protocol):
    def build(self, widths: Widths | None = None) -> nn.Module: ...
    def groups(self) -> list[NeuronGroup]: ...
    def macs(self, widths: Widths | None = None) -> int: ...


def _widths(names: list[str], full: tuple[int, ...], widths: Widths | None) -> list[int]:
    if widths is None:
        return list(full)
    out = []
    for name, n in zip(names, full, strict=True):
        w = int(widths.get(name, n))
        if not 1 <= w <= n:
            raise ConfigError(f"widths.{name}", f"expected 1..{n} neurons, got {w}")
        out.append(w)
    return out


class _MLP(nn.Module):
    def __init__(self, in_features: int, widths: list[int], classes: int) -> None:
        super().__init__()
        dims = [in_features, *widths]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:], strict=False))
        self.out = nn.Linear(dims[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (B, F)
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.out(x)  # (B, classes)


@dataclass(frozen=True)
class MLPSpec:
    in_features: int = 64
    hidden: tuple[int, ...] = (64, 64)
    classes: int = 10

    def names(self) -> list[str]:
        return [f"hidden.{j}" for j in range(len(self.hidden))]

    def build(self, widths: Widths | None = None) -> nn.Module:
        return _MLP(self.in_features, _widths(self.names(), self.hidden, widths), self.classes)

    def groups(self) -> list[NeuronGroup]:
        names = self.names()
        nxt = [*names[1:], "out"]
        return [NeuronGroup(name, n, (Tie(f"{name}.weight", 0), Tie(f"{name}.bias", 0),
                                      Tie(f"{after}.weight", 1)))
                for name, n, after in zip(names, self.hidden, nxt, strict=True)]

    def macs(self, widths: Widths | None = None) -> int:
        dims = [self.in_features, *_widths(self.names(), self.hidden, widths), self.classes]
        return sum(a * b for a, b in zip(dims, dims[1:], strict=False))


class _CNN(nn.Module):
    def __init__(self, c1: int, c2: int, fc: int, classes: int, side: int) -> None:
        super().__init__()
        self.side = side
        self.conv1 = nn.Conv2d(1, c1, 5, padding=2)
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2)
        self.fc1 = nn.Linear(c2 * (side // 4) ** 2, fc)
        self.out = nn.Linear(fc, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, 1, self.side, self.side)  # (B, 1, 28, 28)
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)  # (B, c1, 14, 14)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)  # (B, c2, 7, 7)
        x = torch.relu(self.fc1(x.flatten(1)))  # flatten is channel-major: (B, c2*49)
        return self.out(x)


@dataclass(frozen=True)
class CNNSpec:
    channels: tuple[int, int] = (16, 64)
    fc: int = 120
    classes: int = 62
    side: int = 28  # two 2x2 pools: must be divisible by 4

    def names(self) -> list[str]:
        return ["conv1", "conv2", "fc1"]

    def build(self, widths: Widths | None = None) -> nn.Module:
        c1, c2, fc = _widths(self.names(), (*self.channels, self.fc), widths)
        return _CNN(c1, c2, fc, self.classes, self.side)

    def groups(self) -> list[NeuronGroup]:
        c1, c2 = self.channels
        pix = (self.side // 4) ** 2
        return [
            NeuronGroup("conv1", c1, (Tie("conv1.weight", 0), Tie("conv1.bias", 0),
                                      Tie("conv2.weight", 1))),
            NeuronGroup("conv2", c2, (Tie("conv2.weight", 0), Tie("conv2.bias", 0),
                                      Tie("fc1.weight", 1, block=pix))),
            NeuronGroup("fc1", self.fc, (Tie("fc1.weight", 0), Tie("fc1.bias", 0),
                                         Tie("out.weight", 1))),
        ]

    def macs(self, widths: Widths | None = None) -> int:
        c1, c2, fc = _widths(self.names(), (*self.channels, self.fc), widths)
        s = self.side
        return (c1 * 25 * s * s + c2 * c1 * 25 * (s // 2) ** 2
                + c2 * (s // 4) ** 2 * fc + fc * self.classes)


class _CharLSTM(nn.Module):
    def __init__(self, vocab: int, embed: int, widths: list[int], classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        dims = [embed, *widths]
        # one nn.LSTM per layer: a sub-model may keep a different width in each
        self.lstm = nn.ModuleList(nn.LSTM(a, b, batch_first=True)
                                  for a, b in zip(dims, dims[1:], strict=False))
        self.out = nn.Linear(dims[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)  # (B, T, E)
        for layer in self.lstm:
            h, _ = layer(h)  # (B, T, H)
        return self.out(h[:, -1])  # next char after the window: (B, classes)


@dataclass(frozen=True)
class LSTMSpec:
    vocab: int = 80
    embed: int = 8
    hidden: tuple[int, ...] = (128, 128)
    classes: int = 80
    seq_len: int = 80  # only used to count work

    def names(self) -> list[str]:
        return [f"lstm.{j}" for j in range(len(self.hidden))]

    def build(self, widths: Widths | None = None) -> nn.Module:
        return _CharLSTM(self.vocab, self.embed, _widths(self.names(), self.hidden, widths),
                         self.classes)

    def groups(self) -> list[NeuronGroup]:
        names = self.names()
        nxt = [f"{n}.weight_ih_l0" for n in names[1:]] + ["out.weight"]
        out = []
        for name, n, after in zip(names, self.hidden, nxt, strict=True):
            gates = tuple(Tie(f"{name}.{p}", 0, repeat=4)
                          for p in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"))
            out.append(NeuronGroup(name, n, (*gates, Tie(f"{name}.weight_hh_l0", 1),
                                             Tie(after, 1))))
        return out

    def macs(self, widths: Widths | None = None) -> int:
        hs = _widths(self.names(), self.hidden, widths)
        dims = [self.embed, *hs]
        per_step = sum(4 * h * (a + h) for a, h in zip(dims[:-1], hs, strict=True))
        return self.seq_len * per_step + hs[-1] * self.classes


def widths_of(spec: ModelSpec, keep: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Neurons per group in the sub-model that keeps ``keep`` (full size where absent)."""
    return {g.name: int(keep[g.name].numel()) if g.name in keep else g.size
            for g in spec.groups()}
