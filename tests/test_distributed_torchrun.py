"""The torchrun path, as users run it: ``torchrun --standalone --nproc-per-node 2 -m
hotpipe train ...`` trains on two ranks and matches a single-process ``train``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hotpipe.config import load_config
from hotpipe.train.run import train
from tests.conftest import make_dataset

OVERRIDES = ["data.batch_size=32", "data.val_fraction=0.2", "model.embedding_dim=8",
             "model.bottom=[16,8]", "model.top=[16,1]", "optim.embedding=sgd",
             "train.max_steps=5", "train.progress=false"]

@pytest.mark.slow
def test_torchrun_two_ranks(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", rows=400)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "hotpipe", "train", "--data", str(data), "--out", str(tmp_path / "dist"),
         "--no-report", *OVERRIDES, "dist.replicate=4", "dist.timeout=180"],
        env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)  # rank 0 alone prints the summary
    assert summary["world_size"] == 2 and summary["bytes_per_sample"] > 0

    cfg = load_config(None, OVERRIDES, values={"data.path": str(data)})
    single = train(cfg, tmp_path / "single")
    metrics = json.loads((tmp_path / "dist" / "metrics.json").read_text())
    np.testing.assert_allclose(json.loads((tmp_path / "dist" / "losses.json").read_text()),
                               json.loads((tmp_path / "single" / "losses.json").read_text()),
                               rtol=1e-5, atol=1e-6)
    assert metrics["val_auc"] == pytest.approx(single["val_auc"], rel=1e-5)
    assert metrics["dist"]["replicated_rows"] == 4
