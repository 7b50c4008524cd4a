"""The Criteo reader: real samples, malformed input, gzip, atomic output, fast path vs reference."""

from __future__ import annotations

import contextlib
import gzip
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.criteo import format_hex, open_source, parse_line, read_criteo
from hotpipe.data.encoding import MISSING_ROW, Vocabulary
from hotpipe.data.prepare import prepare_criteo
from hotpipe.errors import DataFormatError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "criteo_samples"
SAMPLE_8K = DATA / "criteo_lapishong_8k.txt"
SAMPLE_4K = DATA / "criteo_cafpereira_random_4584.txt"

# From SOURCE.txt (file 1): per-field cardinality counting '<missing>' as a value, and missing %.
CARD_8K = [157, 370, 4525, 3370, 53, 8, 2817, 82, 3, 2584, 1904, 4338, 1591, 22, 1833, 3906, 9,
           1055, 481, 4, 4141, 8, 12, 2153, 38, 1636]
MISSING_PCT_8K = [0, 0, 3.31, 3.31, 0, 13.09, 0, 0, 0, 0, 0, 3.31, 0, 0, 0, 3.31, 0, 0, 45.29,
                  45.29, 3.31, 81.73, 0, 3.31, 45.29, 45.29]


def line(label: str = "0", dense: list[str] | None = None, cats: list[str] | None = None) -> str:
    dense = dense if dense is not None else [str(i) for i in range(13)]
    cats = cats if cats is not None else [f"{i:08x}" for i in range(26)]
    return "\t".join([label, *dense, *cats])


def with_field(i: int, value: str) -> str:
    """A valid line whose field i (0 = label, 1..13 = I, 14.. = C) is replaced."""
    fields = line().split("\t")
    fields[i] = value
    return "\t".join(fields)


def write(path: Path, lines: list[str], *, gz: bool = False) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def read_all(path: Path, **kw: object) -> list:
    with open_source(path) as s:
        return list(read_criteo(s, **kw))  # type: ignore[arg-type]


needs_samples = pytest.mark.skipif(not SAMPLE_8K.is_file(), reason="../shared/data/criteo_samples absent")


# ----------------------------------------------------------------------- real data


@pytest.mark.realdata
@needs_samples
def test_real_samples_row_counts_and_missing(tmp_path: Path) -> None:
    for sample, rows in ((SAMPLE_8K, 8000), (SAMPLE_4K, 4584)):
        chunks = read_all(sample, chunk_rows=1000)
        assert sum(c.rows for c in chunks) == rows
        assert sum(c.bad_count for c in chunks) == 0
        assert chunks[0].dense.shape[1] == 13 and chunks[0].keys.shape[1] == 26
    summary = prepare_criteo([SAMPLE_8K], tmp_path / "ds", progress=False)
    # SOURCE.txt rounds to 2 decimals (81.725 -> 81.73).
    assert np.allclose(np.array(summary.missing) / 80, MISSING_PCT_8K, atol=0.0051, rtol=0)
    ds = ColumnarDataset.open(tmp_path / "ds")
    assert ds.rows == 8000 and ds.num_dense == 13 and ds.num_tables == 26
    assert float(ds.label.sum()) == 1728  # SOURCE.txt: 1,728 positives
    # SOURCE counts '<missing>' as a value; we add an OOV row and always a missing row.
    assert ds.cardinalities == [c - (p > 0) + 2 for c, p in zip(CARD_8K, MISSING_PCT_8K, strict=True)]
    assert np.array_equal((np.asarray(ds.sparse) == MISSING_ROW).sum(axis=0), summary.missing)


@pytest.mark.realdata
@needs_samples
def test_vocab_round_trip_decodes_the_original_hex(tmp_path: Path) -> None:
    prepare_criteo([SAMPLE_8K], tmp_path / "ds", progress=False)
    ds = ColumnarDataset.open(tmp_path / "ds")
    vocab = Vocabulary.load(tmp_path / "ds" / "vocab", [t.name for t in ds.tables])
    raw = [ln.split("\t") for ln in SAMPLE_8K.read_text().splitlines()]
    for t, table in enumerate(vocab.tables):
        keys, is_value = table.decode(ds.sparse[:, t])
        decoded = np.where(is_value, format_hex(keys), "")
        assert decoded.tolist() == [r[14 + t] for r in raw], table.name
    # Re-applying the saved vocabulary reproduces the stored ids.
    chunk = read_all(SAMPLE_8K)[0]
    assert np.array_equal(vocab.encode(chunk.keys, chunk.missing), ds.sparse[: chunk.rows])


@pytest.mark.realdata
@needs_samples
def test_min_count_shares_the_oov_row(tmp_path: Path) -> None:
    s = prepare_criteo([SAMPLE_8K], tmp_path / "ds", min_count=2, progress=False)
    ds = ColumnarDataset.open(tmp_path / "ds")
    full = prepare_criteo([SAMPLE_8K], tmp_path / "all", progress=False).cardinalities
    assert all(c <= f for c, f in zip(s.cardinalities, full, strict=True)) and s.cardinalities[2] < full[2]
    counts = np.load(tmp_path / "ds" / "vocab" / "C3.counts.npy")
    assert counts.min() >= 2 and np.all(np.diff(counts) <= 0)  # by descending count
    assert (ds.sparse[:, 2] == 0).sum() > 0


# ---------------------------------------------------------------------- bad input

BAD_CASES = [
    ("wrong field count", "\t".join(line().split("\t")[:39]), "line"),
    ("non-numeric dense", with_field(3, "abc"), "I3"),
    ("decimal dense", with_field(5, "1.5"), "I5"),
    ("lone minus", with_field(13, "-"), "I13"),
    ("non-hex categorical", with_field(14 + 16, "zz12ab34"), "C17"),
    ("hex too long", with_field(15, "123456789"), "C2"),
    ("label 2", with_field(0, "2"), "label"),
    ("empty label", with_field(0, ""), "label"),
]


@pytest.mark.parametrize("name,bad,field", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_line_error_names_file_line_and_field(tmp_path: Path, name: str, bad: str, field: str) -> None:
    path = write(tmp_path / "in.txt", [line(), line("1"), bad, line()])
    with pytest.raises(DataFormatError) as e:
        read_all(path)
    assert (e.value.path, e.value.line, e.value.field) == (str(path), 3, field)
    assert f"{path}:3:" in str(e.value) and f"field {field}" in str(e.value)
    assert e.value.expected and e.value.found is not None


def test_valid_edge_values_are_accepted(tmp_path: Path) -> None:
    lines = [with_field(2, "-1"), with_field(1, ""), with_field(14, ""), with_field(20, "A0b"),
             with_field(4, "000123456789012345")]
    chunks = read_all(write(tmp_path / "in.txt", lines))
    c = chunks[0]
    assert c.rows == 5 and c.dense[0, 1] == -1 and np.isnan(c.dense[1, 0])
    assert c.missing[2, 0] and c.keys[3, 6] == 0xA0B and c.dense[4, 3] == 123456789012345


def test_skip_mode_counts_bad_lines_and_keeps_every_good_one(tmp_path: Path) -> None:
    lines, good = [], []
    for i in range(300):
        if i % 25 == 7:
            lines.append(BAD_CASES[(i // 25) % len(BAD_CASES)][1])
        else:
            lines.append(with_field(1, str(i)))
            good.append(i)
    path = write(tmp_path / "in.txt", lines)
    chunks = read_all(path, on_bad_line="skip", chunk_rows=16)
    assert sum(c.bad_count for c in chunks) == 12
    kept = np.concatenate([c.dense[:, 0] for c in chunks])
    assert kept.tolist() == good
    s = prepare_criteo([path], tmp_path / "ds", on_bad_line="skip", chunk_rows=16, progress=False)
    assert s.rows == len(good) and s.bad_lines == 12
    assert [b.line for b in s.bad_examples] == [i + 1 for i in range(300) if i % 25 == 7][:10]
    assert ColumnarDataset.open(tmp_path / "ds").manifest["bad_lines"]["count"] == 12


def test_truncated_and_garbage_gzip_are_errors_even_when_skipping(tmp_path: Path) -> None:
    data = gzip.compress(("\n".join([line()] * 2000) + "\n").encode())
    truncated = tmp_path / "trunc.gz"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.txt"  # no .gz: detection is by magic bytes
    garbage.write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(4000))
    for path in (truncated, garbage):
        with pytest.raises(DataFormatError, match="gzip") as e:
            read_all(path, on_bad_line="skip", chunk_rows=64)
        assert e.value.path == str(path) and e.value.line is not None


def test_gzip_input_gives_identical_dataset_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lines = [line(str(rng.integers(2)), [str(v) for v in rng.integers(-1, 50, 13)],
                  [f"{v:08x}" for v in rng.integers(0, 40, 26)]) for _ in range(500)]
    plain = write(tmp_path / "day_0", lines)
    gz = write(tmp_path / "day_0.gz", lines, gz=True)
    prepare_criteo([plain], tmp_path / "a", progress=False, chunk_rows=64)
    prepare_criteo([gz], tmp_path / "b", progress=False, chunk_rows=64)
    for f in ("label.bin", "dense.bin", "sparse.bin", "vocab/C1.npy", "vocab/C26.counts.npy"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    src = ColumnarDataset.open(tmp_path / "b").manifest["sources"][0]
    assert src["compression"] == "gzip" and src["bytes"] == gz.stat().st_size


def test_crlf_and_missing_final_newline(tmp_path: Path) -> None:
    lf = write(tmp_path / "lf.txt", [line(), line("1")])
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes((line() + "\r\n" + line("1")).encode())
    a, b = read_all(lf), read_all(crlf)
    for field in ("keys", "label", "dense"):
        assert np.array_equal(np.concatenate([getattr(c, field) for c in a]),
                              np.concatenate([getattr(c, field) for c in b])), field


def test_error_midway_leaves_no_output_and_no_temp_dir(tmp_path: Path) -> None:
    path = write(tmp_path / "in.txt", [line()] * 500 + [with_field(0, "7")])
    out = tmp_path / "out" / "ds"
    for encoding, extra in (("vocab", {}), ("hash", {"buckets": 100})):
        with pytest.raises(DataFormatError):
            prepare_criteo([path], out, encoding=encoding, chunk_rows=32, progress=False, **extra)  # type: ignore[arg-type]
        assert not out.exists()
        leftovers = list(out.parent.iterdir()) if out.parent.exists() else []
        assert leftovers == []  # no .ds.tmp-<pid> either


def test_sources_record_size_and_sha256(tmp_path: Path) -> None:
    import hashlib

    path = write(tmp_path / "in.txt", [line()] * 10)
    prepare_criteo([path], tmp_path / "ds", progress=False)
    src = ColumnarDataset.open(tmp_path / "ds").manifest["sources"][0]
    assert src["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert src["bytes"] == path.stat().st_size


# ------------------------------------------------------------- fast path vs reference

_dense_tok = st.one_of(
    st.just(""), st.integers(-(10**19), 10**19).map(str),
    st.sampled_from(["-", "--1", "+1", "1.5", "1e3", " 1", "0x1", "-0", "007", "\u0663"]),
    st.text(alphabet="0123456789-a", max_size=21))
_hex_tok = st.one_of(
    st.just(""), st.integers(0, 2**32 - 1).map(lambda v: f"{v:08x}"),
    st.text(alphabet="0123456789abcdefABCDEFgx-:/@`G", min_size=1, max_size=10))
_label_tok = st.sampled_from(["0", "1", "2", "", "01", "a"])


@st.composite
def _lines(draw: st.DrawFn) -> str:
    fields = [draw(_label_tok), *[draw(_dense_tok) for _ in range(13)], *[draw(_hex_tok) for _ in range(26)]]
    n = draw(st.sampled_from([40] * 8 + [39, 41, 1]))
    fields = (fields + ["1"])[:n]
    return "\t".join(fields) + draw(st.sampled_from(["", "", "\r"]))


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_lines(), min_size=1, max_size=30), st.integers(1, 8))
def test_vectorized_parser_matches_reference(lines: list[str], chunk_rows: int) -> None:
    expected = []
    for ln in lines:
        with contextlib.suppress(DataFormatError):
            expected.append(parse_line(ln.encode()))
    with tempfile.TemporaryDirectory() as d:
        path = write(Path(d) / "in.txt", lines)
        chunks = read_all(path, on_bad_line="skip", chunk_rows=chunk_rows)
    assert sum(c.bad_count for c in chunks) == len(lines) - len(expected)
    got = [c for c in chunks if c.rows]
    label = np.concatenate([c.label for c in got]) if got else np.zeros(0)
    assert label.tolist() == [e[0] for e in expected]
    if got:
        dense = np.concatenate([c.dense for c in got])
        want = np.array([[np.nan if v is None else v for v in e[1]] for e in expected], np.float64)
        assert np.array_equal(dense, want, equal_nan=True)
        keys = np.where(np.concatenate([c.missing for c in got]), -1,
                        np.concatenate([c.keys for c in got]).astype(np.int64))
        assert keys.tolist() == [[-1 if v is None else v for v in e[2]] for e in expected]


def test_csv_given_as_criteo_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "clicks.csv"
    path.write_text("ip,app,clicked\n1,2,0\n")
    with pytest.raises(DataFormatError, match="schema") as e:
        prepare_criteo([path], tmp_path / "ds", progress=False)
    assert (e.value.line, e.value.field) == (1, "line")
