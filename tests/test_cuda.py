"""The CUDA path (cache on the device, pinned host backing, side-stream copies).

Skips itself without a GPU; on a device it runs the tiered pipeline with the
mover's side stream and checks it against the untiered run (allclose: the GPU
may reorder sums).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hotpipe.config import load_config
from hotpipe.train.checkpoint import load_checkpoint
from hotpipe.train.run import train
from tests.conftest import make_dataset

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

BASE = ["train.progress=false", "model.embedding_dim=8", "model.bottom=[16,8]",
        "model.top=[8,1]", "data.batch_size=64", "data.val_fraction=0.2"]


def test_side_stream_tiered_run_matches_untiered(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "d", rows=4000, cards=(500, 40, 900), seed=2)

    def run(out: str, *extra: str) -> tuple[list[float], np.ndarray]:
        train(load_config(overrides=[*BASE, *extra], values={"data.path": str(data)}), tmp_path / out)
        return (json.loads((tmp_path / out / "losses.json").read_text()),
                np.array(load_checkpoint(tmp_path / out)[1]))

    ref_loss, ref_rec = run("ref")
    loss, rec = run("t", "cache.policy=lookahead", "cache.capacity=0.3", "cache.window=16",
                    "cache.depth=2")
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(rec, ref_rec, rtol=1e-4, atol=1e-6)
