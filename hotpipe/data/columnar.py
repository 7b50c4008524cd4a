"""The columnar on-disk dataset: one memory-mappable array per column group.

Layout of a dataset directory::

    DIR/manifest.json   format, version, rows, num_dense, tables (name,
                        cardinality, min_id, max_id), checksums, fingerprint,
                        encoding, sources, bad_lines, columns (see manifest.py)
    DIR/label.bin       (N,)    float32
    DIR/dense.bin       (N, 13) float32, row-major
    DIR/sparse.bin      (N, T)  int32,   row-major, local ids per table
    DIR/vocab/          per-table vocabularies (encoding "vocab")
    DIR/val/            optional validation split: a dataset of its own, same
                        tables, encoded with the training vocabulary

Why column *groups* rather than one file per field: a batch is then one
contiguous slice of each file (three reads instead of 40), and any one field
is still a strided view. Files are raw little-endian arrays so they can be
appended in streaming chunks before the row count is known.

Writers build the dataset in ``.DIR.tmp-<host>-<pid>`` and publish it with
renames only (``atomic.py``), so an interrupted run never leaves a half
dataset behind, and ``--overwrite`` never leaves neither. What opening
verifies is described in ``integrity.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from hotpipe.data import atomic, integrity
from hotpipe.data.manifest import (
    COLUMN_FILES,
    DTYPES,
    FORMAT,
    VAL_DIR,
    VERSION,
    Manifest,
    TableSpec,
    column_shapes,
    parse_manifest,
)
from hotpipe.errors import DataFormatError

__all__ = ["ColumnarDataset", "ColumnarWriter", "TableSpec", "UnverifiedDatasetWarning", "FORMAT", "VERSION"]


class UnverifiedDatasetWarning(UserWarning):
    """A dataset written before integrity checks: opened, but nothing was verified."""


@dataclass
class ColumnarDataset:
    """A read-only, memory-mapped dataset. Open with :meth:`open`.

    Attributes:
        verified: ``"quick"`` (sizes, head/tail digests, id bounds checked),
            ``"full"`` (after :meth:`verify`), or ``"unverified"`` (a dataset
            written before checksums existed).
    """

    path: Path
    rows: int
    tables: list[TableSpec]
    num_dense: int
    label: np.ndarray  # (N,) float32 memmap
    dense: np.ndarray  # (N, num_dense) float32 memmap
    sparse: np.ndarray  # (N, T) int32 memmap
    manifest: dict[str, Any] = field(repr=False)
    verified: str = "quick"
    _meta: Manifest | None = field(default=None, repr=False)

    @property
    def cardinalities(self) -> list[int]:
        return [t.cardinality for t in self.tables]

    @property
    def num_tables(self) -> int:
        return len(self.tables)

    @property
    def fingerprint(self) -> str:
        """A digest naming this exact dataset: stored at write time, or derived from the
        manifest (rows, tables, file sizes) for datasets written before checksums."""
        stored = self.manifest.get("fingerprint")
        if isinstance(stored, str):
            return stored
        sizes = {name: {"sha256": f"{(self.path / f).stat().st_size} bytes"} for name, f in COLUMN_FILES.items()}
        return integrity.fingerprint(self.rows, self.num_dense, self.manifest["tables"], sizes)

    @property
    def has_val(self) -> bool:
        return isinstance(self.manifest.get("val"), dict)

    def open_val(self, *, verify: bool = True) -> ColumnarDataset | None:
        """The validation split prepared with ``--val`` (``DIR/val/``), or None."""
        if not self.has_val:
            return None
        val = ColumnarDataset.open(self.path / str(self.manifest["val"].get("dir", VAL_DIR)), verify=verify)
        if val.cardinalities != self.cardinalities:
            raise DataFormatError("validation split does not match its training set",
                                  path=str(val.path / "manifest.json"), field="tables",
                                  expected=f"cardinalities {self.cardinalities}", found=str(val.cardinalities))
        return val

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, verify: bool = True) -> ColumnarDataset:
        """Map a dataset; validate its manifest and run the quick integrity checks.

        Args:
            path: the dataset directory.
            verify: run the quick checks (``integrity.py``); ``False`` only
                validates the manifest and the file sizes.
        Raises:
            DataFormatError: naming the file, key or table, what was expected and found.
        """
        root = Path(path)
        mpath = root / "manifest.json"
        if not mpath.is_file():
            raise DataFormatError(
                "not a hotpipe dataset directory",
                path=str(root),
                expected="a directory with manifest.json (made by `hotpipe prepare` or `hotpipe synth`)",
                found="no manifest.json" + _aside_hint(root),
            )
        try:
            raw = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise DataFormatError(f"manifest is not valid JSON: {e}", path=str(mpath)) from e
        except OSError as e:
            raise DataFormatError(f"cannot read the manifest: {e.strerror}", path=str(mpath)) from e
        m = parse_manifest(raw, mpath)
        arrays = {}
        for name, shape in column_shapes(m).items():
            f = root / COLUMN_FILES[name]
            want = int(np.prod(shape)) * np.dtype(DTYPES[name]).itemsize
            have = f.stat().st_size if f.is_file() else -1
            if have != want:
                raise DataFormatError(
                    "column file has the wrong size",
                    path=str(f),
                    expected=f"{want} bytes for shape {shape}",
                    found=f"{have} bytes" if have >= 0 else "missing",
                )
            # An empty file cannot be mapped: no rows, or no dense features (TalkingData).
            arrays[name] = (
                np.memmap(f, dtype=DTYPES[name], mode="r", shape=shape)
                if want > 0
                else np.zeros(shape, dtype=DTYPES[name])
            )
        ds = cls(root, m.rows, m.tables, m.num_dense, arrays["label"], arrays["dense"],
                 arrays["sparse"], raw, _meta=m)
        if verify:
            ds._quick_check()
        return ds

    # ----------------------------------------------------------------- verification

    def _quick_check(self) -> None:
        m = self._meta
        assert m is not None  # set by open(); not user input
        sums = m.checksums
        if sums is None or (self.rows > 0 and any(r is None for r in m.id_range)):
            self.verified = "unverified"
            warnings.warn(f"{self.path}: written before integrity checks; ids and checksums not verified "
                          "(`hotpipe verify` checks every id)", UnverifiedDatasetWarning, stacklevel=3)
            return
        quick_bytes = int(sums.get("quick_bytes", integrity.QUICK_BYTES))
        for rel, rec in sums["files"].items():
            f = self.path / rel
            size = f.stat().st_size if f.is_file() else -1
            if size != rec.get("bytes"):
                raise DataFormatError("dataset file does not match its checksum record", path=str(f),
                                      expected=f"{rec.get('bytes')} bytes",
                                      found=f"{size} bytes" if size >= 0 else "missing")
            if integrity.quick_digest(f, size, quick_bytes) != rec.get("quick"):
                raise DataFormatError("dataset file is damaged: its first/last bytes changed since it "
                                      "was written", path=str(f), expected=f"quick digest {rec.get('quick')}",
                                      found="a different digest")
        for t, (spec, rng) in enumerate(zip(self.tables, m.id_range, strict=True)):
            if rng is not None and (rng[0] < 0 or rng[1] >= spec.cardinality):
                self._raise_bad_id(t)

    def _raise_bad_id(self, t: int) -> None:
        spec = self.tables[t]
        hit = integrity.first_bad_id(self.sparse, t, spec.cardinality)
        where = f"{hit[1]} at row {hit[0]}" if hit else "a recorded min_id/max_id outside the table"
        raise DataFormatError("id out of range for its table", path=str(self.path / COLUMN_FILES["sparse"]),
                              field=spec.name, expected=f"ids in [0, {spec.cardinality})", found=where)

    def verify(self) -> None:
        """Full check: every file's sha256 and every id against its table's cardinality.

        Reads the whole dataset once. Works on old datasets too (ids only).

        Raises:
            DataFormatError: naming the file, the table and the first bad row.
        """
        m = self._meta
        assert m is not None  # set by open()
        sums = m.checksums
        if sums is not None:
            for rel, rec in sums["files"].items():
                f = self.path / rel
                if not f.is_file() or integrity.file_digest(f) != rec.get("sha256"):
                    raise DataFormatError("dataset file does not match its sha256 (damaged or replaced)",
                                          path=str(f), expected=str(rec.get("sha256")),
                                          found="missing" if not f.is_file() else "a different digest")
        for t, rng in enumerate(integrity.id_ranges(self.sparse)):
            if rng is not None and (rng[0] < 0 or rng[1] >= self.tables[t].cardinality):
                self._raise_bad_id(t)
        self.verified = "full" if sums is not None else "unverified"

    def check_ids(self, ids: np.ndarray, first_row: int) -> None:
        """Bounds-check a block of ids read from this dataset: (B, T) from row ``first_row``.

        For a loader that wants per-batch checks (a max/min over B x T, much
        cheaper than the step); raises the same error as :meth:`verify`.
        """
        cards = np.asarray(self.cardinalities)
        bad = (ids < 0) | (ids >= cards)
        if bad.any():
            r, t = np.argwhere(bad)[0]
            spec = self.tables[int(t)]
            raise DataFormatError("id out of range for its table", path=str(self.path / COLUMN_FILES["sparse"]),
                                  field=spec.name, expected=f"ids in [0, {spec.cardinality})",
                                  found=f"{int(ids[r, t])} at row {first_row + int(r)}")


def _aside_hint(root: Path) -> str:
    aside = list(root.parent.glob(f".{root.name}.old-*")) if root.parent.is_dir() else []
    return f" ({aside[0].name} holds a dataset left aside by an interrupted --overwrite)" if aside else ""


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
