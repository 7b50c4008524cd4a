"""The torchrun path: ``torchrun --standalone --nproc-per-node 2`` runs ``train_from_env``
on two ranks and matches a single-process ``train`` of the same config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hotpipe.config import load_config
from hotpipe.train.run import train
from tests.conftest import make_dataset

OVERRIDES = ["data.batch_size=32", "data.val_fraction=0.2", "model.embedding_dim=8",
             "model.bottom=[16,8]", "model.top=[16,1]", "optim.embedding=sgd",
             "train.max_steps=5", "train.progress=false"]

SCRIPT = textwrap.dedent("""
    import json, sys
    from hotpipe.config import load_config
    from hotpipe.distributed.launch import train_from_env
    cfg = load_config(None, sys.argv[3:], values={"data.path": sys.argv[1]})
    m = train_from_env(cfg, sys.argv[2], timeout=180, replicate=4)
    print("METRICS", json.dumps(m["dist"]["world_size"]))
""")


@pytest.mark.slow
def test_torchrun_two_ranks(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", rows=400)
    script = tmp_path / "entry.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(script), str(data), str(tmp_path / "dist"), *OVERRIDES],
        env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("METRICS 2") == 2  # both ranks returned the metrics

    cfg = load_config(None, OVERRIDES, values={"data.path": str(data)})
    single = train(cfg, tmp_path / "single")
    metrics = json.loads((tmp_path / "dist" / "metrics.json").read_text())
    np.testing.assert_allclose(json.loads((tmp_path / "dist" / "losses.json").read_text()),
                               json.loads((tmp_path / "single" / "losses.json").read_text()),
                               rtol=1e-5, atol=1e-6)
    assert metrics["val_auc"] == pytest.approx(single["val_auc"], rel=1e-5)
    assert metrics["dist"]["replicated_rows"] == 4
