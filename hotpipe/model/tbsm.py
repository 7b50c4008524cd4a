"""A sequence-feature model in the spirit of TBSM: a behaviour list pooled by attention.

TBSM (Ishkhanov et al., "Time-based Sequence Model for Personalization and
Recommendation Systems") runs DLRM's embeddings over a user's past events and
pools them with attention against the event being scored. Here one multi-hot
table holds each sample's *history* (item ids, oldest first, as the data
keeps them) and another holds the *target* item; every other table is pooled
as in DLRM (``model.pooling``)::

    h_j     = rows of the history bag, j = 0 the most recent    (B, M, D), mask (B, M)
    q       = W_q e_target                                      (B, D)
    k_j     = h_j + p_j   (p: a learned vector per recency, j >= history_len share the last)
    a       = softmax_j(<q, k_j> / sqrt(D))  over the bag's items only
    context = sum_j a_j h_j                                     (B, D)   (0 for an empty history)
    logits  = DLRM(dense, [pooled tables, with the history replaced by context])

The keys carry a recency vector so the order of the list matters (a plain
sum or the attention without ``p`` would see a set). The values are the raw
item rows, so each history item's row gets the gradient of its attention
weight times the context's gradient plus its share through the scores.

Like every :data:`~hotpipe.model.base.RecModel` it takes looked-up rows (one
per id, ``model/bags.py``), never ids: the tiers sit under the lookup.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hotpipe.model.bags import JaggedRows, pool
from hotpipe.model.dlrm import DLRM

__all__ = ["TBSM", "history_padded"]

_MASKED = -1e9  # finite, so a row with no items gives zeros, not NaN, and no NaN gradients


def history_padded(rows: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One table's bags, most recent first, padded: rows (L, D), offsets (B + 1,) ->
    (padded (B, M, D), mask (B, M) bool, recency (B, M) int64), M the longest bag."""
    lengths = offsets[1:] - offsets[:-1]  # (B,)
    b = lengths.shape[0]
    m = int(lengths.max()) if b else 0
    bag = torch.repeat_interleave(torch.arange(b, device=rows.device), lengths)  # (L,)
    # Item i of a bag of n (in data order, oldest first) has recency n - 1 - i.
    recency_of = lengths.index_select(0, bag) - 1 - (torch.arange(rows.shape[0], device=rows.device)
                                                     - offsets[:-1].index_select(0, bag))
    place = bag * m + recency_of  # (L,)
    padded = rows.new_zeros(b * m, rows.shape[1]).index_copy(0, place, rows).view(b, m, -1)
    recency = torch.arange(m, device=rows.device).expand(b, m)
    return padded, recency < lengths.unsqueeze(1), recency


class TBSM(nn.Module):
    """History attention + DLRM (see the module docstring).

    Args:
        num_dense, num_tables, embedding_dim, bottom, top: as for :class:`DLRM`.
        history_table: the multi-hot table holding each sample's behaviour list.
        target_table: the table of the item being scored (its bag is pooled).
        history_len: recency vectors learned; older items share the last one.
        pooling: how the other tables' bags are pooled (``sum`` or ``mean``).

    Example:
        >>> m = TBSM(num_dense=2, num_tables=3, embedding_dim=8, bottom=[8], top=[8, 1],
        ...          history_table=0, target_table=1, history_len=4)
        >>> m(torch.zeros(5, 2), torch.zeros(5, 3, 8)).shape
        torch.Size([5])
    """

    def __init__(self, *, num_dense: int, num_tables: int, embedding_dim: int, bottom: list[int],
                 top: list[int], history_table: int, target_table: int, history_len: int,
                 pooling: str = "sum") -> None:
        super().__init__()
        if not (0 <= history_table < num_tables and 0 <= target_table < num_tables):
            raise ValueError(f"history_table={history_table} and target_table={target_table} must "
                             f"be tables 0..{num_tables - 1}")
        if history_table == target_table:
            raise ValueError(f"history_table and target_table must differ, both are {history_table}")
        self.history, self.target, self.pooling = history_table, target_table, pooling
        self.query = nn.Linear(embedding_dim, embedding_dim, bias=False)
        # Small init: recency starts as a gentle bias on top of content matching.
        self.recency = nn.Parameter(torch.randn(history_len, embedding_dim) * 0.01)  # (P, D)
        self.dlrm = DLRM(num_dense=num_dense, num_tables=num_tables, embedding_dim=embedding_dim,
                         bottom=bottom, top=top)

    def attend(self, rows: torch.Tensor, offsets: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """History rows (L, D) in bags offsets (B + 1,), target (B, D) -> context (B, D)."""
        h, mask, _ = history_padded(rows, offsets)  # (B, M, D), (B, M)
        m = h.shape[1]
        if m == 0:  # every history of the batch is empty
            return target.new_zeros(target.shape)
        # Column j of the padding is recency j in every row: one (M, D) table, broadcast.
        pos = torch.arange(m, device=h.device).clamp(max=self.recency.shape[0] - 1)
        keys = h + self.recency.index_select(0, pos)  # (B, M, D)
        q = self.query(target)  # (B, D)
        # Multiply-and-sum, not einsum: einsum becomes B tiny bmm calls (3x slower here).
        scores = (keys * q.unsqueeze(1)).sum(2) / math.sqrt(q.shape[1])  # (B, M)
        weights = torch.softmax(scores.masked_fill(~mask, _MASKED), dim=1) * mask  # (B, M)
        return (weights.unsqueeze(2) * h).sum(1)  # (B, D)

    def forward(self, dense: torch.Tensor, emb: torch.Tensor | JaggedRows) -> torch.Tensor:
        """dense (B, num_dense), emb multi-hot rows (or (B, T, D): histories of one item) -> (B,)."""
        if isinstance(emb, torch.Tensor):  # one-hot data: every bag holds one id
            b, t, _ = emb.shape
            emb = JaggedRows(emb.transpose(0, 1).reshape(t * b, -1), torch.arange(t * b + 1), t)
        pooled = pool(emb, self.pooling)  # (B, T, D)
        rows, offsets = emb.table(self.history)
        context = self.attend(rows, offsets, pooled[:, self.target])  # (B, D)
        h = self.history
        feats = torch.cat([pooled[:, :h], context.unsqueeze(1), pooled[:, h + 1:]], dim=1)  # (B, T, D)
        return self.dlrm(dense, feats)
