"""Deterministic embedding initialisation, independent of where rows live.

Rows are drawn chunk by chunk from generators seeded by (seed, table,
chunk), so a table filled into a tensor, a memory map or a cache-backed
file gets the same bits — a precondition for tiered == untiered.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

CHUNK_ROWS = 1 << 18  # fixed: changing it changes every initial weight


def init_rows(cardinalities: list[int], dim: int, seed: int,
              write: Callable[[int, torch.Tensor], None]) -> None:
    """Call ``write(global_row_start, rows (n, D))`` for every chunk of every table.

    Rows are uniform in ±1/sqrt(cardinality), DLRM's reference scheme.
    """
    start = 0
    for t, card in enumerate(cardinalities):
        bound = card ** -0.5
        for c0 in range(0, card, CHUNK_ROWS):
            n = min(CHUNK_ROWS, card - c0)
            # An explicit mix, not hash(): stable across Python versions.
            key = (seed * 1_000_003 + t) * 1_000_033 + c0 // CHUNK_ROWS
            g = torch.Generator().manual_seed(key & 0x7FFF_FFFF_FFFF_FFFF)
            rows = torch.empty(n, dim).uniform_(-bound, bound, generator=g)
            write(start + c0, rows)
        start += card
