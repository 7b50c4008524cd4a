"""`hotpipe prepare` and `hotpipe synth` end to end, in-process."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from hotpipe.cli import main
from hotpipe.data.columnar import ColumnarDataset


def criteo_lines(n: int, bad_at: int | None = None) -> bytes:
    out = []
    for i in range(n):
        label = "x" if i == bad_at else str(i % 2)
        dense = [str(i % 7 - 1)] + [""] * 12
        cats = [f"{(i * 31 + t) % 50:08x}" for t in range(26)]
        out.append("\t".join([label, *dense, *cats]))
    return ("\n".join(out) + "\n").encode()


def test_prepare_criteo_vocab_and_hash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "day_0.gz"
    src.write_bytes(gzip.compress(criteo_lines(300)))
    assert main(["prepare", str(src), "--out", str(tmp_path / "v"), "--min-count", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "300 rows" in out and "min_count=2" in out and "C1=" in out
    assert main(["prepare", str(src), "--out", str(tmp_path / "h"), "--encoding", "hash",
                 "--buckets", "1000", "--chunk-rows", "64", "--no-progress"]) == 0
    ds = ColumnarDataset.open(tmp_path / "h")
    assert ds.rows == 300 and ds.cardinalities == [1000] * 26
    assert ds.manifest["encoding"]["kind"] == "hash"


def test_prepare_errors_exit_2_with_the_location(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "day_0"
    src.write_bytes(criteo_lines(50, bad_at=41))
    out = tmp_path / "ds"
    assert main(["prepare", str(src), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{src}:42:" in err and "field label" in err and not out.exists()
    assert main(["prepare", str(src), "--out", str(out), "--on-bad-line", "skip", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "bad lines skipped: 1" in printed and f"{src}:42: label: expected 0 or 1" in printed
    first = ColumnarDataset.open(out).manifest["bad_lines"]["first"][0]
    assert (first["line"], first["field"]) == (42, "label")
    assert main(["prepare", str(src), "--out", str(out), "--on-bad-line", "skip", "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err
    for args, key in ((["--buckets", "10"], "--buckets"), (["--format", "csv"], "--schema"),
                      (["--encoding", "hash"], "buckets")):
        assert main(["prepare", str(src), "--out", str(tmp_path / "x"), "--no-progress", *args]) == 2
        assert key in capsys.readouterr().err


def test_prepare_csv_with_a_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "clicks.csv"
    csv.write_text("ip,app,t,clicked\n1,5,x,0\n2,5,y,1\n1,6,z,0\n")
    schema = tmp_path / "schema.yaml"
    schema.write_text("label: clicked\ncategorical: [ip, app]\n")
    assert main(["prepare", str(csv), "--out", str(tmp_path / "ds"), "--schema", str(schema), "--no-progress"]) == 0
    assert "ip=4 app=4" in capsys.readouterr().out
    schema.write_text("label: clicked\ncategorical: [ip, app, country]\n")
    assert main(["prepare", str(csv), "--out", str(tmp_path / "ds2"), "--schema", str(schema),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "country" in err and "ip, app, t, clicked" in err


def test_synth_prints_the_teacher_auc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "syn"
    assert main(["synth", "--out", str(out), "--rows", "5000", "--scale", "0.001", "--zipf", "1.2",
                 "--drift", "0.1", "--seed", "3", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "teacher AUC" in text and "5,000 rows" in text
    assert ColumnarDataset.open(out).manifest["synth"]["zipf"] == 1.2
    assert main(["synth", "--out", str(out), "--rows", "0", "--overwrite", "--no-progress"]) == 2
    assert "rows" in capsys.readouterr().err
