"""Generic CTR tables (CSV or Parquet) described by a small schema.

A schema names the label column, the categorical columns (one embedding table
each) and the dense columns; anything else in the file is ignored::

    label: is_attributed
    categorical: [ip, app, device, os, channel]
    dense: []                # may be empty (TalkingData has none)
    format: csv              # optional: csv | parquet; default by extension
    delimiter: ","           # optional, CSV only
    dense_transform: none    # optional: none | log1p (Criteo-style counts)

Categorical values are read as strings (an integer column becomes its decimal
text, so CSV and Parquet copies of a table encode alike) and keyed by a
64-bit blake2b fingerprint, computed once per *distinct* value of a chunk.
Empty/null -> missing. Dense: numbers, empty/null -> missing (0 after the
transform), anything else is a bad row. Label: 0 or 1 (also 0.0/1.0 or a Parquet
boolean); missing or anything else is a bad row.

Line numbers in errors: CSV rows count from line 2 (line 1 is the header;
assumes no quoted newlines); Parquet rows count from 1.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import yaml

from hotpipe.data.criteo import SourceStream
from hotpipe.data.encoding import BadLine, RawChunk
from hotpipe.errors import ConfigError, DataFormatError

_NUMBER = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"
_BLANK = r"^\s*$"
_MAX_EXAMPLES = 10
_FORMATS = ("csv", "parquet")
_TRANSFORMS = ("none", "log1p")


@dataclass(frozen=True)
class TabularSchema:
    """Which columns of a CSV/Parquet file are the label, tables and dense features.

    Example:
        >>> s = TabularSchema.from_dict({"label": "y", "categorical": ["a", "b"]})
        >>> s.columns
        ('y', 'a', 'b')
    """

    label: str
    categorical: tuple[str, ...]
    dense: tuple[str, ...] = ()
    format: str | None = None  # None: .parquet/.pq -> parquet, anything else -> csv
    delimiter: str = ","
    dense_transform: str = "none"  # not log1p by default: generic dense may be negative

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.label, *self.categorical, *self.dense)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TabularSchema:
        """Build from a mapping; unknown keys, wrong types, duplicates raise ConfigError."""
        if not isinstance(d, Mapping):
            raise ConfigError("schema", f"expected a mapping, found {type(d).__name__}")
        allowed = set(cls.__dataclass_fields__)
        for key in d:
            if key not in allowed:
                raise ConfigError(f"schema.{key}", f"unknown key; allowed: {', '.join(sorted(allowed))}")
        for key in ("label", "categorical"):
            if key not in d:
                raise ConfigError(f"schema.{key}", "required")
        schema = cls(
            label=_name(d["label"], "label"),
            categorical=_names(d["categorical"], "categorical"),
            dense=_names(d.get("dense") or [], "dense"),
            format=_choice(d.get("format"), "format", _FORMATS, optional=True),
            delimiter=_delimiter(d.get("delimiter", ",")),
            dense_transform=_choice(d.get("dense_transform", "none"), "dense_transform", _TRANSFORMS) or "none",
        )
        if not schema.categorical:
            raise ConfigError("schema.categorical", "needs at least one column (one embedding table each)")
        seen: set[str] = set()
        for c in schema.columns:
            if c in seen:
                raise ConfigError("schema", f"column {c!r} is listed twice")
            seen.add(c)
        return schema

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TabularSchema:
        """Read a YAML (or JSON) schema file."""
        try:
            d = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError("schema", f"cannot read {path}: {e}") from e
        return cls.from_dict(d)

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def format_of(self, path: str | os.PathLike[str]) -> str:
        if self.format is not None:
            return self.format
        return "parquet" if Path(path).suffix.lower() in (".parquet", ".pq") else "csv"


def _name(v: Any, key: str) -> str:
    if not isinstance(v, str) or not v:
        raise ConfigError(f"schema.{key}", f"expected a column name, found {v!r}")
    return v


def _names(v: Any, key: str) -> tuple[str, ...]:
    if not isinstance(v, (list, tuple)):
        raise ConfigError(f"schema.{key}", f"expected a list of column names, found {v!r}")
    return tuple(_name(x, key) for x in v)


def _choice(v: Any, key: str, options: tuple[str, ...], optional: bool = False) -> str | None:
    if v is None and optional:
        return None
    if v not in options:
        raise ConfigError(f"schema.{key}", f"expected one of {', '.join(options)}, found {v!r}")
    return str(v)


def _delimiter(v: Any) -> str:
    if not isinstance(v, str) or len(v) != 1:
        raise ConfigError("schema.delimiter", f"expected one character, found {v!r}")
    return v


# ------------------------------------------------------------------- column decoding


def fingerprint(strings: list[str]) -> np.ndarray:
    """Stable 64-bit keys of strings: blake2b-64 of the UTF-8 bytes, (k,) uint64."""
    digests = b"".join(hashlib.blake2b(s.encode(), digest_size=8).digest() for s in strings)
    return np.frombuffer(digests, "<u8").astype(np.uint64)


def _numbers(col: pa.Array, path: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A label/dense column -> (values (n,) float64 with NaN for missing, invalid (n,) bool)."""
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        blank = pc.fill_null(pc.match_substring_regex(col, _BLANK), True)
        valid = pc.fill_null(pc.match_substring_regex(col, _NUMBER), False)
        invalid = ~(blank.to_numpy(zero_copy_only=False) | valid.to_numpy(zero_copy_only=False))
        col = pc.cast(pc.utf8_trim_whitespace(pc.if_else(valid, col, None)), pa.float64())
    elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        col = pc.cast(col, pa.float64())
        invalid = np.zeros(len(col), bool)
    else:
        raise DataFormatError("column has a type that is not a number", path=path, field=name,
                              expected="numbers (or text of numbers)", found=str(t))
    values = col.to_numpy(zero_copy_only=False).astype(np.float64)
    invalid |= np.isinf(values)
    return values, invalid


def _categorical(col: pa.Array, want_names: bool) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """A categorical column -> (keys (n,) uint64, missing (n,) bool, (fingerprints, strings) or None)."""
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        col = pc.cast(col, pa.string())
    enc = pc.dictionary_encode(col)
    strings = enc.dictionary.to_pylist()  # distinct values of this chunk only
    fps = fingerprint(strings)
    idx = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    missing = idx < 0
    if "" in strings:
        missing |= idx == strings.index("")
    keys = fps[np.maximum(idx, 0)] if fps.size else np.zeros(idx.shape, np.uint64)
    names = (fps, np.array(strings, dtype=str)) if want_names else None
    return keys, missing, names


def _to_chunk(batch: pa.RecordBatch, schema: TabularSchema, path: str, first_line: int,
              skip: bool, want_names: bool) -> RawChunk:
    """Validate and convert one record batch (n rows); see the module docstring."""
    n = batch.num_rows
    label, label_bad = _numbers(batch.column(schema.label), path, schema.label)
    label_bad |= (label != 0) & (label != 1)  # NaN (missing) is also != 0 and != 1
    dense = np.zeros((n, len(schema.dense)), np.float64)  # (n, D)
    bad = {schema.label: label_bad}
    for j, name in enumerate(schema.dense):
        dense[:, j], bad[name] = _numbers(batch.column(name), path, name)
    row_bad = np.logical_or.reduce(list(bad.values()))
    examples: tuple[BadLine, ...] = ()
    if row_bad.any():
        shown = np.flatnonzero(row_bad)[: _MAX_EXAMPLES if skip else 1]
        examples = tuple(_explain(batch, bad, schema, path, first_line, int(i)) for i in shown)
        if not skip:
            raise examples[0].to_error()
    good = ~row_bad
    keys = np.zeros((n, len(schema.categorical)), np.uint64)  # (n, T)
    missing = np.zeros(keys.shape, bool)
    names = []
    for t, name in enumerate(schema.categorical):
        keys[:, t], missing[:, t], table_names = _categorical(batch.column(name), want_names)
        names.append(table_names)
    return RawChunk(label=label[good].astype(np.float32), dense=dense[good], keys=keys[good],
                    missing=missing[good], bad_count=int(row_bad.sum()), bad=examples,
                    names=tuple(names) if want_names else None)  # type: ignore[arg-type]


def _explain(batch: pa.RecordBatch, bad: dict[str, np.ndarray], schema: TabularSchema,
             path: str, first_line: int, i: int) -> BadLine:
    name = next(c for c, b in bad.items() if b[i])
    expected = "0 or 1" if name == schema.label else "a finite number or empty"
    found = batch.column(name)[i].as_py()
    return BadLine(path, first_line + i, name, expected, "<missing>" if found is None else str(found)[:40])


# --------------------------------------------------------------------------- reading


def _check_columns(found: list[str], schema: TabularSchema, path: str) -> None:
    for c in schema.columns:
        if c not in found:
            raise DataFormatError(f"schema column {c!r} is not in the file", path=path, field=c,
                                  expected="a column of the file", found="columns: " + ", ".join(found))


def _csv_header(path: Path, delimiter: str) -> list[str]:
    """Column names from the first line (gzip sniffed like the data stream)."""
    with open(path, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if compressed else open
    with opener(path, "rb") as f:
        first = f.readline().decode("utf-8-sig", "replace")
    return next(csv.reader(io.StringIO(first), delimiter=delimiter), [])


class _RaggedRows:
    """pyarrow's invalid-row callback: rows with the wrong number of columns.

    pyarrow parses ahead and does not know the rows' line numbers, so skipped
    ragged rows are counted and shown by their text; in error mode the line is
    found afterwards by :func:`_find_ragged_line`.
    """

    def __init__(self, path: str, skip: bool) -> None:
        self.path, self.skip = path, skip
        self.count, self.examples = 0, []  # type: ignore[var-annotated]

    def __call__(self, row: Any) -> str:
        if not self.skip:
            return "error"
        self.count += 1
        if len(self.examples) < _MAX_EXAMPLES:
            self.examples.append(BadLine(self.path, row.number, "line", f"{row.expected_columns} columns",
                                         f"{row.actual_columns} columns: {row.text[:40]}"))
        return "skip"

    def drain(self, chunk: RawChunk) -> RawChunk:
        """Move the ragged rows seen so far into ``chunk``'s bad-line tally."""
        if not self.count:
            return chunk
        merged = replace(chunk, bad_count=chunk.bad_count + self.count,
                         bad=(*self.examples, *chunk.bad)[:_MAX_EXAMPLES])
        self.count, self.examples = 0, []
        return merged


def _find_ragged_line(path: Path, delimiter: str) -> tuple[int, int, int] | None:
    """(line, expected, found columns) of the first ragged row: an error-path-only rescan."""
    with open(path, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
    with (gzip.open if compressed else open)(path, "rt", newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f, delimiter=delimiter)
        width = len(next(reader, []))
        for row in reader:
            if row and len(row) != width:
                return reader.line_num, width, len(row)
    return None


def read_csv(stream: SourceStream, schema: TabularSchema, *, chunk_rows: int = 65536,
             on_bad_line: str = "error", want_names: bool = False) -> Iterator[RawChunk]:
    """Stream a CSV file (plain or gzip) with a header row as :class:`RawChunk` s."""
    path = str(stream.path)
    _check_columns(_csv_header(stream.path, schema.delimiter), schema, path)
    strings = {c: pa.string() for c in schema.columns}
    ragged = _RaggedRows(path, on_bad_line == "skip")
    try:
        reader = pcsv.open_csv(
            stream,
            read_options=pcsv.ReadOptions(block_size=max(1 << 20, chunk_rows * 64)),
            parse_options=pcsv.ParseOptions(delimiter=schema.delimiter, invalid_row_handler=ragged),
            # Everything as text: we validate numbers ourselves to name the bad row.
            convert_options=pcsv.ConvertOptions(include_columns=list(schema.columns), column_types=strings,
                                                strings_can_be_null=True))
        line = 2  # after skipped ragged rows, later line numbers are low by their count
        for batch in reader:
            yield ragged.drain(_to_chunk(batch, schema, path, line, ragged.skip, want_names))
            line += batch.num_rows
    except pa.ArrowInvalid as e:  # a ragged row (error mode) or broken quoting
        found = _find_ragged_line(stream.path, schema.delimiter)
        if found is None:
            raise DataFormatError("unparseable CSV", path=path, expected="a well-formed CSV file",
                                  found=str(e)[:200]) from e
        raise DataFormatError("malformed line", path=path, line=found[0], field="line",
                              expected=f"{found[1]} columns", found=f"{found[2]} columns") from e
    if ragged.count:
        yield ragged.drain(RawChunk(np.zeros(0, np.float32), np.zeros((0, len(schema.dense))),
                                    np.zeros((0, len(schema.categorical)), np.uint64),
                                    np.zeros((0, len(schema.categorical)), bool)))


def read_parquet(path: str | os.PathLike[str], schema: TabularSchema, *, chunk_rows: int = 65536,
                 on_bad_line: str = "error", want_names: bool = False) -> Iterator[RawChunk]:
    """Stream a Parquet file batch by batch as :class:`RawChunk` s."""
    p = str(path)
    try:
        pf = pq.ParquetFile(p)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataFormatError("not a readable Parquet file", path=p, expected="a Parquet file",
                              found=str(e)[:200]) from e
    _check_columns(pf.schema_arrow.names, schema, p)
    line = 1
    for batch in pf.iter_batches(batch_size=chunk_rows, columns=list(schema.columns)):
        yield _to_chunk(batch, schema, p, line, on_bad_line == "skip", want_names)
        line += batch.num_rows
