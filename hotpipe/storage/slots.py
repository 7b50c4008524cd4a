"""Slots of the fast tier: rows and their optimizer state, addressed by slot.

Without tiering there is one slot per row (slot == global row); with
tiering the planner maps rows to the slots of a smaller cache. The embedding
module (``model/embedding.py``) reads and updates slots and never knows which.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

#: Bytes of one stored value: rows, optimizer state and every record are float32.
FLOAT_BYTES = 4


class RowStateSpec(Protocol):
    """What storage needs to know of a row optimizer: the state it keeps per row.

    ``model.sparse_optim.RowOptimizer`` satisfies it; storage does not import
    the model stage.
    """

    state_width: int

    def init_state(self, rows: int, dim: int) -> torch.Tensor: ...


def record_width(dim: int, optimizer: RowStateSpec) -> int:
    """Floats in one row's record: its ``dim`` weights, then its optimizer state."""
    return dim + optimizer.state_width


def record_bytes(dim: int, optimizer: RowStateSpec) -> int:
    """Bytes one row occupies in any tier (weights + optimizer state)."""
    return record_width(dim, optimizer) * FLOAT_BYTES


@dataclass
class SlotStore:
    """Rows and their optimizer state, addressed by slot.

    weights: (S, D) float32; state: (S, W) float32 (W = optimizer.state_width).
    ``dirty``: (S,) bool, set when a slot's row is updated (write-back uses it).
    """

    weights: torch.Tensor
    state: torch.Tensor
    dirty: torch.Tensor

    @classmethod
    def allocate(cls, slots: int, dim: int, optimizer: RowStateSpec,
                 device: torch.device | str = "cpu") -> SlotStore:
        return cls(
            weights=torch.zeros(slots, dim, dtype=torch.float32, device=device),
            state=optimizer.init_state(slots, dim).to(device),
            dirty=torch.zeros(slots, dtype=torch.bool, device=device),
        )

    @property
    def num_slots(self) -> int:
        return int(self.weights.shape[0])

    @property
    def dim(self) -> int:
        return int(self.weights.shape[1])


def copy_rows(dst: torch.Tensor, src: np.ndarray, chunk: int = 1 << 16) -> None:
    """Copy a (possibly memory-mapped, read-only) (R, W) array into ``dst`` in
    row chunks, so a table bigger than free RAM is never loaded whole."""
    for r0 in range(0, len(src), chunk):
        dst[r0:r0 + chunk].copy_(torch.from_numpy(np.array(src[r0:r0 + chunk])))


class RowSource(Protocol):
    """(R, D+W) records that can be read in row chunks (a checkpoint streams them)."""

    shape: tuple[int, int]

    def __getitem__(self, rows: slice) -> np.ndarray: ...


class RowBlocks:
    """Records assembled lazily from blocks, read one row chunk at a time.

    ``blocks`` stacks vertically; each block is a list of column parts laid
    side by side. The untiered store is one block ``[weights, state]``; a
    file-backed table set is one block per table file ``[[map_0], [map_1], ...]``.
    Nothing is concatenated until a chunk is asked for, so a table bigger than
    RAM is checkpointed without being loaded whole.
    """

    dtype = np.float32

    def __init__(self, blocks: Sequence[Sequence[np.ndarray]]) -> None:
        self.blocks = [list(b) for b in blocks]
        heights = [int(b[0].shape[0]) for b in self.blocks]
        self.bounds = np.cumsum([0, *heights])
        width = sum(int(p.shape[1]) for p in self.blocks[0]) if self.blocks else 0
        self.shape = (int(self.bounds[-1]), width)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        lo, hi, _ = rows.indices(self.shape[0])
        out = []
        for b, parts in enumerate(self.blocks):
            a, z = max(lo, int(self.bounds[b])), min(hi, int(self.bounds[b + 1]))
            if a < z:
                r = slice(a - int(self.bounds[b]), z - int(self.bounds[b]))
                out.append(np.concatenate([p[r] for p in parts], axis=1) if len(parts) > 1
                           else np.asarray(parts[0][r]))
        return np.concatenate(out) if out else np.zeros((0, self.shape[1]), np.float32)
