"""Every arch learns on the real Criteo 8k sample (``../shared/data``), not only on teacher data."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotpipe.config import load_config
from hotpipe.train.run import train
from tests.conftest import SHARED_DATA

SRC = SHARED_DATA / "criteo_samples" / "criteo_lapishong_8k.txt"
# The arch keys of benchmarks/bench_models.py, at the small size of tests/test_learning.py.
ARCHS = {
    "dlrm": ["model.arch=dlrm"],
    "dcn": ["model.arch=dcn", "model.cross_layers=2", "model.cross_rank=0", "model.deep=[32]"],
    "adrec": ["model.arch=adrec", "model.heads=2", "model.attn_layers=1"],
}
# One thread: a shared 2-core box runs these tiny models faster on one than on two.
# dense_lr 0.01, not the default 0.05: at 0.05 Ad-Rec's top MLP collapsed to a
# constant output (val AUC exactly 0.5) in one of three seeds on this sample;
# at 0.01 every arch reached 0.70-0.72 in each of seeds 0-2 (measured).
COMMON = ["train.progress=false", "train.threads=1", "model.embedding_dim=16",
          "model.bottom=[64,16]", "model.top=[64,1]", "data.batch_size=128", "train.epochs=2",
          "data.val_fraction=0.2", "train.seed=0", "optim.dense_lr=0.01"]


@pytest.fixture(scope="module")
def criteo_8k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SRC.is_file():
        pytest.skip("../shared/data is absent")
    from hotpipe.data.prepare import prepare_criteo

    out = tmp_path_factory.mktemp("criteo8k") / "d"
    prepare_criteo([SRC], out, encoding="vocab", min_count=2, progress=False)
    return out


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("arch", list(ARCHS))
def test_arch_learns_on_the_criteo_8k_sample(criteo_8k: Path, tmp_path: Path, arch: str) -> None:
    m = train(load_config(overrides=[*COMMON, f"data.path={criteo_8k}", *ARCHS[arch]]), tmp_path / "run")
    assert m["val_rows"] == 1600
    # Measured 0.70-0.72 for each arch (seeds 0-2); 0.5 is chance, so 0.66 leaves margin.
    assert m["val_auc"] > 0.66, (arch, m["val_auc"])
