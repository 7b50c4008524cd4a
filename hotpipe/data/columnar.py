"""The columnar on-disk dataset: one memory-mappable array per column group.

Layout of a dataset directory::

    DIR/manifest.json   format, version, rows, num_dense, tables (name,
                        cardinality), encoding, sources (path, bytes, sha256),
                        bad_lines summary, columns (file, dtype, shape)
    DIR/label.bin       (N,)    float32
    DIR/dense.bin       (N, 13) float32, row-major
    DIR/sparse.bin      (N, T)  int32,   row-major, local ids per table

Why column *groups* rather than one file per field: a batch is then one
contiguous slice of each file (three reads instead of 40), and any one field
is still a strided view. Files are raw little-endian arrays so they can be
appended in streaming chunks before the row count is known.

Writers build the dataset in ``DIR.tmp-<pid>`` and rename it to ``DIR`` only
when complete, so an interrupted run never leaves a half dataset behind.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hotpipe.errors import DataFormatError

FORMAT = "hotpipe-columnar"
VERSION = 1
_DTYPES = {"label": np.float32, "dense": np.float32, "sparse": np.int32}


@dataclass(frozen=True)
class TableSpec:
    name: str
    cardinality: int


@dataclass
class ColumnarDataset:
    """A read-only, memory-mapped dataset. Open with :meth:`open`."""

    path: Path
    rows: int
    tables: list[TableSpec]
    num_dense: int
    label: np.ndarray  # (N,) float32 memmap
    dense: np.ndarray  # (N, num_dense) float32 memmap
    sparse: np.ndarray  # (N, T) int32 memmap
    manifest: dict[str, Any] = field(repr=False)

    @property
    def cardinalities(self) -> list[int]:
        return [t.cardinality for t in self.tables]

    @property
    def num_tables(self) -> int:
        return len(self.tables)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ColumnarDataset:
        root = Path(path)
        mpath = root / "manifest.json"
        if not mpath.is_file():
            raise DataFormatError(
                "not a hotpipe dataset directory",
                path=str(root),
                expected="a directory with manifest.json (made by `hotpipe prepare` or `hotpipe synth`)",
                found="no manifest.json",
            )
        try:
            manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise DataFormatError(f"manifest is not valid JSON: {e}", path=str(mpath)) from e
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise DataFormatError(
                "unsupported dataset format",
                path=str(mpath),
                expected=f"{FORMAT} v{VERSION}",
                found=f"{manifest.get('format')} v{manifest.get('version')}",
            )
        rows = int(manifest["rows"])
        tables = [TableSpec(t["name"], int(t["cardinality"])) for t in manifest["tables"]]
        num_dense = int(manifest["num_dense"])
        shapes = {"label": (rows,), "dense": (rows, num_dense), "sparse": (rows, len(tables))}
        arrays = {}
        for name, shape in shapes.items():
            f = root / f"{name}.bin"
            want = int(np.prod(shape)) * np.dtype(_DTYPES[name]).itemsize
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
                np.memmap(f, dtype=_DTYPES[name], mode="r", shape=shape)
                if want > 0
                else np.zeros(shape, dtype=_DTYPES[name])
            )
        return cls(root, rows, tables, num_dense, arrays["label"], arrays["dense"],
                   arrays["sparse"], manifest)


class ColumnarWriter:
    """Streams chunks into a new dataset directory, atomically.

    Example:
        >>> with ColumnarWriter(out, tables=specs, num_dense=13) as w:  # doctest: +SKIP
        ...     for label, dense, sparse in chunks:
        ...         w.append(label, dense, sparse)
        ...     w.finish(encoding={...}, sources=[...])

    Leaving the ``with`` block without :meth:`finish` (an exception, Ctrl-C)
    removes the temporary directory and leaves ``out`` untouched.
    """

    def __init__(self, out: str | os.PathLike[str], *, tables: Sequence[TableSpec] | None,
                 num_dense: int, overwrite: bool = False) -> None:
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise FileExistsError(f"{self.out} already exists; choose another --out or pass --overwrite")
        self.tmp = self.out.parent / f".{self.out.name}.tmp-{os.getpid()}"
        self.tables = list(tables) if tables is not None else None
        self.num_dense = num_dense
        self.rows = 0
        self._files: dict[str, Any] = {}
        self._done = False

    def __enter__(self) -> ColumnarWriter:
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        self._files = {n: open(self.tmp / f"{n}.bin", "wb") for n in _DTYPES}
        return self

    def append(self, label: np.ndarray, dense: np.ndarray, sparse: np.ndarray) -> None:
        """Append a chunk: label (n,), dense (n, num_dense), sparse (n, T)."""
        n = label.shape[0]
        if dense.shape != (n, self.num_dense) or sparse.ndim != 2 or sparse.shape[0] != n:
            raise ValueError(f"chunk shapes disagree: label {label.shape}, dense {dense.shape}, sparse {sparse.shape}")
        for name, arr in (("label", label), ("dense", dense), ("sparse", sparse)):
            self._files[name].write(np.ascontiguousarray(arr, dtype=_DTYPES[name]).tobytes())
        self.rows += n

    def finish(self, *, tables: Sequence[TableSpec] | None = None, **manifest_extra: Any) -> Path:
        """Write the manifest and move the dataset into place.

        ``tables`` may be given here when cardinalities are only known at the
        end (a vocabulary built in the same pass)."""
        if tables is not None:
            self.tables = list(tables)
        if self.tables is None:
            raise ValueError("table specs were never given")
        for f in self._files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "rows": self.rows,
            "num_dense": self.num_dense,
            "tables": [{"name": t.name, "cardinality": t.cardinality} for t in self.tables],
            "columns": {
                "label": {"file": "label.bin", "dtype": "float32", "shape": [self.rows]},
                "dense": {"file": "dense.bin", "dtype": "float32", "shape": [self.rows, self.num_dense]},
                "sparse": {"file": "sparse.bin", "dtype": "int32", "shape": [self.rows, len(self.tables)]},
            },
            **manifest_extra,
        }
        (self.tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if self.out.exists():
            shutil.rmtree(self.out)
        os.replace(self.tmp, self.out)
        self._done = True
        return self.out

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            for f in self._files.values():
                f.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
