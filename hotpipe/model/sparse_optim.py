"""Row-wise sparse optimizers: they touch only the rows a batch used.

A table never gets a dense gradient. The embedding module hands the
optimizer the *coalesced* gradient of each distinct row (duplicates summed,
in the order the lookups appear) and the rows' optimizer state; the
optimizer updates the state in place and returns the change of each row,
which the caller adds to the table with one ``index_add_``. Returning a
delta rather than updating gathered rows saves a gather and a scatter of
every touched row (measured: the row write-back was a quarter of the
embedding step).

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
    def delta(self, state: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Update ``state`` (U, state_width) in place; return the rows' change (U, D).

        grad: (U, D) coalesced gradients of U distinct rows.
        """


@dataclass
class RowSGD(RowOptimizer):
    """Plain SGD: ``w -= lr * g`` (same formula and rounding as ``torch.optim.SGD``)."""

    lr: float
    state_width: int = 0

    def delta(self, state: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return grad * -self.lr


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

    def delta(self, state: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        state.add_(grad.square().mean(dim=1, keepdim=True))
        return grad.div(state.sqrt().add_(self.eps)).mul_(-self.lr)


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

    def delta(self, state: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        state.addcmul_(grad, grad, value=1.0)
        return grad.div(state.sqrt().add_(self.eps)).mul_(-self.lr)


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
