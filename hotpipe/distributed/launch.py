"""The torchrun entry point: join the group the environment describes, train, leave.

``torchrun --nproc-per-node W -m hotpipe train --data D --out RUN ...`` runs
the CLI on every rank; when ``WORLD_SIZE`` > 1 the CLI calls
:func:`train_from_env` instead of ``hotpipe.train.run.train``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from hotpipe.config import RunConfig
from hotpipe.distributed.context import DEFAULT_TIMEOUT_S, init_from_env
from hotpipe.distributed.run import train_distributed


def world_size_from_env() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when not launched by torchrun)."""
    raw = os.environ.get("WORLD_SIZE", "1")
    return int(raw) if raw.strip().isdigit() else 1


def train_from_env(cfg: RunConfig, run_dir: str | os.PathLike[str], *,
                   timeout: float = DEFAULT_TIMEOUT_S, resume: bool = False,
                   overwrite: bool = False,
                   replicate: int | np.ndarray | None = None,
                   profile_steps: int | None = None) -> dict[str, Any]:
    """Train on the ranks torchrun started; every rank calls this and gets the metrics.

    Args:
        cfg: the run configuration (checked equal on every rank).
        run_dir: the run directory (rank 0 writes it).
        timeout: seconds any collective waits for a peer before every rank
            fails with :class:`~hotpipe.distributed.context.PeerFailedError`.
        resume: continue from ``run_dir``'s latest checkpoint (any world size).
        overwrite: replace a run already in ``run_dir``.
        replicate, profile_steps: hot rows on every rank (see
            :func:`~hotpipe.distributed.run.build_dist_components`; None:
            ``dist.replicate`` and ``dist.profile_steps``).

    Raises:
        ConfigError: bad torchrun variables, B % W != 0, a ``dist.replicate``
            beyond all rows, ranks with different configs or data.
        ResourceError: a ``dist.replicate`` budget beyond the machine's memory.
        PeerFailedError: another rank failed or never arrived.
    """
    ctx = init_from_env(timeout=timeout)
    metrics = train_distributed(cfg, run_dir, ctx, resume=resume, overwrite=overwrite,
                                replicate=replicate, profile_steps=profile_steps)
    # Only after success: tearing down a group whose peer died can block; the
    # process is about to exit with the error anyway.
    ctx.close()
    return metrics
