"""The data stage's bad-input corpus: each case exits 2 naming the path/key, never a traceback."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hotpipe.cli import main
from tests.conftest import make_dataset

CSV = "y,user,item\n1,a,x\n0,b,y\n"


def _csv(tmp: Path, text: str = CSV, name: str = "in.csv") -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def _schema(tmp: Path, text: str = "label: y\ncategorical: [user, item]\n") -> Path:
    p = tmp / "schema.yaml"
    p.write_text(text)
    return p


def _prep(tmp: Path, *extra: str, src: Path | None = None) -> list[str]:
    return ["prepare", str(src or _csv(tmp)), "--schema", str(_schema(tmp)), "--out", str(tmp / "ds"),
            "--no-progress", *extra]


def _edited(tmp: Path, edit: Callable[[dict], None]) -> list[str]:
    d = make_dataset(tmp / "data", rows=10)
    m = json.loads((d / "manifest.json").read_text())
    edit(m)
    (d / "manifest.json").write_text(json.dumps(m))
    return ["verify", str(d)]


def _parquet(tmp: Path) -> list[str]:
    p = tmp / "t.data"  # no .parquet extension: read as CSV
    pq.write_table(pa.table({"y": [1, 0], "user": ["a", "b"], "item": ["x", "y"]}), p)
    return _prep(tmp, "--format", "csv", src=p)


def _out_file(tmp: Path, *extra: str) -> list[str]:
    (tmp / "ds").write_text("not a folder")
    return _prep(tmp, *extra)


CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "missing input": (lambda t: _prep(t, src=t / "nope.csv"), "nope.csv: input file not found"),
    "empty input": (lambda t: _prep(t, src=_csv(t, "")), "in.csv: input file has no data rows"),
    "header only": (lambda t: _prep(t, src=_csv(t, "y,user,item\n")), "in.csv: input file has no data rows"),
    "empty criteo": (lambda t: ["prepare", str(_csv(t, "", "day_0")), "--out", str(t / "ds"), "--no-progress"],
                     "day_0: input file has no data rows"),
    "parquet read as csv": (_parquet, "t.data:1: this is a Parquet file"),
    "out is a file": (_out_file, "is a file, not a dataset directory"),
    "out is a file, --overwrite": (lambda t: _out_file(t, "--overwrite"), "is a file, not a dataset directory"),
    "min-count 0": (lambda t: _prep(t, "--min-count", "0"), "--min-count"),
    "manifest without tables": (lambda t: _edited(t, lambda m: m.pop("tables")), "field tables"),
    "manifest without rows": (lambda t: _edited(t, lambda m: m.pop("rows")), "field rows"),
    "manifest rows abc": (lambda t: _edited(t, lambda m: m.update(rows="abc")), "found \"'abc'\""),
    "table of cardinality 0": (lambda t: _edited(t, lambda m: m["tables"][0].update(cardinality=0)),
                               "tables[0].cardinality (C1)"),
    "cardinality edited down": (lambda t: _edited(t, lambda m: m["tables"][0].update(cardinality=1)),
                                "id out of range for its table (field C1"),
    "unknown schema key": (lambda t: ["prepare", str(_csv(t)), "--schema",
                                      str(_schema(t, "label: y\ncategorical: [user]\nheader: no\n")),
                                      "--out", str(t / "ds")], "schema.header"),
    "unknown encoding": (lambda t: ["prepare", str(_csv(t)), "--schema",
                                    str(_schema(t, "label: y\ncategorical: [user]\nencoding: klingon\n")),
                                    "--out", str(t / "ds")], "schema.encoding"),
    "label outside the rule": (lambda t: ["prepare", str(_csv(t, CSV + "maybe,c,z\n")), "--schema",
                                          str(_schema(t, "label: {column: y, map: {1: 1, 0: 0}}\n"
                                                         "categorical: [user]\n")), "--out", str(t / "ds")],
                               "in.csv:4: malformed line (field y"),
    "bad libsvm token": (lambda t: ["prepare", str(_csv(t, "1 1:1\n1 2;1\n", "a.svm")), "--format", "libsvm",
                                    "--out", str(t / "ds")], "a.svm:2: malformed line (field token"),
    "feature map with criteo": (lambda t: ["prepare", str(_csv(t)), "--feature-map", "x", "--out",
                                           str(t / "ds")], "--feature-map"),
    "empty val file": (lambda t: _prep(t, "--val", str(_csv(t, "y,user,item\n", "val.csv"))),
                       "val.csv: input file has no data rows"),
    "not a dataset": (lambda t: ["verify", str(t)], "not a hotpipe dataset directory"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_a_clear_message(case: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    make, fragment = CASES[case]
    argv = make(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err, err
    assert not list(tmp_path.glob(".ds.*")), "temp folder left behind"


def test_permission_denied_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from hotpipe.data import atomic, criteo

    src = _csv(tmp_path)

    def no_read(*a: object, **k: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(src))
    with monkeypatch.context() as m:
        m.setattr(criteo, "open", no_read, raising=False)  # tests run as root: chmod would not deny
        assert main(_prep(tmp_path, src=src)) == 2
    assert "in.csv: permission denied" in capsys.readouterr().err
    with monkeypatch.context() as m:
        m.setattr(atomic.os, "access", lambda p, mode: False)
        assert main(_prep(tmp_path)) == 2
    assert f"{tmp_path}: permission denied" in capsys.readouterr().err


def test_the_cli_module_imports_nothing_heavy() -> None:
    code = ("import sys, hotpipe.cli.data_cmds; "
            "print(sorted(m for m in ('torch', 'pyarrow', 'sklearn', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
