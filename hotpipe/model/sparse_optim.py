"""Row-wise sparse optimizers: they touch only the rows a batch used.

A table never gets a dense gradient. The embedding module hands the
optimizer the *coalesced* gradient of each distinct row (duplicates summed,
in the order the lookups appear), the rows' current weights and their
optimizer state; the optimizer returns nothing and updates in place.

Why coalesce first: the math is then exactly the dense optimizer's
(``w - lr * sum_i g_i``), and because each row's update depends only on that
row, the result is bit-identical whatever slot the row sits in. That is what
makes tiered training equal untiered training (see DESIGN.md, Exactness).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch


class RowOptimizer(ABC):
    """Updates a set of distinct rows given their coalesced gradients."""

    #: columns of optimizer state stored next to each row (0 for SGD).
    state_width: int = 0

    def init_state(self, rows: int, dim: int) -> torch.Tensor:
        """State for ``rows`` fresh rows: (rows, state_width) float32."""
        del dim
        return torch.zeros(rows, self.state_width, dtype=torch.float32)

    @abstractmethod
    def step(self, weights: torch.Tensor, state: torch.Tensor, grad: torch.Tensor) -> None:
        """Update in place. weights (U, D), state (U, state_width), grad (U, D)."""


@dataclass
class RowSGD(RowOptimizer):
    """Plain SGD: ``w -= lr * g`` (same formula and rounding as ``torch.optim.SGD``)."""

    lr: float
    state_width: int = 0

    def step(self, weights: torch.Tensor, state: torch.Tensor, grad: torch.Tensor) -> None:
        weights.add_(grad, alpha=-self.lr)


@dataclass
class RowwiseAdagrad(RowOptimizer):
    """Row-wise Adagrad (one accumulator per row, as in FBGEMM/TorchRec).

    ``s += mean(g**2)``; ``w -= lr * g / (sqrt(s) + eps)``. One float of state
    per row instead of D: the memory-friendly choice for huge tables.
    """

    lr: float
    eps: float = 1e-8
    initial_accumulator: float = 0.0
    state_width: int = 1

    def init_state(self, rows: int, dim: int) -> torch.Tensor:
        return torch.full((rows, 1), self.initial_accumulator, dtype=torch.float32)

    def step(self, weights: torch.Tensor, state: torch.Tensor, grad: torch.Tensor) -> None:
        state.add_(grad.square().mean(dim=1, keepdim=True))
        weights.addcdiv_(grad, state.sqrt().add_(self.eps), value=-self.lr)


@dataclass
class ElementwiseAdagrad(RowOptimizer):
    """Adagrad with one accumulator per element: ``torch.optim.Adagrad``'s math
    (lr_decay=0, weight_decay=0) restricted to the touched rows."""

    lr: float
    eps: float = 1e-10
    initial_accumulator: float = 0.0
    dim: int = 0  # set by make_row_optimizer; the state is as wide as a row

    def __post_init__(self) -> None:
        self.state_width = self.dim

    def init_state(self, rows: int, dim: int) -> torch.Tensor:
        return torch.full((rows, dim), self.initial_accumulator, dtype=torch.float32)

    def step(self, weights: torch.Tensor, state: torch.Tensor, grad: torch.Tensor) -> None:
        state.addcmul_(grad, grad, value=1.0)
        weights.addcdiv_(grad, state.sqrt().add_(self.eps), value=-self.lr)


def make_row_optimizer(name: str, *, lr: float, dim: int, eps: float | None = None,
                       initial_accumulator: float = 0.0) -> RowOptimizer:
    """Build a row optimizer by name: ``sgd``, ``rowwise_adagrad`` or ``adagrad``."""
    if name == "sgd":
        return RowSGD(lr=lr)
    if name == "rowwise_adagrad":
        return RowwiseAdagrad(lr=lr, eps=1e-8 if eps is None else eps,
                              initial_accumulator=initial_accumulator)
    if name == "adagrad":
        return ElementwiseAdagrad(lr=lr, eps=1e-10 if eps is None else eps,
                                  initial_accumulator=initial_accumulator, dim=dim)
    raise ValueError(f"unknown embedding optimizer {name!r}; expected sgd, rowwise_adagrad or adagrad")
