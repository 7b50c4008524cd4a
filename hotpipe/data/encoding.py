"""Turning raw field values into embedding rows and dense floats.

Every reader (Criteo TSV, CSV, Parquet) produces :class:`RawChunk` s: labels,
raw dense values with NaN for missing, and one 64-bit *key* per categorical
field (the Criteo hex value itself, or a blake2b fingerprint of a CSV/Parquet
string) with a missing mask. The encoders here map keys to rows of each
table; they never see files.

Row layout of each table::

    vocab:  row 0 = out-of-vocabulary (seen < min_count times, or unseen)
            row 1 = missing
            row 2.. = kept values by descending count, ties by ascending key
    hash:   row 0 = missing
            row 1 + mix64(key ^ salt[t]) % (buckets[t] - 1) otherwise

``mix64`` is the MurmurHash3 64-bit finalizer: fixed, unsalted and the same on
every platform, unlike Python's ``hash()``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hotpipe.errors import ConfigError, DataFormatError

OOV_ROW = 0
MISSING_ROW = 1  # vocab encoding
HASH_MISSING_ROW = 0
_FIRST_VALUE_ROW = 2


@dataclass(frozen=True)
class BadLine:
    """One rejected input line (or row), kept for the bad-line summary."""

    path: str
    line: int | None  # 1-based; None where the parser cannot tell (a skipped ragged CSV row)
    field: str
    expected: str
    found: str

    def reason(self) -> str:
        return f"{self.field}: expected {self.expected}, found {self.found!r}"

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "field": self.field, "reason": self.reason()}

    def to_error(self) -> DataFormatError:
        return DataFormatError("malformed line", path=self.path, line=self.line, field=self.field,
                               expected=self.expected, found=self.found)


@dataclass(frozen=True)
class ListChunk:
    """One list column of a chunk (a multi-hot table), already capped at its ``max_len``.

    Attributes:
        lengths: (n,) int64 items per row (0: an empty list).
        keys: (lengths.sum(),) uint64 the items' keys, row after row, in list order.
        names: (fingerprints, strings) of the items seen, as ``RawChunk.names``.
        truncated: rows of this chunk whose list was longer than ``max_len``.
    """

    lengths: np.ndarray
    keys: np.ndarray
    names: tuple[np.ndarray, np.ndarray] | None = None
    truncated: int = 0


@dataclass(frozen=True)
class RawChunk:
    """A chunk of parsed, validated, not yet encoded samples.

    Attributes:
        label: (n,) float32 in {0, 1}.
        dense: (n, D) float64 raw values, NaN where missing.
        keys: (n, T) uint64 categorical keys (meaningless where ``missing``); with
            list columns, T counts the one-hot tables only.
        missing: (n, T) bool.
        bad_count: lines of this chunk skipped as malformed.
        bad: the first few of those, with reasons.
        names: per table, (fingerprints (k,) uint64, strings (k,)) of the
            values seen in this chunk, when keys are fingerprints of strings;
            lets a vocabulary be inverted to the original strings.
        order_key: (n,) float64 sort key of each row (schema ``sort_by``), or None.
        lists: the list columns (multi-hot tables), in table order.
    """

    label: np.ndarray
    dense: np.ndarray
    keys: np.ndarray
    missing: np.ndarray
    bad_count: int = 0
    bad: tuple[BadLine, ...] = ()
    names: tuple[tuple[np.ndarray, np.ndarray], ...] | None = None
    order_key: np.ndarray | None = None
    lists: tuple[ListChunk, ...] = ()

    @property
    def rows(self) -> int:
        return int(self.label.shape[0])


def mix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer, elementwise; a bijection on uint64."""
    x = np.asarray(x).astype(np.uint64, copy=True)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xC4CEB9FE1A85EC53)
    x ^= x >> np.uint64(33)
    return x


def dense_log1p(raw: np.ndarray) -> np.ndarray:
    """Criteo's dense transform: log(1 + max(x, 0)), missing (NaN) -> 0.

    Args:
        raw: (n, D) float64, NaN where missing.
    Returns:
        (n, D) float32.
    """
    with np.errstate(invalid="ignore"):  # NaN comparisons are the missing ones
        clipped = np.where(raw > 0, raw, 0.0)
    return np.log1p(clipped).astype(np.float32)


def dense_identity(raw: np.ndarray) -> np.ndarray:
    """Dense values as they are, missing (NaN) -> 0; (n, D) float64 -> float32."""
    return np.nan_to_num(raw, nan=0.0).astype(np.float32)


@dataclass(frozen=True)
class EncodingSpec:
    """The user's choice of categorical encoding.

    Attributes:
        kind: ``"vocab"`` or ``"hash"``.
        min_count: vocab only; values seen fewer times share the OOV row.
        buckets: hash only; rows per table, one int for all or one per table.
    """

    kind: str = "vocab"
    min_count: int = 1
    buckets: int | tuple[int, ...] | None = None

    def validate(self, num_tables: int) -> tuple[int, ...] | None:
        """Raise ConfigError on a bad spec; return per-table buckets for hash."""
        if self.kind not in ("vocab", "hash"):
            raise ConfigError("encoding", f"expected 'vocab' or 'hash', found {self.kind!r}")
        if self.kind == "vocab":
            if isinstance(self.min_count, bool) or not isinstance(self.min_count, int) or self.min_count < 1:
                raise ConfigError("min_count", f"expected an integer >= 1, found {self.min_count!r}")
            if self.buckets is not None:
                raise ConfigError("buckets", "only applies to encoding 'hash'")
            return None
        if self.buckets is None:
            raise ConfigError("buckets", "encoding 'hash' needs the number of rows per table")
        per = (self.buckets,) * num_tables if isinstance(self.buckets, int) else tuple(self.buckets)
        if len(per) != num_tables:
            raise ConfigError("buckets", f"expected 1 or {num_tables} values, found {len(per)}")
        for b in per:
            # Row 0 is reserved for missing, so 2 is the smallest useful table.
            if isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= 2**31 - 1:
                raise ConfigError("buckets", f"expected integers in [2, 2^31 - 1], found {b!r}")
        return per

    def to_manifest(self, num_tables: int) -> dict[str, Any]:
        if self.kind == "vocab":
            return {"kind": "vocab", "min_count": self.min_count, "oov_row": OOV_ROW,
                    "missing_row": MISSING_ROW, "dir": "vocab"}
        return {"kind": "hash", "buckets": list(self.validate(num_tables) or ()),
                "missing_row": HASH_MISSING_ROW, "hash": "1 + murmur3_fmix64(key ^ salt[t]) % (buckets - 1)"}


def _salt(t: int) -> np.uint64:
    # Per-table salts stop two values that collide in one table from colliding in all.
    return np.uint64((0x9E3779B97F4A7C15 * (t + 1)) & 0xFFFFFFFFFFFFFFFF)


class HashEncoder:
    """Stateless: key -> 1 + mix64(key ^ salt[t]) % (buckets[t] - 1); missing -> row 0."""

    def __init__(self, buckets: Sequence[int]) -> None:
        self.buckets = tuple(int(b) for b in buckets)
        self._mods = np.array([b - 1 for b in self.buckets], dtype=np.uint64)  # (T,)
        self._salts = np.array([_salt(t) for t in range(len(self.buckets))], dtype=np.uint64)

    @property
    def cardinalities(self) -> list[int]:
        return list(self.buckets)

    def encode(self, keys: np.ndarray, missing: np.ndarray, tables: Sequence[int] | None = None) -> np.ndarray:
        """keys (n, T) uint64, missing (n, T) bool -> rows (n, T) int32; column j is table
        ``tables[j]`` (default: all tables in order)."""
        idx = list(range(len(self.buckets))) if tables is None else list(tables)
        rows = (mix64(keys ^ self._salts[idx]) % self._mods[idx] + np.uint64(1)).astype(np.int32)
        rows[missing] = HASH_MISSING_ROW
        return rows


class _CountTable:
    """Exact value counts of one field, merged in numpy (no per-value Python).

    Chunk-level ``np.unique`` results are buffered and merged into the sorted
    totals only when the buffer outgrows them, so the total merge cost stays
    O(N log N) however many chunks arrive.
    """

    def __init__(self) -> None:
        self.keys = np.zeros(0, np.uint64)  # sorted, unique
        self.counts = np.zeros(0, np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_len = 0

    def add(self, values: np.ndarray) -> None:
        keys, counts = np.unique(values, return_counts=True)
        self._pending.append((keys, counts.astype(np.int64)))
        self._pending_len += keys.shape[0]
        if self._pending_len > max(self.keys.shape[0], 1 << 20):
            self.merge()

    def merge(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self.keys, *(k for k, _ in self._pending)])
        counts = np.concatenate([self.counts, *(c for _, c in self._pending)])
        self._pending, self._pending_len = [], 0
        if keys.shape[0] == 0:
            return
        order = np.argsort(keys, kind="stable")
        keys, counts = keys[order], counts[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        self.keys, self.counts = keys[starts], np.add.reduceat(counts, starts)


class VocabBuilder:
    """Streaming first pass of the vocab encoding: exact per-field counts.

    Memory is bounded by the number of distinct values, not by the rows.

    Example:
        >>> b = VocabBuilder(["C1"])
        >>> b.update(np.array([[7], [7], [9]], np.uint64), np.zeros((3, 1), bool))
        >>> b.build(min_count=2).tables[0].keys
        array([7], dtype=uint64)
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self._tables = [_CountTable() for _ in names]
        self.missing = np.zeros(len(names), np.int64)  # missing values per field
        self._strings: list[dict[int, str]] | None = None

    def update(self, keys: np.ndarray, missing: np.ndarray,
               names: tuple[tuple[np.ndarray, np.ndarray], ...] | None = None,
               tables: Sequence[int] | None = None) -> None:
        """Count one chunk: keys (n, T) uint64, missing (n, T) bool; column j is table
        ``tables[j]`` (default: all tables in order)."""
        idx = list(range(len(self._tables))) if tables is None else list(tables)
        self.missing[idx] += missing.sum(axis=0)
        for j, t in enumerate(idx):
            self._tables[t].add(keys[~missing[:, j], j])
        if names is not None:
            self._remember_strings(names, idx)

    def _remember_strings(self, names: tuple[tuple[np.ndarray, np.ndarray], ...], idx: list[int]) -> None:
        # Per distinct value of the chunk, not per row: bounded like the counts.
        if self._strings is None:
            self._strings = [{} for _ in self.names]
        for t, (fps, strings) in zip(idx, names, strict=True):
            seen = self._strings[t]
            for fp, s in zip(fps.tolist(), strings.tolist(), strict=True):
                prev = seen.setdefault(fp, s)
                if prev != s:
                    raise DataFormatError(
                        "two values share a 64-bit fingerprint; use encoding 'hash'",
                        field=self.names[t], expected="distinct fingerprints", found=f"{prev!r} and {s!r}")

    def build(self, min_count: int = 1) -> Vocabulary:
        tables = []
        for t, table in enumerate(self._tables):
            table.merge()
            keep = table.counts >= min_count
            keys, counts = table.keys[keep], table.counts[keep]
            order = np.lexsort((keys, -counts))  # descending count, ties by key
            strings = None
            if self._strings is not None:
                strings = np.array([self._strings[t][k] for k in keys[order].tolist()], dtype=str)
            tables.append(VocabTable(self.names[t], keys[order], counts[order], strings))
        return Vocabulary(tables, min_count)


@dataclass
class VocabTable:
    """One field's vocabulary; ``keys[i]`` is row ``i + 2``.

    Attributes:
        name: the field.
        keys: (V,) uint64 kept keys in row order.
        counts: (V,) int64 their counts in the data the vocabulary was built on.
        strings: (V,) str, the original values when keys are fingerprints.
    """

    name: str
    keys: np.ndarray
    counts: np.ndarray
    strings: np.ndarray | None = None
    _sorted: np.ndarray = field(init=False, repr=False)
    _rows: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        order = np.argsort(self.keys, kind="stable")
        self._sorted = self.keys[order]
        self._rows = (order + _FIRST_VALUE_ROW).astype(np.int32)

    @property
    def cardinality(self) -> int:
        return int(self.keys.shape[0]) + _FIRST_VALUE_ROW

    def encode(self, keys: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """keys (n,) uint64, missing (n,) bool -> rows (n,) int32."""
        if self._sorted.shape[0] == 0:
            rows = np.full(keys.shape, OOV_ROW, np.int32)
        else:
            pos = np.minimum(np.searchsorted(self._sorted, keys), self._sorted.shape[0] - 1)
            rows = np.where(self._sorted[pos] == keys, self._rows[pos], OOV_ROW).astype(np.int32)
        rows[missing] = MISSING_ROW
        return rows

    def decode(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """rows (n,) -> (keys (n,) uint64, is_value (n,) bool); OOV/missing rows give is_value False."""
        rows = np.asarray(rows)
        is_value = rows >= _FIRST_VALUE_ROW
        idx = np.where(is_value, rows - _FIRST_VALUE_ROW, 0)
        keys = self.keys[idx] if self.keys.shape[0] else np.zeros(rows.shape, np.uint64)
        return keys, is_value


@dataclass
class Vocabulary:
    """Per-field vocabularies; saved as ``DIR/vocab/<field>.npy`` (+ counts, strings)."""

    tables: list[VocabTable]
    min_count: int = 1

    @property
    def cardinalities(self) -> list[int]:
        return [t.cardinality for t in self.tables]

    def encode(self, keys: np.ndarray, missing: np.ndarray, tables: Sequence[int] | None = None) -> np.ndarray:
        """keys (n, T) uint64, missing (n, T) bool -> rows (n, T) int32; column j is table
        ``tables[j]`` (default: all tables in order)."""
        idx = range(len(self.tables)) if tables is None else tables
        out = np.empty(keys.shape, np.int32)
        for j, t in enumerate(idx):
            out[:, j] = self.tables[t].encode(keys[:, j], missing[:, j])
        return out

    def save(self, directory: str | os.PathLike[str]) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for t in self.tables:
            np.save(d / f"{t.name}.npy", t.keys)
            np.save(d / f"{t.name}.counts.npy", t.counts)
            if t.strings is not None:
                np.save(d / f"{t.name}.values.npy", t.strings)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], names: Sequence[str],
             min_count: int = 1) -> Vocabulary:
        d = Path(directory)
        tables = []
        for name in names:
            path = d / f"{name}.npy"
            if not path.is_file():
                raise DataFormatError("vocabulary file missing", path=str(path),
                                      expected=f"vocab/{name}.npy written by `hotpipe prepare`", found="no file")
            strings_path = d / f"{name}.values.npy"
            strings = np.load(strings_path) if strings_path.is_file() else None
            tables.append(VocabTable(name, np.load(path), np.load(d / f"{name}.counts.npy"), strings))
        return cls(tables, min_count)
