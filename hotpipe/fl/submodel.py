"""Cut a sub-model out of the global state and put a trained one back.

``extract`` keeps, along every tied axis, the indices of the kept neurons (in
increasing order); ``expand`` scatters a sub-model back into full-shaped
tensors and returns the mask of the elements it actually carried, which
masked aggregation uses to leave the dropped ones out of their denominators.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from hotpipe.fl.errors import SubModelShapeError
from hotpipe.fl.groups import Keep, NeuronGroup, Shapes, axis_indices, element_mask, sub_shapes

State = Mapping[str, torch.Tensor]


def shapes_of(state: State) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def extract(state: State, groups: list[NeuronGroup], keep: Keep) -> dict[str, torch.Tensor]:
    """The sub-model of ``state`` that keeps the neurons ``keep``.

    Shapes: each tensor shrinks along its tied axes to ``repeat*k*block``; the
    result is a state dict the narrower model (``spec.build(widths)``) loads.
    """
    axes = axis_indices(groups, keep)
    out = {}
    for p, t in state.items():
        for dim, idx in axes.get(p, []):
            t = t.index_select(dim, idx)
        out[p] = t.clone() if p not in axes else t  # index_select already copies
    return out


def expand(sub: State, full_shapes: Shapes, groups: list[NeuronGroup], keep: Keep,
           *, client: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Scatter a (trained) sub-model back into full-shaped tensors.

    Returns ``(full, mask)``: dropped elements are 0 in ``full`` and False in
    ``mask``. Raises ``SubModelShapeError`` naming the parameter when ``sub``
    lacks a key, has an extra one, or a tensor has the wrong shape.
    """
    want = sub_shapes(groups, full_shapes, keep)
    for p in want.keys() | sub.keys():
        found = tuple(sub[p].shape) if p in sub else None
        if found != want.get(p):
            raise SubModelShapeError(p, expected=want.get(p), found=found, client=client)
    masks = element_mask(groups, full_shapes, keep)
    full = {}
    for p, shape in full_shapes.items():
        t = torch.zeros(shape, dtype=sub[p].dtype)
        # row-major order of the mask's True elements == row-major order of sub[p]
        t[masks[p]] = sub[p].reshape(-1)
        full[p] = t
    return full, masks
