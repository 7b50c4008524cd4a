"""Multi-hot lookups: what a model gets when a batch's features are bags of ids.

The feeds look up one row per *id* (so the tiers, the planner and the
row-wise update need nothing new: a step is just more lookups), and the
model pools them. For a multi-hot batch of ``B`` samples over ``T`` tables
(``data/batch.py``'s table-major :class:`~hotpipe.data.batch.JaggedIds`)::

    emb      (1, L, D)  one looked-up row per id, a leaf that collects the gradient
    rows     (L, D)     the same rows, in the batch's value order
    offsets  (T*B + 1,) bag (t, b) is rows[offsets[t*B+b] : offsets[t*B+b+1]]

:func:`model_input` wraps the two in a :class:`JaggedRows`. DLRM, DCN-v2 and
Ad-Rec pool it to the usual (B, T, D) with :func:`pool` (``model.pooling``);
the sequence model (``model/tbsm.py``) attends over one table's rows instead.
Autograd carries each bag's gradient back to its ids (sum: the bag's
gradient; mean: divided by the bag's length), and the loop's row-wise update
``apply_gradients(slots, emb.grad)`` coalesces duplicate ids as for one-hot
lookups, so tiered and untiered runs stay bit-identical.

Empty bags pool to a zero vector under both sum and mean (``nn.EmbeddingBag``'s
rule), so a sample with an empty history is still a valid input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hotpipe.data.batch import JaggedIds

POOLINGS = ("sum", "mean")


@dataclass(frozen=True)
class JaggedRows:
    """Looked-up rows of a multi-hot batch, one per id (see the module docstring)."""

    rows: torch.Tensor  # (L, D), part of the autograd graph
    offsets: torch.Tensor  # (T*B + 1,) int64
    num_tables: int

    @property
    def batch_size(self) -> int:
        return (self.offsets.numel() - 1) // self.num_tables

    def lengths(self) -> torch.Tensor:
        """(T*B,) int64 ids per bag."""
        return self.offsets[1:] - self.offsets[:-1]

    def table(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Table ``t``'s rows (L_t, D) and its bags' offsets (B + 1,), starting at 0."""
        b = self.batch_size
        off = self.offsets[t * b:(t + 1) * b + 1]
        return self.rows[int(off[0]):int(off[-1])], off - off[0]


def model_input(emb: torch.Tensor, sparse: torch.Tensor | JaggedIds) -> torch.Tensor | JaggedRows:
    """What a model's ``forward(dense, emb)`` takes for a batch looked up into ``emb``.

    One-hot (``sparse`` (B, T)): ``emb`` (B, T, D) as it is. Multi-hot:
    ``emb`` (1, L, D), one row per id, wrapped with the bags' offsets.
    """
    if isinstance(sparse, torch.Tensor):
        return emb
    return JaggedRows(emb.reshape(-1, emb.shape[-1]), sparse.offsets, sparse.num_tables)


def pool_bags(rows: torch.Tensor, offsets: torch.Tensor, mode: str) -> torch.Tensor:
    """rows (L, D), offsets (N + 1,) -> (N, D): each bag summed or averaged; empty bags -> 0."""
    lengths = offsets[1:] - offsets[:-1]  # (N,)
    n = lengths.shape[0]
    bag = torch.repeat_interleave(torch.arange(n, device=rows.device), lengths)  # (L,)
    out = torch.zeros(n, rows.shape[1], dtype=rows.dtype, device=rows.device).index_add(0, bag, rows)
    if mode == "mean":
        out = out / lengths.clamp(min=1).to(rows.dtype).unsqueeze(1)
    elif mode != "sum":
        raise ValueError(f"pooling must be one of {POOLINGS}, found {mode!r}")
    return out


def pool(emb: torch.Tensor | JaggedRows, mode: str = "sum") -> torch.Tensor:
    """(B, T, D) one-hot rows as they are; multi-hot rows pooled per bag to (B, T, D)."""
    if isinstance(emb, torch.Tensor):
        return emb
    b, t = emb.batch_size, emb.num_tables
    return pool_bags(emb.rows, emb.offsets, mode).view(t, b, -1).transpose(0, 1)  # (B, T, D)
