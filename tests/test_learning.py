"""The model learns: real Criteo sample and planted-teacher synthetic data."""

from __future__ import annotations

import pytest

from hotpipe.config import load_config
from hotpipe.train.run import train
from tests.conftest import SHARED_DATA

COMMON = ["train.progress=false", "model.embedding_dim=16", "model.bottom=[64,16]", "model.top=[64,1]"]


@pytest.mark.slow
@pytest.mark.realdata
def test_criteo_8k_sample_learns(tmp_path):
    src = SHARED_DATA / "criteo_samples" / "criteo_lapishong_8k.txt"
    if not src.is_file():
        pytest.skip("../shared/data is absent")
    from hotpipe.data.prepare import prepare_criteo

    prepare_criteo([src], tmp_path / "d", encoding="vocab", min_count=2, progress=False)
    m = train(load_config(overrides=[*COMMON, f"data.path={tmp_path / 'd'}", "data.batch_size=128",
                                     "train.epochs=3", "data.val_fraction=0.2"]), tmp_path / "run")
    assert m["val_rows"] == 1600
    assert m["val_auc"] > 0.65, m  # clearly above chance on 6,400 training rows


@pytest.mark.slow
def test_synthetic_approaches_teacher_ceiling(tmp_path):
    from hotpipe.data.synth import synthesize

    s = synthesize(tmp_path / "d", rows=150_000, scale=0.001, seed=1, progress=False)
    m = train(load_config(overrides=[*COMMON, f"data.path={tmp_path / 'd'}", "data.batch_size=256",
                                     "train.epochs=2", "optim.embedding_lr=0.1"]), tmp_path / "run")
    assert m["val_auc"] > s.teacher_auc - 0.06, (m["val_auc"], s.teacher_auc)
    assert m["val_auc"] < s.teacher_auc + 0.01  # the teacher is the ceiling
