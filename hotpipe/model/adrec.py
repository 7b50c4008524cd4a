"""Ad-Rec (Adnan et al., 2023): a masked transformer over feature tokens.

Every feature becomes one D-wide token: the T looked-up embeddings, plus the
dense features projected to D by the bottom MLP (as DLRM does), F = T + 1
tokens in all. A learned per-field vector is added to each token, because
attention is permutation-equivariant: without it the shared Q/K projections
could not tell which table a token came from. Then ``attn_layers`` pre-norm
transformer blocks::

    x = x + MaskedSelfAttention(LayerNorm(x))
    x = x + FeedForward(LayerNorm(x))

and a final LayerNorm; the (B, F, D) tokens are flattened (not pooled, so
the top MLP still knows which field each value came from) into the top MLP.

**Masking rule: the diagonal.** Token i attends to every token j != i and
never to itself. DLRM's interaction keeps only the strict upper triangle of
X X^T for the same reason: a feature's "interaction" with itself is no
cross-feature at all, and the token's own value already reaches the output
through the residual path. With the diagonal masked, each attention output
is a mix of the *other* features only, so everything the attention adds is a
cross-feature; stacking L blocks builds crosses of order up to L + 1. We
chose this fixed rule over the paper's learned/random masks over feature
pairs because it needs no extra hyper-parameter, is deterministic (tiered
runs must equal untiered runs bit for bit, and a per-step random mask would
have to share an RNG stream with the loop), and is testable: the tests check
that the attention weights on the diagonal are exactly zero and that a
token's attention output does not depend on its own value.

The lookups stay outside, as in :class:`~hotpipe.model.dlrm.DLRM`:
``forward(dense (B, F), emb (B, T, D)) -> logits (B,)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from hotpipe.model.bags import JaggedRows, pool
from hotpipe.model.dlrm import mlp

__all__ = ["AdRec", "MaskedSelfAttention", "TransformerBlock"]


class MaskedSelfAttention(nn.Module):
    """Multi-head self-attention over F tokens with the diagonal masked out.

    Args:
        dim: D, the token width (divisible by ``heads``).
        heads: attention heads H; each sees D / H channels.
        num_tokens: F (>= 2: with one token the mask would leave nothing to attend to).

    Example:
        >>> att = MaskedSelfAttention(8, heads=2, num_tokens=5)
        >>> att(torch.zeros(3, 5, 8)).shape
        torch.Size([3, 5, 8])
    """

    keep: torch.Tensor  # (F, F) bool buffer

    def __init__(self, dim: int, *, heads: int, num_tokens: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding_dim={dim} is not divisible by heads={heads}")
        if num_tokens < 2:
            raise ValueError(f"masked attention needs >= 2 feature tokens, got {num_tokens}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)  # one matmul for Q, K and V
        self.out = nn.Linear(dim, dim)
        # True = may attend (scaled_dot_product_attention's boolean convention).
        keep = ~torch.eye(num_tokens, dtype=torch.bool)
        self.register_buffer("keep", keep, persistent=False)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, f, d = x.shape
        qkv = self.qkv(x).view(b, f, 3, self.heads, d // self.heads)  # (B, F, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, F, Dh)
        return q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, F, D) -> (B, F, D)."""
        b, f, d = x.shape
        q, k, v = self._heads(x)
        # torch's fused kernel: no (B, H, F, F) softmax tensor kept for backward.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.keep)  # (B, H, F, Dh)
        return self.out(y.transpose(1, 2).reshape(b, f, d))

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, F, D) -> attention weights (B, H, F, F), written out (the tests' reference)."""
        q, k, _ = self._heads(x)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, F, F)
        return scores.masked_fill(~self.keep, float("-inf")).softmax(-1)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """Plain autograd version of :meth:`forward`."""
        b, f, d = x.shape
        _, _, v = self._heads(x)
        y = self.probs(x) @ v  # (B, H, F, Dh)
        return self.out(y.transpose(1, 2).reshape(b, f, d))


class TransformerBlock(nn.Module):
    """Pre-norm block: masked attention and a feed-forward, each with a residual.

    Pre-norm (LayerNorm before each sublayer) rather than the original
    post-norm: the residual path stays an identity, which trains stably
    without a learning-rate warm-up — the loop has none.
    """

    def __init__(self, dim: int, *, heads: int, num_tokens: int, ffn_mult: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MaskedSelfAttention(dim, heads=heads, num_tokens=num_tokens)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_mult * dim), nn.ReLU(),
                                 nn.Linear(ffn_mult * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, F, D) -> (B, F, D)."""
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class AdRec(nn.Module):
    """The dense part of Ad-Rec.

    Args:
        num_dense: dense input features (13 for Criteo); 0 = no dense token.
        num_tables: embedding tables T.
        embedding_dim: D, the token width.
        bottom: bottom MLP widths, ending with D (the dense token).
        heads: attention heads (D divisible by it).
        attn_layers: transformer blocks.
        ffn_mult: the feed-forward's hidden width is ffn_mult * D.
        top: top MLP widths, ending with 1.

    Example:
        >>> m = AdRec(num_dense=13, num_tables=26, embedding_dim=16, bottom=[64, 16],
        ...           heads=2, attn_layers=2, ffn_mult=2, top=[64, 1])
        >>> m(torch.zeros(4, 13), torch.zeros(4, 26, 16)).shape
        torch.Size([4])
    """

    def __init__(self, *, num_dense: int, num_tables: int, embedding_dim: int, bottom: list[int],
                 heads: int, attn_layers: int, ffn_mult: int, top: list[int], pooling: str = "sum") -> None:
        super().__init__()
        self.pooling = pooling  # multi-hot bags: model.pooling (model/bags.py)
        if num_dense and bottom[-1] != embedding_dim:
            raise ValueError(f"bottom MLP must end with embedding_dim={embedding_dim}, got {bottom}")
        if top[-1] != 1:
            raise ValueError(f"top MLP must end with 1 output, got {top}")
        if attn_layers < 1:
            raise ValueError(f"attn_layers must be >= 1, got {attn_layers}")
        self.bottom = mlp([num_dense, *bottom], last_activation=True) if num_dense else None
        tokens = num_tables + (1 if num_dense else 0)
        # Small init: the field vectors only need to break the symmetry between tables.
        self.field = nn.Parameter(torch.randn(tokens, embedding_dim) * 0.02)  # (F, D)
        self.blocks = nn.ModuleList(
            TransformerBlock(embedding_dim, heads=heads, num_tokens=tokens, ffn_mult=ffn_mult)
            for _ in range(attn_layers))
        self.norm = nn.LayerNorm(embedding_dim)
        self.top = mlp([tokens * embedding_dim, *top], last_activation=False)

    def forward(self, dense: torch.Tensor, emb: torch.Tensor | JaggedRows) -> torch.Tensor:
        """dense (B, num_dense), emb (B, T, D) or multi-hot rows (pooled here) -> logits (B,)."""
        emb = pool(emb, self.pooling)  # (B, T, D)
        if self.bottom is not None:
            x = torch.cat([self.bottom(dense).unsqueeze(1), emb], dim=1)  # (B, T+1, D)
        else:
            x = emb  # (B, T, D)
        x = x + self.field
        for block in self.blocks:
            x = block(x)
        return self.top(self.norm(x).flatten(1)).squeeze(1)  # (B, F*D) -> (B,)
