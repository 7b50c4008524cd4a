"""Time a run of the tiered pipeline from per-step work, without running it.

The tiered feed (``hotpipe/train/tiered_feed.py``) runs two workers::

    mover:    plan(s) -> wait until step s-depth-1 is done -> apply(s) + read batch(s)
    compute:  wait until the mover has finished step s -> compute(s)

This module replays exactly those dependencies with given work per phase
(seconds each would take running alone). When both workers are busy at once
they share the machine: compute progresses at ``overlap.compute_rate`` and
the mover at ``overlap.mover_rate`` of their solo speeds (both 1.0 = perfect
overlap; on a 2-core CPU they slow each other). The replay is a fluid
simulation: between events the rates are constant, so it advances straight
to the next phase end — a few events per step, exact for the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hotpipe.placement.hardware import Overlap


@dataclass(frozen=True)
class PipelineTime:
    """Result of a replay.

    Attributes:
        total_s: wall time from the first plan to the last step's end.
        stall_s: time compute spent waiting for the mover.
        compute_s, mover_s: solo work of each worker (sums of the inputs).
    """

    total_s: float
    stall_s: float
    compute_s: float
    mover_s: float


def replay_pipeline(plan_s: np.ndarray, move_s: np.ndarray, compute_s: np.ndarray, *, depth: int,
                    overlap: Overlap) -> PipelineTime:
    """Replay the pipeline.

    Args:
        plan_s: (S,) planning work of each step (mover, no dependency).
        move_s: (S,) applying step s's plan and reading its batch (mover;
            starts once step ``s - depth - 1`` has finished computing).
        compute_s: (S,) compute of each step (starts once the mover finished s).
        depth: prefetch depth ``d >= 0``.
        overlap: relative speeds while both workers are busy.
    """
    n = int(compute_s.shape[0])
    phases = np.empty(2 * n)  # mover work in order: plan 0, move 0, plan 1, move 1, ...
    phases[0::2], phases[1::2] = plan_s, move_s
    t = stall = 0.0
    m, m_rem = 0, float(phases[0]) if n else 0.0  # current mover phase, its remaining work
    moved = done = 0  # steps the mover has finished; steps compute has finished
    c_rem = float(compute_s[0]) if n else 0.0
    while done < n:
        # A move phase of step s waits for step s-depth-1: `done` counts finished steps.
        m_busy = m < 2 * n and (m % 2 == 0 or done >= m // 2 - depth)
        c_busy = done < moved
        if not (m_busy or c_busy):
            raise RuntimeError(f"pipeline replay deadlocked at step {done} (depth {depth})")
        both = m_busy and c_busy
        rm = overlap.mover_rate if both else 1.0
        rc = overlap.compute_rate if both else 1.0
        dt_m = m_rem / rm if m_busy else np.inf
        dt_c = c_rem / rc if c_busy else np.inf
        dt = min(dt_m, dt_c)
        t += dt
        if not c_busy:
            stall += dt
        if m_busy:
            m_rem -= rm * dt
            if dt_m <= dt:
                m += 1
                if m % 2 == 0:
                    moved += 1
                m_rem = float(phases[m]) if m < 2 * n else 0.0
        if c_busy:
            c_rem -= rc * dt
            if dt_c <= dt:
                done += 1
                c_rem = float(compute_s[done]) if done < n else 0.0
    return PipelineTime(t, stall, float(np.sum(compute_s)), float(np.sum(plan_s) + np.sum(move_s)))
