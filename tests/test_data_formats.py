"""Issue 10: the layouts public click logs ship in, each against a plain reference parse."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotpipe.cli import main
from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.encoding import MISSING_ROW, OOV_ROW, Vocabulary
from hotpipe.data.prepare import prepare_libsvm, prepare_tabular
from hotpipe.errors import DataFormatError

# A behaviour log (Taobao UserBehavior): header-less, user,item,category,behavior,timestamp.
BEHAVIOR = """1,2268318,2520377,pv,1511544070
1,2333346,2520771,buy,1511561733
2,2576651,149192,pv,1511572885
1,3830808,4181361,cart,1511593493
3,4365585,2520377,fav,1511596146
2,2268318,2520377,buy,1511499999
3,2333346,149192,pv,1511616481
"""
BEHAVIOR_SCHEMA = {"columns": ["user", "item", "category", "behavior", "ts"],
                   "label": {"column": "behavior", "positive": ["buy", "cart"], "negative": ["pv", "fav"]},
                   "categorical": ["user", "item", "category"], "sort_by": "ts"}


def reference_rows(text: str, delimiter: str) -> list[list[str]]:
    return [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if r]


def strings(ds_path: Path, ds: ColumnarDataset, t: int) -> list[str | None]:
    vocab = Vocabulary.load(ds_path / "vocab", [x.name for x in ds.tables])
    values = vocab.tables[t].strings
    assert values is not None
    return [None if r < 2 else str(values[r - 2]) for r in np.asarray(ds.sparse[:, t]).tolist()]


def test_header_less_behaviour_log_with_a_label_set_sorted_by_time(tmp_path: Path) -> None:
    src = tmp_path / "UserBehavior.csv"
    src.write_text(BEHAVIOR)
    s = prepare_tabular([src], tmp_path / "ds", schema=BEHAVIOR_SCHEMA, progress=False)
    ref = sorted(reference_rows(BEHAVIOR, ","), key=lambda r: int(r[4]))  # stable, by time
    ds = ColumnarDataset.open(tmp_path / "ds")
    assert s.rows == ds.rows == len(ref) == 7 and ds.num_tables == 3 and ds.num_dense == 0
    assert ds.label.tolist() == [float(r[3] in ("buy", "cart")) for r in ref]
    assert strings(tmp_path / "ds", ds, 1) == [r[1] for r in ref]
    assert ds.cardinalities == [2 + len({r[t] for r in ref}) for t in range(3)]
    assert ds.manifest["sources"][0]["delimiter"] == ","
    assert ds.manifest["schema"]["label"]["positive"] == ["buy", "cart"]


def test_a_label_outside_the_rules_names_file_line_and_column(tmp_path: Path) -> None:
    src = tmp_path / "log.csv"
    src.write_text(BEHAVIOR.replace("3,4365585,2520377,fav", "3,4365585,2520377,favorite"))
    with pytest.raises(DataFormatError) as e:
        prepare_tabular([src], tmp_path / "ds", schema=BEHAVIOR_SCHEMA, progress=False)
    assert (e.value.path, e.value.line, e.value.field, e.value.found) == (str(src), 5, "behavior", "favorite")
    assert "buy, cart (-> 1) or pv, fav (-> 0)" in str(e.value)
    src.write_text("user,item,category,behavior,ts\n" + BEHAVIOR)  # a header the schema did not expect
    with pytest.raises(DataFormatError, match="looks like a header: add `skip_rows: 1`") as e:
        prepare_tabular([src], tmp_path / "ds", schema=BEHAVIOR_SCHEMA, progress=False)
    assert (e.value.line, e.value.field) == (1, "behavior")
    s = prepare_tabular([src], tmp_path / "hdr", schema={**BEHAVIOR_SCHEMA, "skip_rows": 1}, progress=False)
    assert s.rows == 7
    src.write_text(BEHAVIOR.replace("3,4365585,2520377,fav", "3,4365585,2520377,favorite"))
    open_set = {**BEHAVIOR_SCHEMA, "label": {"column": "behavior", "positive": ["buy", "cart"]}}
    s = prepare_tabular([src], tmp_path / "ds", schema=open_set, progress=False)  # others -> 0
    assert s.rows == 7


def test_ratings_with_a_threshold_tab_separated_delimiter_detected(tmp_path: Path) -> None:
    text = "196\t242\t3\t881250949\n186\t302\t4\t891717742\n22\t377\t1\t878887116\n244\t51\t5\t880606923\n"
    src = tmp_path / "u.data"
    src.write_text(text)
    schema = {"columns": ["user", "item", "rating", "ts"], "label": {"column": "rating", "threshold": 4},
              "categorical": ["user", "item"]}
    prepare_tabular([src], tmp_path / "ds", schema=schema, progress=False)
    ds = ColumnarDataset.open(tmp_path / "ds")
    ref = reference_rows(text, "\t")
    assert ds.rows == len(ref) and ds.label.tolist() == [float(int(r[2]) >= 4) for r in ref]
    assert ds.manifest["sources"][0]["delimiter"] == "\t"


def test_mapped_labels_skip_rows_and_explicit_na_values(tmp_path: Path) -> None:
    src = tmp_path / "y.csv"
    src.write_text("# exported 2026-01-01\ny;city;x\n-1;NA;1.5\n1;Paris;NA\n1;;2\n")
    schema = {"skip_rows": 1, "delimiter": "semicolon", "label": {"column": "y", "map": {-1: 0, 1: 1}},
              "categorical": ["city"], "dense": ["x"]}
    with pytest.raises(DataFormatError) as e:  # default na_values: only "" is missing, so x=NA is bad
        prepare_tabular([src], tmp_path / "ds", schema=schema, progress=False)
    assert (e.value.line, e.value.field, e.value.found) == (4, "x", "NA")
    prepare_tabular([src], tmp_path / "ds", schema={**schema, "dense": []}, progress=False)
    ds = ColumnarDataset.open(tmp_path / "ds")
    assert ds.label.tolist() == [0, 1, 1] and strings(tmp_path / "ds", ds, 0)[:2] == ["NA", "Paris"]
    assert ds.sparse[2, 0] == MISSING_ROW  # the empty value
    prepare_tabular([src], tmp_path / "ds2", schema={**schema, "na_values": ["", "NA"]}, progress=False)
    ds = ColumnarDataset.open(tmp_path / "ds2")
    assert ds.sparse[0, 0] == MISSING_ROW and ds.dense[:, 0].tolist() == [1.5, 0.0, 2.0]


def test_latin1_file_with_and_without_the_encoding_key(tmp_path: Path) -> None:
    src = tmp_path / "fr.csv"
    src.write_bytes("y,ville\n1,Paris\n0,Montréal\n1,Besançon\n".encode("latin-1"))
    schema = {"label": "y", "categorical": ["ville"]}
    with pytest.raises(DataFormatError) as e:
        prepare_tabular([src], tmp_path / "ds", schema=schema, progress=False)
    assert (e.value.line, e.value.field) == (3, "encoding") and "latin-1" in str(e.value)
    prepare_tabular([src], tmp_path / "ds", schema={**schema, "encoding": "latin-1"}, progress=False)
    ds = ColumnarDataset.open(tmp_path / "ds")
    assert sorted(s for s in strings(tmp_path / "ds", ds, 0) if s) == ["Besançon", "Montréal", "Paris"]


def test_an_unclosed_quote_is_reported_at_its_own_line(tmp_path: Path) -> None:
    src = tmp_path / "q.csv"
    rows = ["y,a,b"] + [f"{i % 2},u{i},v{i}" for i in range(500)]
    rows[7] = '1,"broken,v7'
    src.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataFormatError) as e:
        prepare_tabular([src], tmp_path / "ds", schema={"label": "y", "categorical": ["a", "b"]}, progress=False)
    assert (e.value.line, str(e.value).count("unclosed quote")) == (8, 1)


def test_a_line_that_splits_into_one_column_gets_a_delimiter_hint(tmp_path: Path) -> None:
    src = tmp_path / "t.txt"
    src.write_text("y\tuser\n1\tA\n")
    with pytest.raises(DataFormatError) as e:
        prepare_tabular([src], tmp_path / "ds", schema={"label": "y", "categorical": ["user"],
                                                         "delimiter": "comma"}, progress=False)
    assert "splits into one column" in str(e.value) and "delimiter: tab" in str(e.value)


# ---------------------------------------------------------------- libSVM family

FRAPPE = """1 451:1 4149:1 5041:1
-1 451:1 4150:1 5042:1
-1 452:1 4149:1 5043:1
1 451:1 4151:1 5041:1
"""


def parse_svm(text: str) -> list[tuple[int, list[tuple[str, ...]]]]:
    """The reference: label (1 if +1/1 else 0) and each token split on ':'."""
    return [(int(float(p[0]) == 1), [tuple(t.split(":")) for t in p[1:]])
            for p in (ln.split() for ln in text.splitlines()) if p]


def test_libfm_positional_fields(tmp_path: Path) -> None:
    src = tmp_path / "frappe.libfm"
    src.write_text(FRAPPE)
    s = prepare_libsvm([src], tmp_path / "ds", format="libfm", progress=False)
    ref = parse_svm(FRAPPE)
    ds = ColumnarDataset.open(tmp_path / "ds")
    assert s.tables == ["f0", "f1", "f2"] and ds.rows == len(ref)
    assert ds.label.tolist() == [float(lbl) for lbl, _ in ref]
    vocab = Vocabulary.load(tmp_path / "ds" / "vocab", s.tables)
    for t in range(3):  # each field's vocabulary decodes back to the file's indices
        keys, ok = vocab.tables[t].decode(np.asarray(ds.sparse[:, t]))
        assert ok.all() and keys.tolist() == [int(toks[t][0]) for _, toks in ref]


def test_libsvm_with_a_feature_map_and_missing_fields(tmp_path: Path) -> None:
    fmap = tmp_path / "featmap.txt"
    fmap.write_text("# index field value\n1 user alice\n2 user bob\n10 item x\n11 item y\n12 item z\n20 hour 7\n")
    text = "+1 2:1 11:1\n0 10:1 1:1 20:1\n1 12:1\n"
    src = tmp_path / "train.svm"
    src.write_text(text)
    s = prepare_libsvm([src], tmp_path / "ds", format="libsvm", feature_map=fmap, progress=False)
    ds = ColumnarDataset.open(tmp_path / "ds")
    assert s.tables == ["user", "item", "hour"] and ds.rows == 3 and ds.label.tolist() == [1, 0, 1]
    field_of = {1: 0, 2: 0, 10: 1, 11: 1, 12: 1, 20: 2}
    vocab = Vocabulary.load(tmp_path / "ds" / "vocab", s.tables)
    for r, (_, toks) in enumerate(parse_svm(text)):
        present = {field_of[int(i)]: int(i) for i, _ in toks}
        for t in range(3):
            row = int(ds.sparse[r, t])
            if t not in present:
                assert row == MISSING_ROW
            else:
                assert vocab.tables[t].decode(np.array([row]))[0][0] == present[t]
    src.write_text("1 2:1 13:1\n")
    with pytest.raises(DataFormatError) as e:
        prepare_libsvm([src], tmp_path / "ds2", format="libsvm", feature_map=fmap, progress=False)
    assert (e.value.line, e.value.field, e.value.found) == (1, "index", "13:1")


def test_ffm_fields_values_and_bad_tokens(tmp_path: Path) -> None:
    text = "1 0:5:1 1:7:1 3:9:0.5\n0 0:6:1 2:8:1\n1 1:7:1 0:5:1\n"
    src = tmp_path / "train.ffm"
    src.write_text(text)
    s = prepare_libsvm([src], tmp_path / "ds", format="ffm", encoding="hash", buckets=101, progress=False)
    ds = ColumnarDataset.open(tmp_path / "ds")
    ref = parse_svm(text)
    assert s.tables == ["f0", "f1", "f2", "f3"] and ds.rows == len(ref)
    assert ds.label.tolist() == [float(lbl) for lbl, _ in ref]
    fields_present = [{int(f) for f, _, _ in toks} for _, toks in ref]
    assert [[int(ds.sparse[r, t]) != 0 for t in range(4)] for r in range(3)] == \
        [[t in fp for t in range(4)] for fp in fields_present]  # hash row 0 = missing
    assert any("1 of 7 tokens had a value other than 1" in n for n in s.notes)
    assert ds.manifest["values_not_one"] == 1 and ds.manifest["source_format"] == "ffm"
    assert ds.sparse[0, 0] == ds.sparse[2, 0]  # the same index, the same row
    for bad, field, found in (("1 0:5:1 1:x:1\n", "token", "1:x:1"), ("2 0:5:1\n", "label", "2"),
                              ("1 0:5:1 0:6:1\n", "f0", "the field appears twice on the line")):
        src.write_text("1 0:5:1\n" + bad)
        with pytest.raises(DataFormatError) as e:
            prepare_libsvm([src], tmp_path / "bad", format="ffm", progress=False)
        assert (e.value.path, e.value.line, e.value.field, e.value.found) == (str(src), 2, field, found)


def test_libsvm_through_the_cli_with_a_label_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "ml.libfm"
    src.write_text("5 1:1 20:1\n3 2:1 21:1\n4 1:1 22:1\n")
    rule = tmp_path / "rule.yaml"
    rule.write_text("label: {threshold: 4}\n")
    assert main(["prepare", str(src), "--format", "libfm", "--schema", str(rule), "--out", str(tmp_path / "ds"),
                 "--no-progress"]) == 0
    assert "lines/s" in capsys.readouterr().out
    assert ColumnarDataset.open(tmp_path / "ds").label.tolist() == [1, 0, 1]
    src.write_text("1 1:1 20:1\n1 2:1\n")
    assert main(["prepare", str(src), "--format", "libfm", "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{src}:2:" in err and "--feature-map" in err


# ---------------------------------------------------------------------- --val


def test_val_file_uses_the_training_vocabulary_and_counts_oov(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    train, val = tmp_path / "train.csv", tmp_path / "val.csv"
    train.write_text("y,user,item\n1,a,x\n0,b,x\n1,a,y\n0,c,z\n")
    val.write_text("y,user,item\n1,a,w\n0,d,x\n1,,q\n")  # d, w, q unseen; one user missing
    schema = tmp_path / "s.yaml"
    schema.write_text("label: y\ncategorical: [user, item]\n")
    assert main(["prepare", str(train), "--val", str(val), "--schema", str(schema), "--out",
                 str(tmp_path / "ds"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "validation split: 3 rows" in out and "3 of 5 (60.0%)" in out and "user=1 item=2" in out
    ds = ColumnarDataset.open(tmp_path / "ds")
    v = ds.open_val()
    assert ds.rows == 4 and v is not None and v.rows == 3 and v.cardinalities == ds.cardinalities
    assert ds.cardinalities == [2 + 3, 2 + 3]  # train values only
    assert v.sparse[:, 0].tolist() == [int(ds.sparse[0, 0]), OOV_ROW, MISSING_ROW]
    assert v.sparse[:, 1].tolist() == [OOV_ROW, int(ds.sparse[0, 1]), OOV_ROW]
    assert ds.manifest["val"]["oov"] == {"user": 1, "item": 2} and ds.manifest["val"]["rows"] == 3
    assert v.manifest["split"] == "val" and v.manifest["encoding"]["dir"] == "../vocab"
    assert ds.manifest["val"]["fingerprint"] == v.fingerprint
    assert main(["verify", str(tmp_path / "ds")]) == 0
    assert capsys.readouterr().out.count("ok ") == 2


def test_sort_by_iso_times_applies_to_train_and_val_and_rejects_bad_times(tmp_path: Path) -> None:
    train, val = tmp_path / "train.csv", tmp_path / "val.csv"
    train.write_text("t,y,u\n2024-01-03 10:00:00,1,c\n2024-01-01T09:00:00,0,a\n2024-01-02 00:00:00,1,b\n")
    val.write_text("t,y,u\n2024-02-02,1,b\n2024-02-01,0,a\n")
    schema = {"label": "y", "categorical": ["u"], "sort_by": "t"}
    prepare_tabular([train], tmp_path / "ds", schema=schema, val=[val], progress=False)
    ds = ColumnarDataset.open(tmp_path / "ds")
    v = ds.open_val()
    assert v is not None
    assert strings(tmp_path / "ds", ds, 0) == ["a", "b", "c"] and ds.label.tolist() == [0, 1, 1]
    assert v.label.tolist() == [0, 1] and v.sparse[:, 0].tolist() == [int(ds.sparse[0, 0]), int(ds.sparse[1, 0])]
    val.write_text("t,y,u\n2024-02-02,1,b\nyesterday,0,a\n")
    with pytest.raises(DataFormatError) as e:
        prepare_tabular([train], tmp_path / "ds2", schema=schema, val=[val], progress=False)
    assert (e.value.path, e.value.line, e.value.field, e.value.found) == (str(val), 3, "t", "yesterday")
    assert not (tmp_path / "ds2").exists()


# ------------------------------------------- the vectorized libSVM path vs the per-line reference

_token = st.tuples(st.integers(0, 3), st.integers(0, 10**12), st.sampled_from(["1", "1", "0.5", "2", "1e-3", "-1"]))


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(st.tuples(st.sampled_from(["1", "-1", "0", "+1", "1.0"]), st.lists(_token, max_size=4)),
                      min_size=1, max_size=30),
       fmt=st.sampled_from(["ffm", "libsvm"]))
def test_fast_tokenizer_matches_the_per_line_parser(lines: list, fmt: str) -> None:
    from hotpipe.data.libsvm import LibsvmReader

    def tok(f: int, i: int, v: str) -> str:
        return f"{f}:{i}:{v}" if fmt == "ffm" else f"{i}:{v}"
    # ffm: one token per field (drop repeats); libsvm positional: every line 2 tokens.
    rows = []
    for label, toks in lines:
        if fmt == "ffm":
            toks = list({f: (f, i, v) for f, i, v in toks}.values())
        else:
            toks = (toks + [(0, 7, "1"), (0, 8, "1")])[:2]
        rows.append(" ".join([label, *(tok(*t) for t in toks)]))
    block = ("\n".join(rows) + "\n").encode()
    fast_reader = LibsvmReader(fmt, num_fields=4 if fmt == "ffm" else 2)
    slow_reader = LibsvmReader(fmt, num_fields=4 if fmt == "ffm" else 2)
    fast = fast_reader._fast_chunk(block)
    slow = slow_reader._chunk(block.split(b"\n")[:-1], "x", 1, skip=False)
    assert fast is not None
    for name in ("label", "keys", "missing"):
        assert np.array_equal(getattr(fast, name), getattr(slow, name)), name
    assert fast_reader.stats == slow_reader.stats


@pytest.mark.parametrize("block", [b"1 1:1\t2:1\n", b"1 1:1\r\n", b"1  1:1\n", b"1 1:1:1\n", b"1 x:1\n",
                                   b"1 1:1 \n", b"1 1:1\n\n0 2:1\n", b"123456789 1:1\n", b"2 1:1\n",
                                   b"1 1:1 1:2\n"])
def test_irregular_blocks_go_to_the_per_line_parser(block: bytes) -> None:
    from hotpipe.data.libsvm import LibsvmReader

    assert LibsvmReader("libsvm", num_fields=1)._fast_chunk(block) is None


def test_val_for_libfm_and_for_criteo_with_hash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train, val = tmp_path / "train.libfm", tmp_path / "test.libfm"
    train.write_text(FRAPPE)
    val.write_text("1 451:1 9999:1 5041:1\n-1 453:1 4149:1 5042:1\n")
    s = prepare_libsvm([train], tmp_path / "fm", format="libfm", val=[val], progress=False)
    assert s.val_rows == 2 and s.val_oov == [1, 1, 0] and s.val_values == 6
    v = ColumnarDataset.open(tmp_path / "fm").open_val()
    assert v is not None and v.label.tolist() == [1, 0] and v.sparse[0, 1] == OOV_ROW
    val.write_text("1 451:1 4149:1\n")  # a field short: positional widths come from training
    with pytest.raises(DataFormatError) as e:
        prepare_libsvm([train], tmp_path / "fm2", format="libfm", val=[val], progress=False)
    assert (e.value.path, e.value.line, e.value.found) == (str(val), 1, "2 tokens")
    line = "\t".join(["1", "3", *[""] * 12, *["0000abcd"] * 26]) + "\n"
    (tmp_path / "day_0").write_text(line * 5)
    (tmp_path / "day_1").write_text(line.replace("1\t3", "0\t4", 1) * 2)
    assert main(["prepare", str(tmp_path / "day_0"), "--val", str(tmp_path / "day_1"), "--encoding", "hash",
                 "--buckets", "64", "--out", str(tmp_path / "c"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "validation split: 2 rows" in out and "unseen" not in out  # hashing has no OOV row
    ds = ColumnarDataset.open(tmp_path / "c")
    v = ds.open_val()
    assert v is not None and np.array_equal(v.sparse[0], ds.sparse[0]) and ds.manifest["val"]["oov"] is None


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet="ab\n\r", max_size=60), cut=st.integers(1, 7))
def test_line_counter_counts_the_lines_pyarrow_reads(text: str, cut: int) -> None:
    from hotpipe.data.csv_shape import LineCounter

    data = text.replace("\r", "\r\n").encode()  # CR only inside CRLF, as in real files
    counter = LineCounter(io.BytesIO(data))
    while counter.read(cut):
        pass
    counter.read(cut)
    lines = data.decode().replace("\r\n", "\n").split("\n")
    assert counter.lines == sum(1 for ln in lines if ln)
