"""DCN-v2 (Wang et al., 2021) from small parts: a cross network and a deep MLP.

The input is one flat vector per sample, the bottom MLP's output (or the raw
dense features when there is no bottom MLP, as in the paper) followed by
every table's embedding::

    x0 = [ bottom(dense) | emb[:, 0, :] | emb[:, 1, :] | ... | emb[:, T-1, :] ]   # (B, N)

A cross layer keeps the width N and adds one degree of feature crossing::

    x_{l+1} = x0 * (W_l x_l + b_l) + x_l          W_l (N, N), or U_l V_l (N, r)(r, N)

Two ways to combine it with the deep MLP (the paper's Figure 2):

* ``stacked``:  x0 -> cross -> deep -> top
* ``parallel``: x0 -> [cross(x0) | deep(x0)] -> top

As in :class:`~hotpipe.model.dlrm.DLRM`, the lookups are not inside the
module: ``forward(dense, emb)`` takes the (B, T, D) rows, so tiering stays
under the lookup and the same module serves tiered and untiered runs.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from hotpipe.model.bags import JaggedRows, pool
from hotpipe.model.dlrm import mlp

__all__ = ["DCN", "CrossNet"]

Structure = Literal["stacked", "parallel"]


class CrossNet(nn.Module):
    """Stacked DCN-v2 cross layers, full-rank or low-rank.

    With ``rank > 0`` each W_l is factored as U_l V_l (TorchRec's
    ``LowRankCrossNet``): N*N weights become 2*N*r, the paper's main lever
    for wide inputs (N = 27 * 64 = 1728 for Criteo at dim 64). Weights are
    Xavier-normal and biases zero, as in TorchRec, so an untrained layer
    starts close to the identity map plus a small cross term.

    Args:
        in_features: N, the width of x0.
        layers: number of cross layers (the highest crossing degree is layers + 1).
        rank: r of the factorisation; 0 = full N x N matrices.

    Example:
        >>> net = CrossNet(10, layers=2, rank=3)
        >>> net(torch.zeros(4, 10)).shape
        torch.Size([4, 10])
    """

    def __init__(self, in_features: int, *, layers: int, rank: int) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"cross layers must be >= 1, got {layers}")
        if rank < 0:
            raise ValueError(f"cross rank must be >= 0 (0 = full rank), got {rank}")
        self.rank = rank
        self.maps = nn.ModuleList(self._layer(in_features, rank) for _ in range(layers))

    @staticmethod
    def _layer(n: int, rank: int) -> nn.Module:
        if rank:
            # V (r, N) has no bias: the one bias b_l sits after U, as in the formula.
            down, up = nn.Linear(n, rank, bias=False), nn.Linear(rank, n)
            nn.init.xavier_normal_(down.weight)
            nn.init.xavier_normal_(up.weight)
            nn.init.zeros_(up.bias)
            return nn.Sequential(down, up)
        full = nn.Linear(n, n)
        nn.init.xavier_normal_(full.weight)
        nn.init.zeros_(full.bias)
        return full

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """x0 (B, N) -> (B, N)."""
        x = x0
        for w in self.maps:
            x = x0 * w(x) + x  # (B, N)
        return x

    def matrices(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(W_l, b_l) per layer with W_l = U_l V_l materialised (for tests and inspection)."""
        out: list[tuple[torch.Tensor, torch.Tensor]] = []
        for w in self.maps:
            lin = [m for m in w.modules() if isinstance(m, nn.Linear)]  # [W] or [V, U]
            up = lin[-1]
            out.append((up.weight @ lin[0].weight if len(lin) == 2 else up.weight, up.bias))
        return out

    def reference(self, x0: torch.Tensor) -> torch.Tensor:
        """The formula written out with explicit matrices (the tests' reference)."""
        x = x0
        for w, b in self.matrices():
            x = x0 * (x @ w.T + b) + x
        return x


class DCN(nn.Module):
    """The dense part of DCN-v2.

    Args:
        num_dense: dense input features (13 for Criteo); 0 = none.
        num_tables: embedding tables T.
        embedding_dim: D.
        bottom: bottom MLP widths for the dense features; [] = raw dense into x0.
        cross_layers: cross layers L.
        cross_rank: r of the low-rank factorisation; 0 = full rank.
        structure: ``stacked`` (cross then deep) or ``parallel`` (side by side).
        deep: deep MLP widths ([] allowed only when stacked: cross straight into top).
        top: top MLP widths, ending with 1.

    Example:
        >>> m = DCN(num_dense=13, num_tables=26, embedding_dim=16, bottom=[64, 16],
        ...         cross_layers=3, cross_rank=64, structure="stacked", deep=[256, 64], top=[1])
        >>> m(torch.zeros(4, 13), torch.zeros(4, 26, 16)).shape
        torch.Size([4])
    """

    def __init__(self, *, num_dense: int, num_tables: int, embedding_dim: int, bottom: list[int],
                 cross_layers: int, cross_rank: int, structure: Structure, deep: list[int],
                 top: list[int], pooling: str = "sum") -> None:
        super().__init__()
        self.pooling = pooling  # multi-hot bags: model.pooling (model/bags.py)
        if top[-1] != 1:
            raise ValueError(f"top MLP must end with 1 output, got {top}")
        if structure not in ("stacked", "parallel"):
            raise ValueError(f"structure must be 'stacked' or 'parallel', got {structure!r}")
        if structure == "parallel" and not deep:
            raise ValueError("a parallel DCN needs a deep MLP (deep=[] leaves nothing beside the cross net)")
        self.structure = structure
        self.bottom = mlp([num_dense, *bottom], last_activation=True) if num_dense and bottom else None
        dense_width = (bottom[-1] if bottom else num_dense) if num_dense else 0
        n = dense_width + num_tables * embedding_dim
        self.in_features = n
        self.cross = CrossNet(n, layers=cross_layers, rank=cross_rank)
        # The deep MLP's output feeds the top MLP, so it ends with a ReLU like every hidden layer.
        self.deep = mlp([n, *deep], last_activation=True) if deep else None
        top_in = (n + deep[-1]) if structure == "parallel" else (deep[-1] if deep else n)
        self.top = mlp([top_in, *top], last_activation=False)

    def forward(self, dense: torch.Tensor, emb: torch.Tensor | JaggedRows) -> torch.Tensor:
        """dense (B, num_dense), emb (B, T, D) or multi-hot rows (pooled here) -> logits (B,)."""
        flat = pool(emb, self.pooling).flatten(1)  # (B, T*D)
        if dense.shape[1]:
            d = self.bottom(dense) if self.bottom is not None else dense  # (B, D') or (B, F)
            x0 = torch.cat([d, flat], dim=1)  # (B, N)
        else:
            x0 = flat
        if self.structure == "parallel":
            assert self.deep is not None  # checked in __init__
            z = torch.cat([self.cross(x0), self.deep(x0)], dim=1)  # (B, N + deep[-1])
        else:
            z = self.cross(x0)  # (B, N)
            if self.deep is not None:
                z = self.deep(z)  # (B, deep[-1])
        return self.top(z).squeeze(1)
