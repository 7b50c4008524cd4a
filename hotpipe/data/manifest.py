"""The columnar format's constants and its manifest, validated key by key.

One owner for the on-disk facts (file names, dtypes, manifest keys): the
reader (:class:`~hotpipe.data.columnar.ColumnarDataset`) and the writer
(:class:`~hotpipe.data.columnar.ColumnarWriter`) both ask this module.

Manifest keys (``DIR/manifest.json``)::

    format, version     "hotpipe-columnar", 1
    rows                N, an integer >= 0
    num_dense           D, an integer >= 0
    tables              [{name, cardinality, min_id, max_id[, bag]}, ...]; min_id/max_id
                        are the smallest and largest id written (absent in
                        datasets written before integrity checks; null when N = 0).
                        ``bag`` marks a multi-hot table (a list column):
                        {values, offsets, count, max_len, truncated, empty}
    columns             {label|dense|sparse: {file, dtype, shape}}; sparse holds
                        the one-hot tables only, in table order

Multi-hot tables (``bag``) live beside the fixed-width columns, one pair of
files per table, CSR-style (row ``r``'s ids are ``values[offsets[r]:offsets[r+1]]``,
in the order they were written)::

    DIR/bags/<k>.values.bin   (V,)    int32  ids of every row's list, row after row
    DIR/bags/<k>.offsets.bin  (N+1,)  int64  offsets[0] = 0, offsets[N] = V

``k`` counts the multi-hot tables in table order. ``max_len`` is the cap
applied when the data was written (longer lists were truncated, ``truncated``
of them); ``empty`` counts rows whose list is empty (allowed: they pool to a
zero vector).
    checksums           {algorithm: "sha256", quick_bytes,
                         files: {relative path: {bytes, sha256, quick}}}
                        (absent in old datasets: they open as "unverified")
    fingerprint         sha256 of rows, num_dense, tables, the file digests and
                        the val split's fingerprint: names this exact dataset
    val                 {dir: "val", rows, fingerprint, oov: {table: count}, sources}
                        when prepared with --val (the split is a sub-dataset)
    encoding, sources, bad_lines, ...   descriptive, not validated here
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hotpipe.errors import DataFormatError

FORMAT = "hotpipe-columnar"
VERSION = 1
DTYPES = {"label": np.float32, "dense": np.float32, "sparse": np.int32}
BAG_VALUES_DTYPE, BAG_OFFSETS_DTYPE = np.int32, np.int64
COLUMN_FILES = {name: f"{name}.bin" for name in DTYPES}
MAX_CARDINALITY = 2**31 - 1  # ids are int32 on disk
VAL_DIR = "val"
_MISSING = object()


@dataclass(frozen=True)
class TableSpec:
    """One embedding table: its name and number of rows (ids are ``0 .. cardinality - 1``).

    ``max_len > 0`` marks a multi-hot table (each sample holds a list of up
    to ``max_len`` ids, stored as bags); 0 is an ordinary one-hot table.
    """

    name: str
    cardinality: int
    max_len: int = 0

    @property
    def multi_hot(self) -> bool:
        return self.max_len > 0


def bag_files(k: int) -> tuple[str, str]:
    """Relative paths of the ``k``-th multi-hot table's values and offsets files."""
    return f"bags/{k}.values.bin", f"bags/{k}.offsets.bin"


@dataclass(frozen=True)
class Manifest:
    """The validated core of a manifest; ``raw`` keeps every key as read.

    ``id_range[t]`` is ``(min_id, max_id)`` as recorded at write time, or
    ``None`` for a table written before integrity checks (or with no rows).
    """

    rows: int
    num_dense: int
    tables: list[TableSpec]
    id_range: list[tuple[int, int] | None]
    raw: dict[str, Any]
    bag_values: dict[int, int] | None = None  # table index -> V (ids stored) of each multi-hot table

    @property
    def one_hot(self) -> list[int]:
        """Indices of the one-hot tables: column j of ``sparse.bin`` is table ``one_hot[j]``."""
        return [t for t, spec in enumerate(self.tables) if not spec.multi_hot]

    @property
    def checksums(self) -> dict[str, Any] | None:
        c = self.raw.get("checksums")
        return c if isinstance(c, dict) and isinstance(c.get("files"), dict) else None


def _int(v: Any, lo: int, hi: int | None = None) -> int | None:
    """``v`` if it is an int (not a bool, not text) in [lo, hi], else None."""
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        return None
    return v


def _bad(mpath: Path, key: str, expected: str, found: Any) -> DataFormatError:
    return DataFormatError("manifest key is missing or invalid", path=str(mpath), field=key,
                           expected=expected, found="<missing>" if found is _MISSING else repr(found)[:80])


def parse_manifest(raw: Any, mpath: Path) -> Manifest:
    """Validate the keys every reader relies on; name the first bad one.

    Raises:
        DataFormatError: naming ``mpath``, the key, what was expected and found.
    """
    if not isinstance(raw, dict):
        raise DataFormatError("manifest is not a JSON object", path=str(mpath),
                              expected="an object", found=type(raw).__name__)
    if raw.get("format") != FORMAT or raw.get("version") != VERSION:
        raise DataFormatError("unsupported dataset format", path=str(mpath),
                              expected=f"{FORMAT} v{VERSION}",
                              found=f"{raw.get('format')} v{raw.get('version')}")
    rows = _int(raw.get("rows", _MISSING), 0)
    if rows is None:
        raise _bad(mpath, "rows", "an integer >= 0", raw.get("rows", _MISSING))
    num_dense = _int(raw.get("num_dense", _MISSING), 0)
    if num_dense is None:
        raise _bad(mpath, "num_dense", "an integer >= 0", raw.get("num_dense", _MISSING))
    tables_raw = raw.get("tables", _MISSING)
    if not isinstance(tables_raw, list) or not tables_raw:
        raise _bad(mpath, "tables", "a non-empty list of {name, cardinality}", tables_raw)
    tables: list[TableSpec] = []
    id_range: list[tuple[int, int] | None] = []
    bag_values: dict[int, int] = {}
    for i, t in enumerate(tables_raw):
        key = f"tables[{i}]"
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not t["name"]:
            raise _bad(mpath, f"{key}.name", "a table name", t.get("name", _MISSING) if isinstance(t, dict) else t)
        card = _int(t.get("cardinality", _MISSING), 1, MAX_CARDINALITY)
        if card is None:
            raise _bad(mpath, f"{key}.cardinality ({t['name']})", f"an integer in [1, {MAX_CARDINALITY}]",
                       t.get("cardinality", _MISSING))
        bag = t.get("bag")
        max_len = 0
        if bag is not None:
            max_len = _int(bag.get("max_len") if isinstance(bag, dict) else None, 1) or 0
            count = _int(bag.get("count") if isinstance(bag, dict) else None, 0)
            if not max_len or count is None:
                raise _bad(mpath, f"{key}.bag ({t['name']})", "{max_len: int >= 1, count: int >= 0, ...}", bag)
            bag_values[i] = count
        tables.append(TableSpec(t["name"], card, max_len))
        lo, hi = t.get("min_id"), t.get("max_id")
        if lo is None and hi is None:
            id_range.append(None)
            continue
        lo_i, hi_i = _int(lo, -(2**31)), _int(hi, -(2**31))
        if lo_i is None or hi_i is None:
            raise _bad(mpath, f"{key}.min_id/max_id ({t['name']})", "two integers", (lo, hi))
        id_range.append((lo_i, hi_i))
    return Manifest(rows, num_dense, tables, id_range, raw, bag_values)


def column_shapes(m: Manifest) -> dict[str, tuple[int, ...]]:
    """Shapes of the three column files: label (N,), dense (N, D), sparse (N, T one-hot)."""
    return {"label": (m.rows,), "dense": (m.rows, m.num_dense), "sparse": (m.rows, len(m.one_hot))}
