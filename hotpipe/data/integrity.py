"""Checksums and id-bound scans for columnar datasets.

Two levels, so that opening a multi-GB dataset stays fast:

* **quick** (every :meth:`ColumnarDataset.open`): each listed file's size, and
  a sha256 of its first and last ``quick_bytes`` (1 MiB) with the size mixed
  in; the recorded per-table ``min_id``/``max_id`` against the cardinalities.
  Cost: two 1 MiB reads per file whatever the dataset's size. Catches a
  truncated or extended file, a swapped file, damage at either end, a
  manifest whose cardinality was edited down.
* **full** (:meth:`ColumnarDataset.verify`, ``hotpipe verify``): the sha256 of
  every byte of every listed file, and every id of ``sparse.bin`` against
  its table's cardinality. Reads the whole dataset once (disk speed).

Digests are computed while the writer streams the files out, so writing
costs no extra read pass.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

QUICK_BYTES = 1 << 20
_BLOCK = 1 << 22
_SCAN_ROWS = 1 << 20  # sparse rows per chunk of a full id scan (~100 MB for 26 tables)


def quick_digest(path: Path, size: int, quick_bytes: int = QUICK_BYTES) -> str:
    """sha256 of (size, the first ``quick_bytes``, the last ``quick_bytes``) of a file."""
    h = hashlib.sha256(size.to_bytes(8, "little"))
    with open(path, "rb") as f:
        h.update(f.read(quick_bytes))
        if size > quick_bytes:
            f.seek(max(size - quick_bytes, quick_bytes))
            h.update(f.read(quick_bytes))
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a whole file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def file_record(path: Path, sha256: str | None = None) -> dict[str, Any]:
    """The ``checksums.files`` entry of one file (its full digest computed unless given)."""
    size = path.stat().st_size
    return {"bytes": size, "sha256": sha256 or file_digest(path), "quick": quick_digest(path, size)}


def fingerprint(rows: int, num_dense: int, tables: Iterable[dict[str, Any]],
                files: dict[str, dict[str, Any]]) -> str:
    """One digest naming the dataset's exact content (shape, tables, every file's sha256)."""
    doc = {"rows": rows, "num_dense": num_dense, "tables": list(tables),
           "files": {k: v.get("sha256") for k, v in sorted(files.items())}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def first_bad_id(sparse: np.ndarray, t: int, cardinality: int) -> tuple[int, int] | None:
    """(row, id) of the first id of table ``t`` outside ``[0, cardinality)``, or None.

    Args:
        sparse: (N, T) int32, usually a memmap (read in chunks).
    """
    for lo in range(0, sparse.shape[0], _SCAN_ROWS):
        col = np.asarray(sparse[lo:lo + _SCAN_ROWS, t])
        bad = np.flatnonzero((col < 0) | (col >= cardinality))
        if bad.size:
            return lo + int(bad[0]), int(col[bad[0]])
    return None


def id_ranges(sparse: np.ndarray) -> list[tuple[int, int] | None]:
    """Per table (min, max) id over all rows, in chunks; None for every table when N = 0."""
    n, t = sparse.shape
    if n == 0:
        return [None] * t
    lo = np.full(t, np.iinfo(np.int64).max, np.int64)
    hi = np.full(t, np.iinfo(np.int64).min, np.int64)
    for r in range(0, n, _SCAN_ROWS):
        block = np.asarray(sparse[r:r + _SCAN_ROWS])  # (b, T)
        lo = np.minimum(lo, block.min(axis=0))
        hi = np.maximum(hi, block.max(axis=0))
    return [(int(a), int(b)) for a, b in zip(lo, hi, strict=True)]


def fsync_tree(root: Path) -> None:
    """fsync every file under ``root`` and the directories themselves (before a rename)."""
    for dirpath, _, names in os.walk(root):
        for name in names:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def fsync_dir(path: Path) -> None:
    """Make a rename/creation inside ``path`` durable (a no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
