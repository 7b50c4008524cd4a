"""Writing a columnar dataset: streamed chunks, checked ids, digests, an atomic publish.

The layout and manifest keys are ``manifest.py``'s; publishing is ``atomic.py``'s;
the digests are ``integrity.py``'s. :class:`ColumnarWriter` is re-exported by
``columnar.py``, where readers look for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from hotpipe.data import atomic, integrity
from hotpipe.data.manifest import COLUMN_FILES, DTYPES, FORMAT, VAL_DIR, VERSION, TableSpec
from hotpipe.errors import DataFormatError


def _write_all(f: BinaryIO, data: bytes) -> None:
    """The one place dataset bytes hit the disk (tests inject ENOSPC here)."""
    f.write(data)


class ColumnarWriter:
    """Streams chunks into a new dataset directory, atomically.

    Example:
        >>> with ColumnarWriter(out, tables=specs, num_dense=13) as w:  # doctest: +SKIP
        ...     for label, dense, sparse in chunks:
        ...         w.append(label, dense, sparse)
        ...     w.finish(encoding={...}, sources=[...])

    Leaving the ``with`` block without :meth:`finish` (an exception, Ctrl-C)
    removes the temporary directory and leaves ``out`` untouched. A full disk
    or a permission problem becomes a :class:`~hotpipe.errors.ResourceError`.
    Temp folders left by killed writers of the same ``out`` are removed (an old
    dataset left aside by a killed ``--overwrite`` is put back) on entry.

    Ids are checked against the tables (when known at :meth:`append`, else at
    :meth:`finish`); each table's min/max id and every file's sha256 are
    recorded in the manifest.
    """

    def __init__(self, out: str | os.PathLike[str], *, tables: Sequence[TableSpec] | None,
                 num_dense: int, overwrite: bool = False, nested: bool = False) -> None:
        self.out = Path(out)
        self.notes: list[str] = [] if nested else atomic.clean_stale(self.out)
        atomic.check_out(self.out, overwrite)
        self.tmp = atomic.temp_path(self.out, "tmp")
        self.tables = list(tables) if tables is not None else None
        self.num_dense = num_dense
        self.rows = 0
        self._files: dict[str, BinaryIO] = {}
        self._sha: dict[str, Any] = {}
        self._lo: np.ndarray | None = None
        self._hi: np.ndarray | None = None
        self._done = False
        self.manifest: dict[str, Any] = {}  # as written, after finish()

    def __enter__(self) -> ColumnarWriter:
        try:
            self.tmp.mkdir(parents=True)
            self._files = {n: open(self.tmp / f, "wb") for n, f in COLUMN_FILES.items()}  # noqa: SIM115
        except OSError as e:
            self._cleanup()
            raise atomic.resource_error(e, self.out) or e from e
        self._sha = {n: hashlib.sha256() for n in COLUMN_FILES}
        return self

    def append(self, label: np.ndarray, dense: np.ndarray, sparse: np.ndarray) -> None:
        """Append a chunk: label (n,), dense (n, num_dense), sparse (n, T)."""
        n = label.shape[0]
        if dense.shape != (n, self.num_dense) or sparse.ndim != 2 or sparse.shape[0] != n:
            raise ValueError(f"chunk shapes disagree: label {label.shape}, dense {dense.shape}, sparse {sparse.shape}")
        if n:
            lo, hi = sparse.min(axis=0).astype(np.int64), sparse.max(axis=0).astype(np.int64)
            if self.tables is not None:
                self._check_ids(sparse, lo, hi)
            self._lo = lo if self._lo is None else np.minimum(self._lo, lo)
            self._hi = hi if self._hi is None else np.maximum(self._hi, hi)
        for name, arr in (("label", label), ("dense", dense), ("sparse", sparse)):
            data = np.ascontiguousarray(arr, dtype=DTYPES[name]).tobytes()
            _write_all(self._files[name], data)
            self._sha[name].update(data)
        self.rows += n

    def _check_ids(self, sparse: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        assert self.tables is not None
        cards = np.array([t.cardinality for t in self.tables])
        if sparse.shape[1] != cards.shape[0]:
            raise ValueError(f"chunk has {sparse.shape[1]} tables, the dataset {cards.shape[0]}")
        if (lo < 0).any() or (hi >= cards).any():
            r, t = np.argwhere((sparse < 0) | (sparse >= cards))[0]
            raise DataFormatError("id out of range for its table", path=str(self.out), field=self.tables[t].name,
                                  expected=f"ids in [0, {cards[t]})", found=f"{sparse[r, t]} at row {self.rows + r}")

    def finish(self, *, tables: Sequence[TableSpec] | None = None, order: np.ndarray | None = None,
               **manifest_extra: Any) -> Path:
        """Write the manifest and move the dataset into place.

        Args:
            tables: may be given here when cardinalities are only known at the
                end (a vocabulary built in the same pass).
            order: (N,) a permutation; row ``i`` of the result is row ``order[i]``
                of what was appended (``sort_by``).
            manifest_extra: more manifest keys (encoding, sources, ...).
        """
        if tables is not None:
            self.tables = list(tables)
        if self.tables is None:
            raise ValueError("table specs were never given")
        if self._lo is not None and self._hi is not None:
            self._check_ids_at_end()
        for f in self._files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
        if order is not None:
            self._permute(order)
        files = {COLUMN_FILES[n]: integrity.file_record(self.tmp / COLUMN_FILES[n], self._sha[n].hexdigest())
                 for n in COLUMN_FILES}
        for p in sorted(self.tmp.rglob("*")):
            rel = p.relative_to(self.tmp).as_posix()
            if p.is_file() and rel not in files and rel.split("/")[0] != VAL_DIR:
                files[rel] = integrity.file_record(p)
        tables_json = [{"name": t.name, "cardinality": t.cardinality,
                        "min_id": None if self._lo is None else int(self._lo[i]),
                        "max_id": None if self._hi is None else int(self._hi[i])}
                       for i, t in enumerate(self.tables)]
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "rows": self.rows,
            "num_dense": self.num_dense,
            "tables": tables_json,
            "columns": {
                "label": {"file": "label.bin", "dtype": "float32", "shape": [self.rows]},
                "dense": {"file": "dense.bin", "dtype": "float32", "shape": [self.rows, self.num_dense]},
                "sparse": {"file": "sparse.bin", "dtype": "int32", "shape": [self.rows, len(self.tables)]},
            },
            "checksums": {"algorithm": "sha256", "quick_bytes": integrity.QUICK_BYTES, "files": files},
            **manifest_extra,
        }
        val = manifest_extra.get("val")
        val_fp = val.get("fingerprint") if isinstance(val, dict) else None
        manifest["fingerprint"] = integrity.fingerprint(
            self.rows, self.num_dense, tables_json, {**files, **({"val": {"sha256": val_fp}} if val_fp else {})})
        self.manifest = manifest
        (self.tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        integrity.fsync_tree(self.tmp)
        atomic.publish(self.tmp, self.out)
        self._done = True
        return self.out

    def _check_ids_at_end(self) -> None:
        assert self.tables is not None and self._lo is not None and self._hi is not None
        for t, spec in enumerate(self.tables):
            if self._lo[t] < 0 or self._hi[t] >= spec.cardinality:
                for f in self._files.values():
                    f.flush()
                sparse = np.memmap(self.tmp / COLUMN_FILES["sparse"], np.int32, "r",
                                   shape=(self.rows, len(self.tables)))
                hit = integrity.first_bad_id(sparse, t, spec.cardinality)
                raise DataFormatError("id out of range for its table", path=str(self.out), field=spec.name,
                                      expected=f"ids in [0, {spec.cardinality})",
                                      found=f"{hit[1]} at row {hit[0]}" if hit else "out of range")

    def _permute(self, order: np.ndarray) -> None:
        """Rewrite each column file in ``order``, in bounded chunks (re-hashing as it goes)."""
        widths = {"label": 1, "dense": self.num_dense, "sparse": len(self.tables or ())}
        step = 1 << 18
        for name, width in widths.items():
            src_path = self.tmp / COLUMN_FILES[name]
            dst_path = src_path.with_suffix(".sorted")
            sha = hashlib.sha256()
            src = (np.memmap(src_path, DTYPES[name], "r", shape=(self.rows, width))
                   if self.rows * width else np.zeros((self.rows, width), DTYPES[name]))
            with open(dst_path, "wb") as dst:
                for lo in range(0, self.rows, step):
                    data = np.ascontiguousarray(src[order[lo:lo + step]]).tobytes()
                    _write_all(dst, data)
                    sha.update(data)
                dst.flush()
                os.fsync(dst.fileno())
            del src
            os.replace(dst_path, src_path)
            self._sha[name] = sha

    def _cleanup(self) -> None:
        for f in self._files.values():
            f.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if self._done:
            return
        self._cleanup()
        if isinstance(exc, OSError):
            converted = atomic.resource_error(exc, self.out)
            if converted is not None:
                raise converted from exc
