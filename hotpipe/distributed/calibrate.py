"""One rank's compute, measured on the distributed runtime itself (for ``hotpipe calibrate --rank-compute``).

The ranks cost model (``placement/ranks.py``) takes a rank's CPU time from
``Hardware.rank_compute`` when it is there, else from one process's training
step. The runtime's step at W = 1 is the better measure (it routes, sends to
itself through gloo, applies updates as an owner), and it is what the
validation used to meet its goal; ``placement/`` may not import the runtime,
so this measurement lives here and the CLI merges it into the hardware file.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hotpipe.config import RunConfig
from hotpipe.data.columnar import ColumnarDataset
from hotpipe.distributed.context import DistContext
from hotpipe.distributed.run import train_distributed
from hotpipe.distributed.spawn import run_ranks
from hotpipe.errors import ConfigError
from hotpipe.placement.costmodel import model_key
from hotpipe.placement.fit import nonneg_lstsq
from hotpipe.placement.hardware import ComputeFit


def _one_rank(ctx: DistContext, cfg: RunConfig, out: str) -> dict[str, Any]:
    return train_distributed(cfg, out, ctx, overwrite=True, replicate=0)


def measure_rank_compute(cfg: RunConfig, data: str | Path, batches: Sequence[int], *,
                         workdir: str | Path | None = None, timeout: float = 600.0,
                         log: Callable[[str], None] = lambda s: None) -> ComputeFit:
    """Fit seconds per step = a + b * batch of the runtime at W = 1 (one spawned rank,
    ``cfg``'s threads and model) training ``data`` at each of ``batches``.

    Raises:
        ConfigError: fewer than two distinct batch sizes (a line needs two points).
        RuntimeError: the rank failed (its error is in the message).
    """
    sizes = sorted(set(int(b) for b in batches))
    if len(sizes) < 2 or sizes[0] < 1:
        raise ConfigError("batches", f"expected two or more distinct positive batch sizes, found {list(batches)}")
    xs, ys = [], []
    tmp = Path(tempfile.mkdtemp(prefix="hotpipe-rank-compute-", dir=workdir))
    try:
        for b in sizes:
            run = cfg.model_copy(update={
                "data": cfg.data.model_copy(update={"path": str(data), "batch_size": b}),
                "train": cfg.train.model_copy(update={"progress": False, "checkpoint_every": 0}),
                "cache": cfg.cache.model_copy(update={"policy": "none"}),
            })
            res = run_ranks(_one_rank, 1, args=(run, str(tmp / f"b{b}")), timeout=timeout)
            if res[0].exitcode != 0:
                raise RuntimeError(f"the calibration rank failed: {res[0].error}")
            m = json.loads((tmp / f"b{b}" / "metrics.json").read_text())
            log(f"one rank on the runtime, b={b}: {m['samples_per_s']:,.0f} samples/s")
            xs.append([1.0, b])
            ys.append(b / m["samples_per_s"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    c = nonneg_lstsq(np.array(xs), np.array(ys))
    tables = ColumnarDataset.open(str(data)).num_tables
    return ComputeFit(per_step_s=float(c[0]), per_sample_s=float(c[1]), model=model_key(cfg, tables))
