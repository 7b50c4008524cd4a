"""Slots of the fast tier: rows and their optimizer state, addressed by slot.

Without tiering there is one slot per row (slot == global row); with
tiering the planner maps rows to the slots of a smaller cache. The embedding
module (``model/embedding.py``) reads and updates slots and never knows which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch


class RowStateSpec(Protocol):
    """What storage needs to know of a row optimizer: the state it keeps per row.

    ``model.sparse_optim.RowOptimizer`` satisfies it; storage does not import
    the model stage.
    """

    state_width: int

    def init_state(self, rows: int, dim: int) -> torch.Tensor: ...


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
