"""`hotpipe prepare` of list columns (multi-hot tables): round trips, truncation, empty lists, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hotpipe.cli import main
from hotpipe.data.batch import JaggedIds
from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.loader import BatchLoader
from hotpipe.data.prepare import prepare_tabular
from hotpipe.errors import ConfigError, DataFormatError

ROWS = [  # clicked, user, history (oldest first), price
    (1, "u1", ["i1", "i2", "i3"], 2.5),
    (0, "u2", [], 1.0),
    (1, "u1", ["i3", "i2"], 0.5),
    (0, "u3", ["i9", "i8", "i7", "i6", "i5"], 4.0),
    (1, "u2", ["i1"], 1.5),
    (0, "u3", ["i4", "i4", "i5"], 0.0),
]


def _schema(**list_keys: object) -> dict:
    return {"label": "clicked", "delimiter": "comma", "dense": ["price"],
            "categorical": ["user", {"column": "history", "type": "list", "max_len": 3, **list_keys}]}


def _csv(path: Path, rows=ROWS, sep: str = "|") -> Path:
    lines = ["clicked,user,history,price"] + [f"{y},{u},{sep.join(h)},{p}" for y, u, h, p in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _decoded(out: Path) -> list[list[str]]:
    """Each row's history as strings, through the vocabulary the prepare wrote."""
    ds = ColumnarDataset.open(out)
    ds.verify()
    strings = np.load(out / "vocab" / "history.values.npy")
    batch = BatchLoader(ds, batch_size=ds.rows).batch(0)
    sp = batch.sparse
    assert isinstance(sp, JaggedIds)
    b = sp.batch_size
    t = [s.name for s in ds.tables].index("history")
    return [[str(strings[int(v) - 2]) for v in sp.values[int(sp.offsets[t * b + i]):int(sp.offsets[t * b + i + 1])]]
            for i in range(b)]


def _capped(h: list[str], keep: str = "last") -> list[str]:
    return h[-3:] if keep == "last" else h[:3]


@pytest.mark.parametrize("keep", ["last", "first"])
def test_csv_round_trip_truncates_by_the_rule_and_keeps_empty_lists(tmp_path, keep):
    s = prepare_tabular(_csv(tmp_path / "a.csv"), tmp_path / "ds", schema=_schema(keep=keep), progress=False)
    assert _decoded(tmp_path / "ds") == [_capped(h, keep) for _, _, h, _ in ROWS]
    assert s.truncated == {"history": 1}
    bag = [t for t in ColumnarDataset.open(tmp_path / "ds").manifest["tables"] if t["name"] == "history"][0]["bag"]
    assert (bag["truncated"], bag["empty"], bag["max_len"], bag["longest"]) == (1, 1, 3, 3)


@pytest.mark.parametrize("as_text", [False, True])
def test_parquet_round_trip(tmp_path, as_text):
    hist = ["|".join(h) if as_text else h for _, _, h, _ in ROWS]
    table = pa.table({"clicked": [r[0] for r in ROWS], "user": [r[1] for r in ROWS],
                      "history": pa.array(hist) if as_text else pa.array(hist, pa.list_(pa.string())),
                      "price": [r[3] for r in ROWS]})
    pq.write_table(table, tmp_path / "a.parquet")
    prepare_tabular(tmp_path / "a.parquet", tmp_path / "ds", schema=_schema(), progress=False)
    assert _decoded(tmp_path / "ds") == [_capped(h) for _, _, h, _ in ROWS]
    # the CSV copy of the same table encodes alike
    prepare_tabular(_csv(tmp_path / "a.csv"), tmp_path / "ds2", schema=_schema(), progress=False)
    assert np.array_equal(np.fromfile(tmp_path / "ds" / "bags" / "0.values.bin", np.int32),
                          np.fromfile(tmp_path / "ds2" / "bags" / "0.values.bin", np.int32))


def test_parquet_integer_lists_and_null_lists(tmp_path):
    table = pa.table({"clicked": [1, 0, 1], "user": ["a", "b", "a"],
                      "history": pa.array([[3, 4], None, []], pa.list_(pa.int64())), "price": [1.0, 2.0, 3.0]})
    pq.write_table(table, tmp_path / "a.parquet")
    prepare_tabular(tmp_path / "a.parquet", tmp_path / "ds", schema=_schema(), progress=False)
    assert _decoded(tmp_path / "ds") == [["3", "4"], [], []]


def test_hash_encoding_and_sort_by_keep_each_list_with_its_row(tmp_path):
    lines = ["clicked,user,history,price,ts"] + [f"{y},{u},{'|'.join(h)},{p},{9 - i}"
                                                 for i, (y, u, h, p) in enumerate(ROWS)]
    (tmp_path / "a.csv").write_text("\n".join(lines) + "\n")
    prepare_tabular(tmp_path / "a.csv", tmp_path / "v", schema={**_schema(), "sort_by": "ts"}, progress=False)
    assert _decoded(tmp_path / "v") == [_capped(h) for _, _, h, _ in ROWS][::-1]
    prepare_tabular(tmp_path / "a.csv", tmp_path / "h", schema=_schema(), encoding="hash", buckets=50,
                    progress=False)
    ds = ColumnarDataset.open(tmp_path / "h")
    sp = BatchLoader(ds, batch_size=6).batch(0).sparse
    assert isinstance(sp, JaggedIds) and sp.lengths()[6:].tolist() == [3, 0, 2, 3, 1, 3]
    assert sp.values[sp.offsets[6 + 5]:].tolist()[0] == sp.values[sp.offsets[6 + 5]:].tolist()[1]  # i4, i4


def test_val_file_items_unseen_in_training_go_to_the_oov_row(tmp_path):
    val = _csv(tmp_path / "val.csv", [(1, "u1", ["i1", "zz"], 1.0), (0, "u9", [], 2.0)])
    s = prepare_tabular(_csv(tmp_path / "a.csv"), tmp_path / "ds", schema=_schema(), val=val, progress=False)
    assert s.val_oov == [1, 1]  # user u9, item zz
    vds = ColumnarDataset.open(tmp_path / "ds").open_val()
    assert vds is not None and vds.bags[1].values.tolist()[1] == 0


@pytest.mark.parametrize("field,bad_line", [("i1||i2", 3), ("i1|i2|", 3), ("|", 3)])
def test_an_empty_item_is_an_error_naming_file_line_and_column(tmp_path, field, bad_line):
    path = tmp_path / "a.csv"
    path.write_text(f"clicked,user,history,price\n1,u1,i1,1.0\n0,u2,{field},2.0\n")
    with pytest.raises(DataFormatError) as e:
        prepare_tabular(path, tmp_path / "ds", schema=_schema(), progress=False)
    assert (e.value.path, e.value.line, e.value.field) == (str(path), bad_line, "history")
    assert not (tmp_path / "ds").exists()
    s = prepare_tabular(path, tmp_path / "ds", schema=_schema(), on_bad_line="skip", progress=False)
    assert (s.rows, s.bad_lines) == (1, 1)


def test_a_null_item_in_a_parquet_list_is_an_error(tmp_path):
    table = pa.table({"clicked": [1, 0], "user": ["a", "b"],
                      "history": pa.array([["x"], ["y", None]], pa.list_(pa.string())), "price": [1.0, 2.0]})
    pq.write_table(table, tmp_path / "a.parquet")
    with pytest.raises(DataFormatError) as e:
        prepare_tabular(tmp_path / "a.parquet", tmp_path / "ds", schema=_schema(), progress=False)
    assert (e.value.line, e.value.field) == (2, "history")


@pytest.mark.parametrize("keys,key", [
    ({"max_len": 0}, "max_len"), ({"max_len": "5"}, "max_len"), ({"sep": "||"}, "sep"),
    ({"keep": "middle"}, "keep"), ({"type": "set"}, "type"), ({"sepp": "|"}, "sepp"),
    ({"sep": ","}, "categorical")])
def test_bad_list_keys_name_the_key(tmp_path, keys, key):
    with pytest.raises(ConfigError, match=key):
        prepare_tabular(_csv(tmp_path / "a.csv"), tmp_path / "ds", schema=_schema(**keys), progress=False)


def test_cli_prepares_a_list_column_and_reports_truncation(tmp_path, capsys):
    import yaml

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(_schema()))
    assert main(["prepare", str(_csv(tmp_path / "a.csv")), "--schema", str(tmp_path / "s.yaml"), "--out",
                 str(tmp_path / "ds"), "--no-progress"]) == 0
    assert "history: 1 lists truncated to max_len, 1 empty" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "ds")]) == 0
    values = tmp_path / "ds" / "bags" / "0.values.bin"
    data = bytearray(values.read_bytes())
    data[len(data) // 2] ^= 1  # one flipped bit in the middle: only the full check sees it
    values.write_bytes(bytes(data))
    assert main(["verify", str(tmp_path / "ds")]) == 2
    assert "0.values.bin" in capsys.readouterr().err
