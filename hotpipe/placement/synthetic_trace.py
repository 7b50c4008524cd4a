"""Sampled traces of tables too big to prepare here: predictions for clusters we cannot run.

The exchange of one global step depends only on that step's ids (the
runtime keeps no rows between steps), so a few sampled steps of the right
global batch give the per-step rows, bytes and time of a whole epoch: the
prediction is per step, times the number of steps. Ids come from the
synthetic generator's own parts (``data/synth.py``: a bounded Zipf rank per
table, scattered by a seeded Feistel permutation, the same key per table),
so a trace of Criteo Terabyte's 188M rows costs the memory of its steps only.
Samples are independent here (no drift, no time order), which a real log
is not: real traces repeat ids within a day more, so this errs towards
more distinct rows per step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hotpipe.data.synth import KAGGLE_CARDINALITIES, FeistelPermutation, ZipfSampler
from hotpipe.errors import ConfigError

#: Criteo Terabyte (24 days, ~4.4 billion samples) per-field rows after
#: MLPerf DLRM's hashing to at most 40M rows per field (its published
#: ``day_fea_count``); 187,767,399 rows in all.
TERABYTE_CARDINALITIES = (
    39884406, 39043, 17289, 7420, 20263, 3, 7120, 1543, 63, 38532951, 2953546, 403346, 10, 2208,
    11938, 155, 4, 976, 14, 39979771, 25641295, 39664984, 585935, 12972, 108, 36,
)

TABLE_SETS = {"terabyte": TERABYTE_CARDINALITIES, "kaggle": KAGGLE_CARDINALITIES}


def table_set(name: str) -> tuple[int, ...]:
    """Cardinalities by name (``terabyte``, ``kaggle``)."""
    if name not in TABLE_SETS:
        raise ConfigError("--tables", f"expected one of {sorted(TABLE_SETS)}, found {name!r}")
    return TABLE_SETS[name]


def synthetic_steps(cardinalities: Sequence[int], *, batch_size: int, steps: int, zipf: float = 1.05,
                    seed: int = 0) -> list[np.ndarray]:
    """``steps`` global batches of ``batch_size`` samples: (B, T) int64 fused global ids each.

    Example:
        >>> s = synthetic_steps([1000, 10], batch_size=4, steps=2)
        >>> len(s), s[0].shape, bool((s[0][:, 1] >= 1000).all())
        (2, (4, 2), True)
    """
    if batch_size < 1 or steps < 1:
        raise ConfigError("--steps", f"expected >= 1 steps of >= 1 samples, found {steps} x {batch_size}")
    cards = [int(c) for c in cardinalities]
    offsets = np.concatenate([[0], np.cumsum(cards)[:-1]]).astype(np.int64)
    samplers = [ZipfSampler(c, zipf) for c in cards]
    perms = [FeistelPermutation(c, seed * 131 + t) for t, c in enumerate(cards)]  # as synth's
    rng = np.random.default_rng([seed, 9])
    out = []
    for _ in range(steps):
        u = rng.random((batch_size, len(cards)))  # (B, T)
        ids = np.stack([perms[t](samplers[t].sample(u[:, t])).astype(np.int64) for t in range(len(cards))],
                       axis=1)
        out.append(ids + offsets)
    return out
