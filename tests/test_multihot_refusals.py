"""Stages that read one id per table refuse a multi-hot dataset by name, not with a shape error."""

from __future__ import annotations

import pytest

from hotpipe.config import load_config
from hotpipe.distributed.context import DistContext
from hotpipe.distributed.run import build_dist_components
from hotpipe.errors import ConfigError
from hotpipe.profile.profiler import profile_dataset
from hotpipe.train.run import build_components
from tests.test_multihot import make_bag_dataset

BASE = ["train.progress=false", "model.embedding_dim=4", "model.bottom=[8,4]", "model.top=[8,1]",
        "data.batch_size=32", "train.threads=1"]


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    path, _, _ = make_bag_dataset(tmp_path_factory.mktemp("refuse") / "d")
    return path


@pytest.mark.parametrize(("key", "value"), [("schedule.mode", "hotline"), ("schedule.mode", "fae"),
                                            ("skip.mode", "slipstream")])
def test_modes_reading_one_id_per_table_are_refused(bags, tmp_path, key, value):
    cfg = load_config(overrides=[*BASE, f"data.path={bags}", f"{key}={value}"])
    with pytest.raises(ConfigError, match=rf"{key}.*list \(multi-hot\) tables \(C1, C3\).*{value}"):
        build_components(cfg, tmp_path / "run")


def test_the_same_modes_are_accepted_off(bags, tmp_path):
    cfg = load_config(overrides=[*BASE, f"data.path={bags}"])
    assert build_components(cfg, tmp_path / "run").dataset.multi_hot


def test_profile_refuses_bags_naming_the_tables(bags):
    with pytest.raises(ConfigError, match=r"data.path.*one-hot tables only.*\(C1, C3\)"):
        profile_dataset(str(bags))


def test_distributed_runs_refuse_bags(bags):
    cfg = load_config(overrides=[*BASE, f"data.path={bags}"])
    ctx = DistContext(rank=0, world_size=2, backend="gloo", timeout=5.0, store=None)  # checked before any collective
    with pytest.raises(ConfigError, match=r"distributed runs need one-hot tables.*\(C1, C3\)"):
        build_dist_components(cfg, ctx)
