"""Every example schema under examples/ prepares its sample file."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from hotpipe.cli import main
from hotpipe.data.columnar import ColumnarDataset

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def commands() -> list[str]:
    return [line.split("hotpipe ", 1)[1] for p in sorted(EXAMPLES.glob("*.yaml"))
            for line in p.read_text().splitlines() if line.startswith("#   hotpipe prepare")]


@pytest.mark.parametrize("cmd", commands())
def test_example_prepares(cmd: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(EXAMPLES.parent)
    argv = shlex.split(cmd)
    out = tmp_path / "ds"
    argv[argv.index("--out") + 1] = str(out)
    assert main([*argv, "--no-progress"]) == 0
    ds = ColumnarDataset.open(out)
    assert ds.rows >= 4 and 0 < ds.label.sum() < ds.rows


def test_every_example_has_a_command() -> None:
    assert len(commands()) == len(list(EXAMPLES.glob("*.yaml"))) == 5


def test_libfm_example_with_its_feature_map(tmp_path: Path) -> None:
    root = EXAMPLES / "data"
    assert main(["prepare", str(root / "ratings.libfm"), "--format", "libfm", "--feature-map",
                 str(root / "featmap.txt"), "--schema", str(EXAMPLES / "libfm_ratings.yaml"), "--out",
                 str(tmp_path / "ds"), "--no-progress"]) == 0
    ds = ColumnarDataset.open(tmp_path / "ds")
    assert [t.name for t in ds.tables] == ["user", "item", "hour"] and ds.label.tolist() == [1, 0, 1, 0]
