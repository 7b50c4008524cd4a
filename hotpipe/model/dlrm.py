"""DLRM from small parts: bottom MLP, pairwise-dot interaction, top MLP.

The embedding lookups are *not* inside this module: the caller passes the
(B, T, D) looked-up rows in (see ``model/embedding.py``), so the dense part
is an ordinary ``nn.Module`` trained by ``torch.optim`` while the tables are
updated row-wise, and the same module serves tiered and untiered runs.
"""

from __future__ import annotations

import torch
from torch import nn

from hotpipe.model.bags import JaggedRows, pool


def mlp(sizes: list[int], *, last_activation: bool) -> nn.Sequential:
    """Linear+ReLU stack: sizes [in, h1, ..., out]."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class _PairwiseDots(torch.autograd.Function):
    """Upper-triangle dot products with a one-matmul backward.

    Autograd through ``bmm(x, x^T)`` runs two batched matmuls backward (one
    per operand); since both operands are ``x``, the gradient is one:
    ``dX = (G + G^T) @ X`` with G the (B, F, F) gradient scattered back
    from the triangle. Batched tiny matmuls dominate the interaction on CPU,
    so this removes a third of its cost.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, flat_index: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b, f, _ = x.shape
        ctx.save_for_backward(x, flat_index)
        z = torch.bmm(x, x.transpose(1, 2))  # (B, F, F)
        return z.view(b, f * f).index_select(1, flat_index)  # (B, F(F-1)/2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        x, flat_index = ctx.saved_tensors
        b, f, _ = x.shape
        g = torch.zeros(b, f * f, dtype=grad.dtype, device=grad.device)
        g.index_copy_(1, flat_index, grad)
        g = g.view(b, f, f)
        return torch.bmm(g + g.transpose(1, 2), x), None


class DotInteraction(nn.Module):
    """Pairwise dot products of the F = T + 1 feature vectors.

    (B, F, D) -> (B, F*(F-1)/2): the strict upper triangle of X @ X^T.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        rows, cols = torch.triu_indices(num_features, num_features, offset=1)
        # Flat indices into the (F, F) matrix: one gather instead of two.
        self.register_buffer("flat_index", rows * num_features + cols, persistent=False)
        self.num_features = num_features

    @property
    def out_features(self) -> int:
        return self.num_features * (self.num_features - 1) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _PairwiseDots.apply(x, self.flat_index)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """Plain autograd version (the obviously-correct reference for tests)."""
        b, f, _ = x.shape
        z = torch.bmm(x, x.transpose(1, 2))
        return z.view(b, f * f).index_select(1, self.flat_index)  # type: ignore[arg-type]


class DLRM(nn.Module):
    """The dense part of DLRM.

    Args:
        num_dense: dense input features (13 for Criteo).
        num_tables: embedding tables T.
        embedding_dim: D; the bottom MLP's last layer must equal it.
        bottom: hidden sizes of the bottom MLP, ending with D.
        top: hidden sizes of the top MLP, ending with 1.

    Example:
        >>> m = DLRM(num_dense=13, num_tables=26, embedding_dim=16, bottom=[64, 16], top=[64, 1])
        >>> m(torch.zeros(4, 13), torch.zeros(4, 26, 16)).shape
        torch.Size([4])
    """

    def __init__(self, *, num_dense: int, num_tables: int, embedding_dim: int,
                 bottom: list[int], top: list[int], pooling: str = "sum") -> None:
        super().__init__()
        self.pooling = pooling  # multi-hot bags: model.pooling (model/bags.py)
        if bottom[-1] != embedding_dim:
            raise ValueError(f"bottom MLP must end with embedding_dim={embedding_dim}, got {bottom}")
        if top[-1] != 1:
            raise ValueError(f"top MLP must end with 1 output, got {top}")
        self.num_dense = num_dense
        self.bottom = mlp([num_dense, *bottom], last_activation=True) if num_dense else None
        features = num_tables + (1 if num_dense else 0)
        self.interaction = DotInteraction(features)
        top_in = self.interaction.out_features + (embedding_dim if num_dense else 0)
        self.top = mlp([top_in, *top], last_activation=False)

    def forward(self, dense: torch.Tensor, emb: torch.Tensor | JaggedRows) -> torch.Tensor:
        """dense (B, num_dense), emb (B, T, D) or multi-hot rows (pooled here) -> logits (B,)."""
        emb = pool(emb, self.pooling)  # (B, T, D)
        if self.bottom is not None:
            x = self.bottom(dense)  # (B, D)
            feats = torch.cat([x.unsqueeze(1), emb], dim=1)  # (B, T+1, D)
            z = torch.cat([x, self.interaction(feats)], dim=1)
        else:
            z = self.interaction(emb)
        return self.top(z).squeeze(1)
