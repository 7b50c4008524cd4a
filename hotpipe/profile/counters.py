"""Per-table access counters: exact (``np.bincount``) or sketched.

Both kinds answer the questions the profile asks of one table — total
lookups counted, the ``k`` most frequent rows and their counts, and whether
that top ``k`` is known for sure — so the profiler does not care which it has.
:func:`make_counter` picks exact counting whenever it is no bigger than the
sketch would be: a sketch only pays for tables with more rows than counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hotpipe.profile.sketch import CountMinSketch, MisraGries, _top


@dataclass(frozen=True)
class SketchSettings:
    """Sizes of the sketched counters (per table).

    Attributes:
        width_log2: count-min counters per row, as a power of two. 2**20
            keeps epsilon = 2e/width ~ 5e-6 (of the table's lookups).
        depth: count-min rows; delta = exp(-4) ~ 2% per query.
        heavy: Misra-Gries candidates kept: the most rows whose identity
            (hot or not) the profile can name per table.
    """

    width_log2: int = 20
    depth: int = 4
    heavy: int = 1 << 16

    @property
    def cells(self) -> int:
        return self.depth << self.width_log2


class TableCounter(Protocol):
    total: int

    def update(self, ids: np.ndarray) -> None: ...

    def top(self, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def known(self) -> int: ...


class ExactCounter:
    """Exact counts of one table's local ids ``0 .. cardinality-1``.

    Attributes:
        counts: (cardinality,) int64.
    """

    def __init__(self, cardinality: int) -> None:
        self.counts = np.zeros(cardinality, dtype=np.int64)
        self.total = 0

    def update(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids).ravel()
        self.counts += np.bincount(ids, minlength=self.counts.shape[0])
        self.total += int(ids.shape[0])

    def top(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most counted ids (zeros included), descending: ((m,), (m,)) int64."""
        return _top(np.arange(self.counts.shape[0], dtype=np.int64), self.counts, k)

    def known(self) -> int:
        """How many of the top rows are certainly the true top (all, when exact)."""
        return int(self.counts.shape[0])


class SketchCounter:
    """Count-min + Misra-Gries counts of one table, in bounded memory.

    ``top(k)`` ranks the Misra-Gries candidates by their count-min estimate
    (an upper bound that is tight for frequent ids).
    """

    def __init__(self, settings: SketchSettings, seed: int = 0) -> None:
        self.cms = CountMinSketch(width_log2=settings.width_log2, depth=settings.depth, seed=seed)
        self.heavy = MisraGries(settings.heavy)
        self.total = 0

    def update(self, ids: np.ndarray) -> None:
        # One np.unique shared by both structures.
        uniq, counts = np.unique(np.asarray(ids, dtype=np.int64).ravel(), return_counts=True)
        self.cms.update(uniq, counts)
        self.heavy.update(uniq, counts)
        self.total += int(counts.sum())

    def top(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        return _top(self.heavy.ids, self.cms.estimate(self.heavy.ids), k)

    def known(self) -> int:
        """How many of the top rows are certainly the true top.

        The candidates whose lower-bound count exceeds the summary's error:
        if ``k`` of them do, the true k-th largest count exceeds the error
        too, and every id that frequent is a candidate.
        """
        return int(np.count_nonzero(self.heavy.counts > self.heavy.max_error))


def make_counter(cardinality: int, *, exact: bool, settings: SketchSettings,
                 seed: int = 0) -> ExactCounter | SketchCounter:
    """Exact when asked or when ``cardinality`` counters cost no more than the sketch."""
    if exact or cardinality <= settings.cells:
        return ExactCounter(cardinality)
    return SketchCounter(settings, seed)
