"""End-to-end training: learns, resumes exactly, rejects bad config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hotpipe.cli import main
from hotpipe.config import load_config
from hotpipe.errors import CheckpointError, ConfigError
from hotpipe.train.run import train
from tests.conftest import make_dataset

BASE = ["data.batch_size=64", "train.progress=false", "train.log_every=5",
        "model.embedding_dim=8", "model.bottom=[16,8]", "model.top=[16,1]"]


def _cfg(data: Path, *extra: str):
    return load_config(overrides=[*BASE, f"data.path={data}", *extra])


def test_model_learns_planted_teacher(tmp_path):
    data = make_dataset(tmp_path / "d", rows=4096)
    m = train(_cfg(data, "train.epochs=4"), tmp_path / "run")
    assert m["val_auc"] > 0.7, m
    assert m["steps"] == 4 * ((4096 - 409) // 64)
    for key in ("final_loss", "val_auc", "val_logloss", "samples_per_s", "steps"):
        assert key in json.loads((tmp_path / "run" / "metrics.json").read_text())


@pytest.mark.parametrize("opt", ["sgd", "rowwise_adagrad"])
def test_resume_is_exact(tmp_path, opt):
    data = make_dataset(tmp_path / "d", rows=2048)
    full = train(_cfg(data, f"optim.embedding={opt}", "train.max_steps=20"), tmp_path / "full")
    train(_cfg(data, f"optim.embedding={opt}", "train.max_steps=8"), tmp_path / "part")
    resumed = train(_cfg(data, f"optim.embedding={opt}", "train.max_steps=20"), tmp_path / "part",
                    resume=True)
    a = json.loads((tmp_path / "full" / "losses.json").read_text())
    b = json.loads((tmp_path / "part" / "losses.json").read_text())
    assert len(a) == len(b) == 20
    assert a == b  # bit-identical losses
    assert full["val_auc"] == resumed["val_auc"]


def test_resume_rejects_changed_math(tmp_path):
    data = make_dataset(tmp_path / "d", rows=1024)
    train(_cfg(data, "train.max_steps=3"), tmp_path / "run")
    with pytest.raises(ConfigError, match="optim.embedding_lr"):
        train(_cfg(data, "train.max_steps=6", "optim.embedding_lr=0.5"), tmp_path / "run", resume=True)


def test_resume_without_checkpoint(tmp_path):
    data = make_dataset(tmp_path / "d", rows=1024)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(_cfg(data), tmp_path / "empty", resume=True)


def test_interrupted_checkpoint_leaves_previous_loadable(tmp_path, monkeypatch):
    from hotpipe.train import checkpoint as ck

    data = make_dataset(tmp_path / "d", rows=1024)
    train(_cfg(data, "train.max_steps=4"), tmp_path / "run")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ck, "_save_npy", boom)  # dies mid-write of the next checkpoint
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(data, "train.max_steps=8"), tmp_path / "run", resume=True)
    monkeypatch.undo()
    dense, _ = ck.load_checkpoint(tmp_path / "run")
    assert dense["loop"]["step"] == 4


@pytest.mark.parametrize(("override", "key"), [
    ("cache.windw=8", "cache.windw"),
    ("train.seed=abc", "train.seed"),
    ("cache.capacity=1.5", "cache.capacity"),
    ("cache.policy=fifo", "cache.policy"),
    ("bogus=1", "bogus"),
    ("novalue", "novalue"),
])
def test_config_errors_name_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=[override])
    assert repr(key) in str(e.value)


def test_config_file_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("cache:\n  window: 8\n  policy: lru\ntrain:\n  seed: 3\n")
    cfg = load_config(f, ["cache.window=16"])
    assert (cfg.cache.window, cfg.cache.policy, cfg.train.seed) == (16, "lru", 3)
    f.write_text("cache:\n  windw: 8\n")
    with pytest.raises(ConfigError, match="cache.windw"):
        load_config(f)


def test_capacity_units():
    cfg = load_config(overrides=["cache.capacity=1MiB"])
    assert cfg.cache.capacity_spec.rows(10**9, bytes_per_row=256) == 4096
    assert load_config(overrides=["cache.capacity=0.25"]).cache.capacity_spec.rows(1000, 256) == 250
    assert load_config(overrides=["cache.capacity=300"]).cache.capacity_spec.rows(1000, 256) == 300


def test_cli_train_end_to_end(tmp_path, capsys):
    data = make_dataset(tmp_path / "d", rows=1024)
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--no-progress",
               "data.batch_size=64", "model.embedding_dim=8", "model.bottom=[16,8]", "model.top=[8,1]"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["steps"] > 0 and 0.0 <= out["val_auc"] <= 1.0
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "run2"), "cache.windw=3"])
    assert rc == 2
    assert "cache.windw" in capsys.readouterr().err


def test_cli_reports_bad_dataset(tmp_path, capsys):
    rc = main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run")])
    assert rc == 2
    assert "manifest.json" in capsys.readouterr().err


def test_report_renders(tmp_path):
    from PIL import Image

    from hotpipe.train.report import write_report

    data = make_dataset(tmp_path / "d", rows=1024)
    train(_cfg(data, "train.eval_every=5", "train.epochs=2"), tmp_path / "run")
    report = write_report(tmp_path / "run")
    text = report.read_text()
    assert "val_auc" in text and "plots/loss.png" in text
    for name in ("loss", "val_auc", "throughput", "cache", "bytes_moved"):
        png = tmp_path / "run" / "plots" / f"{name}.png"
        assert png.stat().st_size > 1000
        with Image.open(png) as im:
            assert im.size[0] > 100


def test_resume_past_the_requested_stop_is_an_error(tmp_path):
    data = make_dataset(tmp_path / "d", rows=1024)
    train(_cfg(data, "train.max_steps=6"), tmp_path / "run")
    with pytest.raises(CheckpointError, match="step 6, past the requested stop 3"):
        train(_cfg(data, "train.max_steps=3"), tmp_path / "run", resume=True)


def test_train_threads_is_a_setting_of_the_run_not_the_process(tmp_path):
    import torch

    data = make_dataset(tmp_path / "d", rows=300, cards=(9, 5))
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    m = train(load_config(overrides=["train.progress=false", "data.batch_size=32",
                                     f"train.threads={want}"],
                          values={"data.path": str(data)}), tmp_path / "run")
    assert m["threads"] == want and torch.get_num_threads() == before
