"""The batch type every stage after ``data/`` consumes.

A batch of ``B`` samples over ``T`` embedding tables::

    dense   (B, 13) float32   log(1 + max(x, 0)) of the integer features
    sparse  one of
      - one-hot:   (B, T) int64, sparse[b, t] = row of table t for sample b
      - multi-hot: JaggedIds, table-major like TorchRec's KeyedJaggedTensor:

            values   [ t0:b0 ids | t0:b1 ids | ... | t1:b0 ids | ... ]   (L,)
            offsets  [0, o1, o2, ..., L]                                  (T*B + 1,)

        the ids of table t, sample b are values[offsets[t*B+b] : offsets[t*B+b+1]]
        in the order the data holds them (a behaviour list stays in time
        order). A one-hot table of a multi-hot dataset is a bag of one id
        per sample; a bag may be empty (it pools to a zero vector). How a bag
        is pooled (``model.pooling=sum|mean``, or attention in ``arch=tbsm``)
        is the model's business (``model/bags.py``).
    labels  (B,) float32 in {0, 1}

Ids are *local* to their table (0 <= id < cardinality[t]); the feeds turn
them into global rows with the dataset's :class:`~hotpipe.data.layout.TableLayout`
(the model only ever sees slots).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class JaggedIds:
    """Multi-hot ids, table-major (see module docstring)."""

    values: torch.Tensor  # (L,) int64
    offsets: torch.Tensor  # (T*B + 1,) int64
    num_tables: int

    @property
    def batch_size(self) -> int:
        return (self.offsets.numel() - 1) // self.num_tables

    def lengths(self) -> torch.Tensor:
        """(T*B,) int64 ids per bag, table-major."""
        return self.offsets[1:] - self.offsets[:-1]

    def table_of_values(self) -> torch.Tensor:
        """(L,) int64 the table of each value."""
        b = self.batch_size
        per_table = self.offsets[b::b] - self.offsets[:-1:b]  # (T,) values per table
        return torch.repeat_interleave(torch.arange(self.num_tables), per_table)

    def global_rows(self, table_offsets: torch.Tensor) -> torch.Tensor:
        """(L,) int64 global row of each value: local id + its table's first row."""
        return self.values + table_offsets.index_select(0, self.table_of_values())


@dataclass(frozen=True)
class Batch:
    """One training batch. See the module docstring for the layout."""

    dense: torch.Tensor  # (B, D_dense) float32
    sparse: torch.Tensor | JaggedIds  # (B, T) int64 one-hot, or multi-hot
    labels: torch.Tensor  # (B,) float32

    @property
    def size(self) -> int:
        return int(self.labels.shape[0])
