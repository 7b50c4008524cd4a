"""Generic CSV/Parquet input through a schema."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.encoding import MISSING_ROW, Vocabulary
from hotpipe.data.prepare import prepare_tabular
from hotpipe.data.tabular import TabularSchema
from hotpipe.errors import ConfigError, DataFormatError

TALKING = Path(__file__).resolve().parents[2] / "shared" / "data" / "talkingdata_sample" / "train_sample.csv"
TALKING_SCHEMA = "label: is_attributed\ncategorical: [ip, app, device, os, channel]\n"
SCHEMA = {"label": "y", "categorical": ["user", "item"], "dense": ["price", "age"]}

TABLE = {
    "y": [0, 1, 1, 0, 0, 1],
    "user": [7, 8, 7, None, 9, 7],
    "item": ["a", "b", "", "a", "c", "b"],
    "price": [1.5, None, 3.0, -2.0, 0.0, 1e3],
    "age": [30, 31, None, 33, 34, 35],
    "ignored": ["x"] * 6,
}


def write_csv(path: Path, table: dict[str, list], delimiter: str = ",") -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(table)
        for row in zip(*table.values(), strict=True):
            w.writerow(["" if v is None else v for v in row])
    return path


def load(path: Path) -> ColumnarDataset:
    return ColumnarDataset.open(path)


@pytest.mark.realdata
@pytest.mark.skipif(not TALKING.is_file(), reason="../shared/data/talkingdata_sample absent")
def test_talkingdata_sample_through_a_yaml_schema(tmp_path: Path) -> None:
    schema = tmp_path / "schema.yaml"
    schema.write_text(TALKING_SCHEMA)
    s = prepare_tabular([TALKING], tmp_path / "td", schema=schema, progress=False)
    ds = load(tmp_path / "td")
    assert ds.rows == 100_000 and ds.num_dense == 0 and ds.dense.shape == (100_000, 0)
    assert int(ds.label.sum()) == 227  # SOURCE.txt: 227 positives
    # SOURCE.txt cardinalities (no missing values) + our OOV and missing rows.
    assert s.cardinalities == [34857 + 2, 161 + 2, 100 + 2, 130 + 2, 161 + 2]
    vocab = Vocabulary.load(tmp_path / "td" / "vocab", [t.name for t in ds.tables])
    ips = [r["ip"] for r in csv.DictReader(open(TALKING))]
    assert vocab.tables[0].strings[ds.sparse[:, 0] - 2].tolist() == ips  # type: ignore[index]
    assert ds.manifest["schema"]["categorical"] == ["ip", "app", "device", "os", "channel"]


def test_csv_and_parquet_give_the_same_dataset(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "t.csv", TABLE)
    pq_path = tmp_path / "t.parquet"
    pq.write_table(pa.table(TABLE), pq_path, row_group_size=2)
    for enc in ({"encoding": "vocab"}, {"encoding": "hash", "buckets": 64}):
        a = prepare_tabular([csv_path], tmp_path / "a", schema=SCHEMA, progress=False, overwrite=True, **enc)  # type: ignore[arg-type]
        b = prepare_tabular([pq_path], tmp_path / "b", schema=SCHEMA, progress=False, overwrite=True,
                            chunk_rows=4, **enc)  # type: ignore[arg-type]
        assert a.cardinalities == b.cardinalities
        da, db = load(tmp_path / "a"), load(tmp_path / "b")
        assert np.array_equal(da.sparse, db.sparse) and np.array_equal(da.dense, db.dense)
        assert np.array_equal(da.label, db.label)
    ds = load(tmp_path / "a")
    assert ds.manifest["source_format"] == "csv" and ds.num_dense == 2
    dense = np.asarray(load(tmp_path / "b").dense)
    assert dense[:, 0].tolist() == [1.5, 0.0, 3.0, -2.0, 0.0, 1000.0]  # missing -> 0, no log by default


def test_vocab_rows_and_missing_categoricals(tmp_path: Path) -> None:
    prepare_tabular([write_csv(tmp_path / "t.csv", TABLE)], tmp_path / "ds", schema=SCHEMA, progress=False)
    ds = load(tmp_path / "ds")
    # user: 7 x3 -> row 2, then 8 and 9 (count 1, ties by fingerprint); None -> missing.
    assert ds.sparse[:, 0].tolist()[0] == 2 and ds.sparse[3, 0] == MISSING_ROW
    assert ds.sparse[2, 1] == MISSING_ROW  # empty string
    assert ds.cardinalities == [2 + 3, 2 + 3]


def test_unknown_column_names_it_and_lists_the_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", TABLE)
    with pytest.raises(DataFormatError) as e:
        prepare_tabular([path], tmp_path / "ds", schema={**SCHEMA, "dense": ["prize"]}, progress=False)
    assert e.value.field == "prize" and "price" in str(e.value) and "ignored" in str(e.value)
    pq.write_table(pa.table(TABLE), tmp_path / "t.parquet")
    with pytest.raises(DataFormatError, match="prize"):
        prepare_tabular([tmp_path / "t.parquet"], tmp_path / "ds", schema={**SCHEMA, "dense": ["prize"]},
                        progress=False)
    assert not (tmp_path / "ds").exists()


def test_bad_values_name_file_row_and_column(tmp_path: Path) -> None:
    bad = {**TABLE, "age": [30, 31, "old", 33, 34, 35], "y": [0, 1, 1, 2, 0, 1]}
    path = write_csv(tmp_path / "t.csv", bad)
    with pytest.raises(DataFormatError) as e:
        prepare_tabular([path], tmp_path / "ds", schema=SCHEMA, progress=False)
    # Row 3 is line 4 (the header is line 1).
    assert (e.value.path, e.value.line, e.value.field, e.value.found) == (str(path), 4, "age", "old")
    s = prepare_tabular([path], tmp_path / "ds", schema=SCHEMA, on_bad_line="skip", progress=False)
    assert s.rows == 4 and s.bad_lines == 2
    assert [(b.line, b.field) for b in s.bad_examples] == [(4, "age"), (5, "y")]


def test_semicolon_csv_with_log1p_dense(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.txt", TABLE, delimiter=";")
    schema = {**SCHEMA, "delimiter": ";", "dense_transform": "log1p", "format": "csv"}
    prepare_tabular([path], tmp_path / "ds", schema=schema, progress=False)
    assert np.allclose(load(tmp_path / "ds").dense[:, 0], np.log1p([1.5, 0, 3.0, 0, 0, 1e3]))


@pytest.mark.parametrize("schema,key", [
    ({"label": "y", "categorical": ["a"], "colour": 1}, "schema.colour"),
    ({"categorical": ["a"]}, "schema.label"),
    ({"label": "y", "categorical": []}, "schema.categorical"),
    ({"label": "y", "categorical": "a"}, "schema.categorical"),
    ({"label": "y", "categorical": ["a"], "dense": ["a"]}, "schema"),
    ({"label": "y", "categorical": ["a"], "format": "xlsx"}, "schema.format"),
])
def test_schema_errors_name_the_key(schema: dict, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        TabularSchema.from_dict(schema)
    assert e.value.key == key


def test_skipping_every_row_is_an_error_not_an_empty_dataset(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", {**TABLE, "age": ["2017-11-07 09:30:38"] * 6})
    with pytest.raises(DataFormatError, match="all 6 lines are malformed") as e:
        prepare_tabular([path], tmp_path / "ds", schema=SCHEMA, on_bad_line="skip", progress=False)
    assert (e.value.line, e.value.field) == (2, "age") and not (tmp_path / "ds").exists()
    with pytest.raises(ConfigError, match="on_bad_line"):
        prepare_tabular([path], tmp_path / "ds", schema=SCHEMA, on_bad_line="ignore", progress=False)


def test_ragged_csv_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("y,user,item\n0,1,a\n1,2\n0,3,c\n1,4,d,extra\n0,5,e\n")
    schema = {"label": "y", "categorical": ["user", "item"]}
    with pytest.raises(DataFormatError) as e:
        prepare_tabular([path], tmp_path / "ds", schema=schema, progress=False)
    assert (e.value.line, e.value.field, e.value.expected, e.value.found) == (3, "line", "3 columns", "2 columns")
    s = prepare_tabular([path], tmp_path / "ds", schema=schema, on_bad_line="skip", progress=False)
    assert s.rows == 3 and s.bad_lines == 2
    assert "2 columns: 1,2" in s.bad_examples[0].reason() and "?" in s.format()
