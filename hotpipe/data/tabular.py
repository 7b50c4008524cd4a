"""Generic CTR tables (CSV or Parquet) described by a schema (see ``schema.py``).

Categorical values are read as strings (an integer column becomes its decimal
text, so CSV and Parquet copies of a table encode alike) and keyed by a
64-bit blake2b fingerprint, computed once per *distinct* value of a chunk.
A value listed in the schema's ``na_values`` (default: only the empty
string) is missing; nothing else is (pyarrow's own list, which turns ``NA``,
``null``, ``nan`` into missing, is not used). Dense: numbers, missing -> 0
after the transform, anything else is a bad row. Label: by the schema's rule;
missing or fitting no rule is a bad row.

The file's shape (delimiter, header, the error-path rescan) is ``csv_shape.py``'s.
Line numbers in errors: one row per line (quoted newlines are not supported,
and an unclosed quote is reported at its own line); the first data line is
``skip_rows + 2`` with a header, ``skip_rows + 1`` with ``columns``. Parquet
rows count from 1.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from hotpipe.data.criteo import SourceStream
from hotpipe.data.csv_shape import LineCounter, ascii_compatible, diagnose, layout, sniff_delimiter
from hotpipe.data.encoding import BadLine, ListChunk, RawChunk
from hotpipe.data.schema import LabelRule, ListColumn, TabularSchema
from hotpipe.errors import DataFormatError

__all__ = ["TabularSchema", "LabelRule", "read_csv", "read_parquet", "fingerprint", "sniff_delimiter"]

_NUMBER = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"
_BLANK = r"^\s*$"
_MAX_EXAMPLES = 10


def fingerprint(strings: list[str]) -> np.ndarray:
    """Stable 64-bit keys of strings: blake2b-64 of the UTF-8 bytes, (k,) uint64."""
    digests = b"".join(hashlib.blake2b(s.encode(), digest_size=8).digest() for s in strings)
    return np.frombuffer(digests, "<u8").astype(np.uint64)


# ------------------------------------------------------------------- column decoding


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _na_to_null(col: pa.Array, na: tuple[str, ...]) -> pa.Array:
    """Strings listed in ``na_values`` -> null (pyarrow's CSV reader did it already; Parquet not)."""
    if not _is_text(col.type) or not na:
        return col
    return pc.if_else(pc.is_in(col, value_set=pa.array(na, col.type)), pa.scalar(None, col.type), col)


def _numbers(col: pa.Array, path: str, name: str, blank_is_missing: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A label/dense column -> (values (n,) float64 with NaN for missing, invalid (n,) bool)."""
    t = col.type
    if _is_text(t):
        blank = pc.fill_null(pc.match_substring_regex(col, _BLANK), True) if blank_is_missing else pc.is_null(col)
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


def _label(col: pa.Array, rule: LabelRule, path: str) -> tuple[np.ndarray, np.ndarray]:
    """The label column -> (labels (n,) float32 in {0, 1}, bad (n,) bool) by the schema's rule."""
    if rule.kind in ("binary", "threshold"):
        values, bad = _numbers(col, path, rule.column)
        bad |= np.isnan(values)  # a missing label is never a negative
        if rule.kind == "binary":
            bad |= (values != 0) & (values != 1)
            return np.where(bad, 0, values).astype(np.float32), bad
        with np.errstate(invalid="ignore"):
            return (values >= rule.threshold).astype(np.float32), bad
    text = pc.utf8_trim_whitespace(col if _is_text(col.type) else pc.cast(col, pa.string()))
    missing = pc.is_null(text).to_numpy(zero_copy_only=False)
    if rule.kind == "positive":
        pos = pc.fill_null(pc.is_in(text, value_set=pa.array(rule.positive, pa.string())), False)
        label = pos.to_numpy(zero_copy_only=False)
        bad = missing.copy()
        if rule.negative is not None:
            neg = pc.fill_null(pc.is_in(text, value_set=pa.array(rule.negative, pa.string())), False)
            bad |= ~(label | neg.to_numpy(zero_copy_only=False))
        return label.astype(np.float32), bad
    keys = [k for k, _ in rule.mapping]
    idx = pc.index_in(text, value_set=pa.array(keys, pa.string()))
    bad = pc.is_null(idx).to_numpy(zero_copy_only=False)
    vals = np.array([v for _, v in rule.mapping], np.float32)
    return vals[pc.fill_null(idx, 0).to_numpy(zero_copy_only=False)], bad


def _categorical(col: pa.Array, want_names: bool) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """A categorical column -> (keys (n,) uint64, missing (n,) bool, (fingerprints, strings) or None)."""
    if not _is_text(col.type):
        col = pc.cast(col, pa.string())
    enc = pc.dictionary_encode(col)
    strings = enc.dictionary.to_pylist()  # distinct values of this chunk only
    fps = fingerprint(strings)
    idx = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    missing = idx < 0
    keys = fps[np.maximum(idx, 0)] if fps.size else np.zeros(idx.shape, np.uint64)
    names = (fps, np.array(strings, dtype=str)) if want_names else None
    return keys, missing, names


def _lists(col: pa.Array, spec: ListColumn) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray]:
    """A list column -> (items as text (V,), lengths (n,) int64, parent row of each item (V,),
    bad (n,) bool: a row with an empty or null item). Null/empty fields are empty lists."""
    t = col.type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        lists = col
    else:  # text (CSV, or a Parquet string column): split at sep
        lists = pc.split_pattern(col if _is_text(t) else pc.cast(col, pa.string()), spec.sep)
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    items = pc.list_flatten(lists)
    parent = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    if not _is_text(items.type):
        items = pc.cast(items, pa.string())
    items = pc.utf8_trim_whitespace(items)
    empty = pc.fill_null(pc.equal(items, ""), True).to_numpy(zero_copy_only=False)  # null or "" item
    bad = np.bincount(parent[empty], minlength=len(col)) > 0
    return items, lengths, parent, bad


def _keep_lists(items: pa.Array, lengths: np.ndarray, parent: np.ndarray, good: np.ndarray,
                spec: ListColumn, want_names: bool) -> ListChunk:
    """The good rows' lists, each capped at ``spec.max_len`` (keeping its first or last items)."""
    starts = np.cumsum(lengths) - lengths  # (n,)
    pos = np.arange(parent.shape[0]) - starts[parent]  # (V,) index of each item in its list
    m = spec.max_len
    in_cap = pos < m if spec.keep == "first" else pos >= lengths[parent] - m
    keep = good[parent] & in_cap
    kept_lengths = np.minimum(lengths, m)[good]
    keys, _, names = _categorical(items.filter(pa.array(keep)), want_names)
    return ListChunk(kept_lengths, keys, names, int((lengths[good] > m).sum()))


def _order_key(col: pa.Array, path: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``sort_by`` column -> (keys (n,) float64, bad (n,) bool): numbers or ISO-8601 times."""
    if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
        ts = pc.cast(pc.cast(col, pa.timestamp("ns")), pa.int64())
        return ts.to_numpy(zero_copy_only=False).astype(np.float64), pc.is_null(ts).to_numpy(zero_copy_only=False)
    values, bad = _numbers(col, path, name, blank_is_missing=False)
    bad |= np.isnan(values)
    if bad.any() and _is_text(col.type):
        try:  # times as text: one vectorized cast when every value parses
            ts = pc.cast(pc.cast(col, pa.timestamp("ns")), pa.int64())
            return ts.to_numpy(zero_copy_only=False).astype(np.float64), pc.is_null(ts).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return _order_key_slowly(col.to_pylist())
    return values, bad


def _order_key_slowly(texts: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """Error path of :func:`_order_key`: value by value, so only the bad rows are bad."""
    from datetime import datetime, timezone

    keys, bad = np.zeros(len(texts)), np.zeros(len(texts), bool)
    for i, t in enumerate(texts):
        try:
            keys[i] = float(t)  # type: ignore[arg-type]
            continue
        except (TypeError, ValueError):
            pass
        try:
            d = datetime.fromisoformat(str(t).strip())
            keys[i] = (d if d.tzinfo else d.replace(tzinfo=timezone.utc)).timestamp() * 1e9
        except ValueError:
            bad[i] = True
    return keys, bad


def _to_chunk(batch: pa.RecordBatch, schema: TabularSchema, path: str, first_line: int,
              skip: bool, want_names: bool) -> RawChunk:
    """Validate and convert one record batch (n rows); see the module docstring."""
    n = batch.num_rows
    cols = {c: _na_to_null(batch.column(c), schema.na_values) for c in schema.columns}
    blank = "" in schema.na_values
    label, label_bad = _label(cols[schema.label], schema.label_rule, path)
    dense = np.zeros((n, len(schema.dense)), np.float64)  # (n, D)
    bad = {schema.label: label_bad}
    for j, name in enumerate(schema.dense):
        dense[:, j], bad[name] = _numbers(cols[name], path, name, blank)
    list_of = schema.list_of
    parsed = {}
    for name, spec in list_of.items():
        parsed[name] = _lists(cols[name], spec)
        bad[name] = parsed[name][3]
    order_key = None
    if schema.sort_by is not None:
        order_key, bad_key = _order_key(cols[schema.sort_by], path, schema.sort_by)
        bad[schema.sort_by] = bad.get(schema.sort_by, np.zeros(n, bool)) | bad_key
    row_bad = np.logical_or.reduce(list(bad.values()))
    examples: tuple[BadLine, ...] = ()
    if row_bad.any():
        shown = np.flatnonzero(row_bad)[: _MAX_EXAMPLES if skip else 1]
        examples = tuple(_explain(cols, bad, schema, path, first_line, int(i)) for i in shown)
        if not skip:
            raise examples[0].to_error()
    good = ~row_bad
    one_hot = [c for c in schema.categorical if c not in list_of]
    keys = np.zeros((n, len(one_hot)), np.uint64)  # (n, T one-hot)
    missing = np.zeros(keys.shape, bool)
    names = []
    for t, name in enumerate(one_hot):
        keys[:, t], missing[:, t], table_names = _categorical(cols[name], want_names)
        names.append(table_names)
    lists = tuple(_keep_lists(parsed[c][0], parsed[c][1], parsed[c][2], good, list_of[c], want_names)
                  for c in schema.categorical if c in list_of)
    return RawChunk(label=label[good].astype(np.float32), dense=dense[good], keys=keys[good],
                    missing=missing[good], bad_count=int(row_bad.sum()), bad=examples,
                    names=tuple(names) if want_names else None,  # type: ignore[arg-type]
                    order_key=None if order_key is None else order_key[good], lists=lists)


def _explain(cols: dict[str, pa.Array], bad: dict[str, np.ndarray], schema: TabularSchema,
             path: str, first_line: int, i: int) -> BadLine:
    name = next(c for c, b in bad.items() if b[i])
    if name == schema.label:
        expected = schema.label_rule.describe()
    elif name in schema.list_of:
        expected = f"a list of values separated by {schema.list_of[name].sep!r}, no item empty"
    elif name == schema.sort_by:
        expected = "a number or an ISO-8601 time (sort_by)"
    else:
        expected = "a finite number or missing"
    found = cols[name][i].as_py()
    if schema.file_columns is not None and found == name:
        expected += " (this line looks like a header: add `skip_rows: 1` to the schema)"
    return BadLine(path, first_line + i, name, expected, "<missing>" if found is None else str(found)[:40])


class _RaggedRows:
    """pyarrow's invalid-row callback: rows with the wrong number of columns.

    pyarrow parses ahead and does not know the rows' line numbers, so skipped
    ragged rows are counted and shown by their text; in error mode the line is
    found afterwards by :func:`_diagnose`.
    """

    def __init__(self, path: str, skip: bool) -> None:
        self.path, self.skip = path, skip
        self.count, self.total, self.examples = 0, 0, []  # type: ignore[var-annotated]

    def __call__(self, row: Any) -> str:
        if not self.skip:
            return "error"
        self.count += 1
        self.total += 1
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


def _empty_chunk(schema: TabularSchema) -> RawChunk:
    t = len(schema.categorical) - len(schema.lists)
    return RawChunk(np.zeros(0, np.float32), np.zeros((0, len(schema.dense))), np.zeros((0, t), np.uint64),
                    np.zeros((0, t), bool), order_key=np.zeros(0) if schema.sort_by else None,
                    lists=tuple(ListChunk(np.zeros(0, np.int64), np.zeros(0, np.uint64)) for _ in schema.lists))


# --------------------------------------------------------------------------- reading


def read_csv(stream: SourceStream, schema: TabularSchema, *, chunk_rows: int = 65536,
             on_bad_line: str = "error", want_names: bool = False) -> Iterator[RawChunk]:
    """Stream a CSV file (plain or gzip; header or ``columns``) as :class:`RawChunk` s."""
    path = str(stream.path)
    delim, names, first = layout(stream.path, schema)
    stream.delimiter = delim  # recorded in the manifest's sources
    ragged = _RaggedRows(path, on_bad_line == "skip")
    counter = LineCounter(stream)
    rows = 0
    try:
        reader = pcsv.open_csv(
            counter,
            read_options=pcsv.ReadOptions(block_size=max(1 << 20, chunk_rows * 64), skip_rows=schema.skip_rows,
                                          column_names=list(schema.file_columns) if schema.file_columns else None,
                                          encoding=schema.encoding),
            parse_options=pcsv.ParseOptions(delimiter=delim, invalid_row_handler=ragged),
            # Everything as text: we validate numbers ourselves to name the bad row.
            convert_options=pcsv.ConvertOptions(include_columns=list(schema.columns),
                                                column_types={c: pa.string() for c in schema.columns},
                                                null_values=list(schema.na_values), strings_can_be_null=True))
        line = first  # after skipped ragged rows, later line numbers are low by their count
        for batch in reader:
            yield ragged.drain(_to_chunk(batch, schema, path, line, ragged.skip, want_names))
            line += batch.num_rows
            rows += batch.num_rows
    except pa.ArrowInvalid as e:  # a ragged row (error mode), broken quoting or bad text
        found = diagnose(stream.path, schema, delim, len(names), first)
        if found is None:
            raise DataFormatError("unparseable CSV", path=path, expected="a well-formed CSV file",
                                  found=str(e)[:200]) from e
        raise found from e
    expected = counter.lines - (first - 1)
    if rows + ragged.total != expected and ascii_compatible(schema.encoding):
        # Fewer rows than lines: a quote swallowed line ends. Name the line it opened on.
        found = diagnose(stream.path, schema, delim, len(names), first)
        if found is not None:
            raise found
    if ragged.count:
        yield ragged.drain(_empty_chunk(schema))


def read_parquet(path: str | os.PathLike[str], schema: TabularSchema, *, chunk_rows: int = 65536,
                 on_bad_line: str = "error", want_names: bool = False) -> Iterator[RawChunk]:
    """Stream a Parquet file batch by batch as :class:`RawChunk` s."""
    p = str(path)
    try:
        pf = pq.ParquetFile(p)
    except PermissionError as e:
        from hotpipe.errors import ResourceError

        raise ResourceError(f"{p}: permission denied (cannot read the input file)") from e
    except (pa.ArrowInvalid, OSError) as e:
        raise DataFormatError("not a readable Parquet file", path=p, expected="a Parquet file",
                              found=str(e)[:200]) from e
    found = pf.schema_arrow.names
    for c in schema.columns:
        if c not in found:
            raise DataFormatError(f"schema column {c!r} is not in the file", path=p, field=c,
                                  expected="a column of the file", found="columns: " + ", ".join(found))
    line = 1
    for batch in pf.iter_batches(batch_size=chunk_rows, columns=list(schema.columns)):
        yield _to_chunk(batch, schema, p, line, on_bad_line == "skip", want_names)
        line += batch.num_rows
