"""Where each table's rows sit in the fused row space: the one owner of table offsets.

All tables of a model share one id space so that the planner, the tiers and
the embedding see a single row index::

    table:     C1          C2       C3 ...
    rows:  [0 ........ c1)[c1 .. c1+c2)[ ...
    offsets = (0, c1, c1+c2, ...)          (T,)   first global row of each table
    bounds  = (0, c1, c1+c2, ..., R)       (T+1,) offsets plus the end

Everything that turns local ids into global ids, or global ids back into a
table, asks a :class:`TableLayout` instead of computing a cumsum of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TableLayout:
    """Table names and cardinalities, and the fused row space they make.

    Args:
        cardinalities: rows per table.
        names: one per table (``C1``..; defaults to ``T0``..).

    Example:
        >>> lay = TableLayout([3, 5], ["a", "b"])
        >>> lay.offsets.tolist(), lay.num_rows, lay.table_of(np.array([0, 3, 7])).tolist()
        ([0, 3], 8, [0, 1, 1])
    """

    cardinalities: tuple[int, ...]
    names: tuple[str, ...] = ()
    bounds: np.ndarray = field(init=False, repr=False, compare=False)  # (T+1,) int64

    def __init__(self, cardinalities: Sequence[int], names: Sequence[str] | None = None) -> None:
        cards = tuple(int(c) for c in cardinalities)
        object.__setattr__(self, "cardinalities", cards)
        object.__setattr__(self, "names", tuple(names) if names else
                           tuple(f"T{t}" for t in range(len(cards))))
        object.__setattr__(self, "bounds", np.cumsum([0, *cards], dtype=np.int64))
        if len(self.names) != len(cards):
            raise ValueError(f"{len(self.names)} names for {len(cards)} tables")

    @classmethod
    def of(cls, dataset: object) -> TableLayout:
        """The layout of an opened dataset (anything with ``tables`` of name/cardinality)."""
        tables = dataset.tables  # type: ignore[attr-defined]
        return cls([t.cardinality for t in tables], [t.name for t in tables])

    @property
    def num_tables(self) -> int:
        return len(self.cardinalities)

    @property
    def num_rows(self) -> int:
        return int(self.bounds[-1])

    @property
    def offsets(self) -> np.ndarray:
        """(T,) int64 first global row of each table."""
        return self.bounds[:-1]

    def globalize(self, local: np.ndarray) -> np.ndarray:
        """(B, T) local ids -> (B, T) int64 global ids."""
        return np.asarray(local, dtype=np.int64) + self.offsets

    def table_of(self, global_ids: np.ndarray) -> np.ndarray:
        """(N,) global ids -> (N,) table index of each."""
        return np.searchsorted(self.bounds, global_ids, side="right") - 1
