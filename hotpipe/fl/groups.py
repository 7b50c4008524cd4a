"""Tied-parameter groups: which slices of which tensors belong to one neuron.

Dropping a hidden neuron removes more than one row. For a neuron ``i`` of a
layer with ``n`` neurons the tied slices are

    Linear / Conv      : row i of its weight (output filter) and bias[i], and
                         column i of the next layer's weight
    Conv -> flatten -> FC: the next FC's columns ``i*H*W .. i*H*W + H*W - 1``
                         (the flattened (C, H, W) feature map puts channel i's
                         H*W pixels next to each other)
    LSTM (PyTorch layout): rows ``g*n + i`` for the 4 stacked gates (i, f, g, o)
                         of weight_ih, weight_hh, bias_ih, bias_hh; column i of
                         its own weight_hh (recurrence) and of the next
                         consumer's input weight

A :class:`Tie` states one such axis: neuron ``i`` owns, along ``dim`` of
``param``, the indices ``{rep * n * block + i * block + k : rep < repeat,
k < block}``. The same formula with ``n' < n`` describes the smaller model, so
taking the kept indices in increasing order gives a tensor laid out exactly as
the narrower layer expects (gates stay stacked, channels stay blocked).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from hotpipe.errors import ConfigError

Shapes = Mapping[str, tuple[int, ...]]
Keep = Mapping[str, torch.Tensor]  # group name -> sorted kept neuron ids, int64 (k,)


@dataclass(frozen=True)
class Tie:
    """One tensor axis indexed by a group's neurons.

    Args:
        param: state-dict key, e.g. ``"fc1.weight"``.
        dim: the axis of that tensor.
        block: consecutive indices one neuron owns (``H*W`` for conv -> FC).
        repeat: stacked copies of the neuron axis (4 for LSTM gates).
    """

    param: str
    dim: int
    block: int = 1
    repeat: int = 1

    def axis_len(self, n: int) -> int:
        return self.repeat * n * self.block

    def indices(self, keep: torch.Tensor, n: int) -> torch.Tensor:
        """Indices along ``dim`` owned by the neurons ``keep`` of a layer of ``n``.

        Shapes: keep (k,) sorted -> (repeat * k * block,) sorted.
        """
        k = torch.arange(self.block, dtype=torch.long)
        rep = torch.arange(self.repeat, dtype=torch.long) * (n * self.block)
        # (repeat, k, block): repeat outermost so gate g's rows stay contiguous
        idx = rep[:, None, None] + keep[None, :, None] * self.block + k[None, None, :]
        return idx.reshape(-1)


@dataclass(frozen=True)
class NeuronGroup:
    """The neurons of one hidden layer and every tensor axis they index.

    Args:
        name: layer name, the key used in ``Keep`` maps.
        size: number of neurons ``n`` in the full model.
        ties: every axis tied to these neurons.
    """

    name: str
    size: int
    ties: tuple[Tie, ...]


def check_groups(groups: list[NeuronGroup], shapes: Shapes) -> None:
    """Raise ``ConfigError`` if a tie names a missing tensor or an axis of the wrong length."""
    for g in groups:
        for t in g.ties:
            if t.param not in shapes:
                raise ConfigError(f"groups.{g.name}", f"ties parameter {t.param!r}, "
                                  f"which the model does not have (has {sorted(shapes)})")
            shape = shapes[t.param]
            if t.dim >= len(shape) or shape[t.dim] != t.axis_len(g.size):
                raise ConfigError(f"groups.{g.name}", f"{t.param} axis {t.dim}: expected length "
                                  f"{t.axis_len(g.size)}, shape is {tuple(shape)}")


def full_keep(groups: list[NeuronGroup]) -> dict[str, torch.Tensor]:
    return {g.name: torch.arange(g.size) for g in groups}


def axis_indices(groups: list[NeuronGroup], keep: Keep) -> dict[str, list[tuple[int, torch.Tensor]]]:
    """Per parameter, the kept indices of each tied axis: ``{param: [(dim, idx), ...]}``.

    Groups missing from ``keep`` keep all their neurons (nothing listed for them).
    """
    out: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for g in groups:
        if g.name not in keep:
            continue
        for t in g.ties:
            out.setdefault(t.param, []).append((t.dim, t.indices(keep[g.name], g.size)))
    return out


def sub_shapes(groups: list[NeuronGroup], shapes: Shapes, keep: Keep) -> dict[str, tuple[int, ...]]:
    """The shape every tensor has in the sub-model that keeps ``keep``."""
    out = {k: tuple(s) for k, s in shapes.items()}
    for p, axes in axis_indices(groups, keep).items():
        s = list(out[p])
        for dim, idx in axes:
            s[dim] = int(idx.numel())
        out[p] = tuple(s)
    return out


def element_mask(groups: list[NeuronGroup], shapes: Shapes, keep: Keep) -> dict[str, torch.Tensor]:
    """Boolean masks of the full shapes, True where an element is in the sub-model.

    Each mask is the outer product of per-axis masks, so its row-major order of
    True elements is the row-major order of the extracted sub-tensor.
    """
    axes = axis_indices(groups, keep)
    masks = {}
    for p, shape in shapes.items():
        m = torch.ones(shape, dtype=torch.bool)
        for dim, idx in axes.get(p, []):
            axis = torch.zeros(shape[dim], dtype=torch.bool)
            axis[idx] = True
            view = [1] * len(shape)
            view[dim] = shape[dim]
            m = m & axis.view(view)
        masks[p] = m
    return masks


def widths_from_shapes(groups: list[NeuronGroup], shapes: Shapes) -> dict[str, int]:
    """Neurons per group of a (sub-)model, read off its tensor shapes.

    Raises ``ConfigError`` when a tied axis is not a
    whole number of neurons or two ties of one group disagree.
    """
    out: dict[str, int] = {}
    for g in groups:
        seen = set()
        for t in g.ties:
            if t.param not in shapes or t.dim >= len(shapes[t.param]):
                raise ConfigError(f"groups.{g.name}", f"{t.param} axis {t.dim} is missing")
            length = shapes[t.param][t.dim]
            if length % (t.repeat * t.block):
                raise ConfigError(f"groups.{g.name}", f"{t.param} axis {t.dim} has length "
                                  f"{length}, not a multiple of {t.repeat * t.block}")
            seen.add(length // (t.repeat * t.block))
        if len(seen) != 1:
            raise ConfigError(f"groups.{g.name}", f"ties disagree on the width: {sorted(seen)}")
        out[g.name] = seen.pop()
    return out
