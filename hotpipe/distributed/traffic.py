"""Embedding traffic of a trace, counted without running it: what the runtime will move.

Because every rank reads the same global batches, the rows exchanged are a
function of the trace, the world size and the replicated set alone. This
module counts them, so a prediction (``hotpipe plan --ranks``, benchmarks)
and the runtime's counters (``exchange.ExchangeStats``) can be compared
exactly, and sets them beside the plain row-wise baseline.

Counted per step, rank s of W, b = B / W samples, D floats a row::

    rowwise     lookups in s's b samples of rows another rank owns: one pooled
                vector each way per lookup (what a TorchRec row-wise plan sends
                for one-hot features), 2 * lookups * D * 4 bytes
    hotpipe     distinct non-replicated ids of s's samples another rank owns:
                the row once forward, its coalesced gradient once back
    replicas    payload of the replica all-reduce: the distinct replicated rows
                any rank touched (every rank hands that many rows to all_reduce);
                a ring all-reduce puts 2 (W-1)/W of each rank's payload on the wire

Measured consequence (dist_BENCHMARKS.md): replicating a row saves its
forward fetch (no stall for it) but not bytes, because the all-reduce of
its gradient moves about as much as fetching it and returning the gradient
would. The byte savings against the baseline come from deduplication.

Ids are not counted: the baseline would send them, hotpipe does not (foresight).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from hotpipe.errors import ConfigError
from hotpipe.storage.slots import FLOAT_BYTES


@dataclass
class Traffic:
    """Totals over a trace (all ranks, both directions)."""

    world_size: int = 1
    steps: int = 0
    samples: int = 0
    rowwise_rows: int = 0  # per-lookup vectors, one direction
    hotpipe_rows: int = 0  # distinct remote rows, one direction (= runtime rows_received forward)
    replica_rows: int = 0  # rows handed to the replica all-reduce, per rank, summed over steps

    def bytes(self, dim: int) -> dict[str, float]:
        """Bytes both ways, per sample, and the hotpipe / rowwise ratio."""
        row = dim * FLOAT_BYTES
        rowwise = 2 * self.rowwise_rows * row
        hotpipe = 2 * self.hotpipe_rows * row
        w = self.world_size
        wire = self.replica_rows * row * 2 * (w - 1) / w  # ring all-reduce, all ranks
        n = max(self.samples, 1)
        return {"rowwise_bytes": rowwise, "hotpipe_bytes": hotpipe,
                "replica_allreduce_bytes": self.replica_rows * row,
                "replica_wire_bytes": wire,
                "rowwise_per_sample": rowwise / n, "hotpipe_per_sample": hotpipe / n,
                "hotpipe_total_per_sample": (hotpipe + wire) / n,
                "ratio": hotpipe / rowwise if rowwise else float("nan"),
                "ratio_total": (hotpipe + wire) / rowwise if rowwise else float("nan")}

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def count_traffic(steps: Iterable[np.ndarray], *, world_size: int,
                  replicated: np.ndarray | None = None) -> Traffic:
    """Count the traffic of global batches ``steps`` ((B, T) int64 global ids each).

    Raises:
        ConfigError: a batch size that is not a multiple of the world size.

    Example:
        >>> # rank 0 looks up row 1 twice (owned by 1), rank 1 rows 0 and 2 (owned by 0)
        >>> t = count_traffic([np.array([[1], [1], [0], [2]])], world_size=2)
        >>> t.rowwise_rows, t.hotpipe_rows
        (4, 3)
    """
    w = world_size
    hot = np.asarray(replicated if replicated is not None else [], dtype=np.int64)
    t = Traffic(world_size=w)
    for ids in steps:
        big_b = len(ids)
        if big_b % w:
            raise ConfigError("data.batch_size", f"expected a multiple of {w}, found {big_b}")
        b = big_b // w
        touched = []
        for s in range(w):
            mine = np.asarray(ids[s * b:(s + 1) * b]).ravel()
            is_hot = np.isin(mine, hot)
            t.rowwise_rows += int(((mine % w) != s).sum())
            u = np.unique(mine[~is_hot])
            t.hotpipe_rows += int(((u % w) != s).sum())
            touched.append(mine[is_hot])
        if len(hot):
            t.replica_rows += w * len(np.unique(np.concatenate(touched)))
        t.steps += 1
        t.samples += big_b
    return t
