"""Find the straggler from reported training times and size its sub-model.

``r`` comes from the ratio of the next-slowest client's time to the
straggler's (FLuID's table): the straggler should then finish about when the
next-slowest does. A client that trained a sub-model reports a shorter time;
its full-model time is estimated as ``t / work_fraction``, where
``work_fraction`` is the sub-model's share of the full model's work, and ``r``
is re-picked only when the slowest client changes.

Why not the reference's ``t / r``: a sub-model of size r keeps r of each
layer's neurons, so hidden-to-hidden work shrinks by about r², not r. With
``t / r`` a straggler at r = 0.5 looks faster than the next-slowest client,
is swapped out, trains the full model again and is swapped back: measured
here, Shakespeare's round time rose from the next-slowest's 125 to 159 units.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# (lowest ratio next-slowest/straggler, r): first row that fits wins; else 0.5
R_TABLE: tuple[tuple[float, float], ...] = ((0.9, 0.95), (0.8, 0.85), (0.7, 0.75), (0.6, 0.65))
R_FLOOR = 0.5


def r_for_ratio(ratio: float) -> float:
    """Sub-model size for ``ratio = t_next_slowest / t_straggler`` (in (0, 1])."""
    for lo, r in R_TABLE:
        if ratio >= lo:
            return r
    return R_FLOOR


@dataclass
class StragglerProfiler:
    """Tracks the straggler across rounds.

    Attributes:
        straggler: client id of the current straggler (``None`` before the first report).
        r: its sub-model size (1.0 until a straggler is known).
    """

    straggler: int | None = None
    r: float = 1.0

    def update(self, times: Mapping[int, float], work_fraction: Mapping[int, float]) -> bool:
        """Take one round's training times; return True when the straggler changed.

        Args:
            times: client id -> reported training time of this round.
            work_fraction: client id -> its sub-model's work / the full model's
                (absent = 1.0, the full model).
        """
        if len(times) < 2:
            return False  # one client cannot be slower than the rest
        full = {c: t / work_fraction.get(c, 1.0) for c, t in times.items()}
        order = sorted(full, key=lambda c: (full[c], c))
        slowest, next_slowest = order[-1], order[-2]
        if slowest == self.straggler:
            return False
        self.straggler = slowest
        self.r = r_for_ratio(full[next_slowest] / full[slowest]) if full[slowest] > 0 else 1.0
        return True
