"""The columnar format's constants and its manifest, validated key by key.

One owner for the on-disk facts (file names, dtypes, manifest keys): the
reader (:class:`~hotpipe.data.columnar.ColumnarDataset`) and the writer
(:class:`~hotpipe.data.columnar.ColumnarWriter`) both ask this module.

Manifest keys (``DIR/manifest.json``)::

    format, version     "hotpipe-columnar", 1
    rows                N, an integer >= 0
    num_dense           D, an integer >= 0
    tables              [{name, cardinality, min_id, max_id}, ...]; min_id/max_id
                        are the smallest and largest id written (absent in
                        datasets written before integrity checks; null when N = 0)
    columns             {label|dense|sparse: {file, dtype, shape}}
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
COLUMN_FILES = {name: f"{name}.bin" for name in DTYPES}
MAX_CARDINALITY = 2**31 - 1  # ids are int32 on disk
VAL_DIR = "val"
_MISSING = object()


@dataclass(frozen=True)
class TableSpec:
    """One embedding table: its name and number of rows (ids are ``0 .. cardinality - 1``)."""

    name: str
    cardinality: int


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
    for i, t in enumerate(tables_raw):
        key = f"tables[{i}]"
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not t["name"]:
            raise _bad(mpath, f"{key}.name", "a table name", t.get("name", _MISSING) if isinstance(t, dict) else t)
        card = _int(t.get("cardinality", _MISSING), 1, MAX_CARDINALITY)
        if card is None:
            raise _bad(mpath, f"{key}.cardinality ({t['name']})", f"an integer in [1, {MAX_CARDINALITY}]",
                       t.get("cardinality", _MISSING))
        tables.append(TableSpec(t["name"], card))
        lo, hi = t.get("min_id"), t.get("max_id")
        if lo is None and hi is None:
            id_range.append(None)
            continue
        lo_i, hi_i = _int(lo, -(2**31)), _int(hi, -(2**31))
        if lo_i is None or hi_i is None:
            raise _bad(mpath, f"{key}.min_id/max_id ({t['name']})", "two integers", (lo, hi))
        id_range.append((lo_i, hi_i))
    return Manifest(rows, num_dense, tables, id_range, raw)


def column_shapes(m: Manifest) -> dict[str, tuple[int, ...]]:
    """Shapes of the three column files: label (N,), dense (N, D), sparse (N, T)."""
    return {"label": (m.rows,), "dense": (m.rows, m.num_dense), "sparse": (m.rows, len(m.tables))}
