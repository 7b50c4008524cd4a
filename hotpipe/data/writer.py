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
from hotpipe.data.manifest import (
    BAG_OFFSETS_DTYPE,
    BAG_VALUES_DTYPE,
    COLUMN_FILES,
    DTYPES,
    FORMAT,
    VAL_DIR,
    VERSION,
    TableSpec,
    bag_files,
)
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

    Multi-hot tables (``TableSpec.max_len > 0``): say how many at construction
    (``bags=K``) and pass each chunk's lists to :meth:`append` as ``(lengths
    (n,), values (sum of lengths,))`` per multi-hot table, in table order;
    ``sparse`` then holds the one-hot tables only. Capping lists at ``max_len``
    is the reader's job (it knows file:line); the writer checks the cap.
    """

    def __init__(self, out: str | os.PathLike[str], *, tables: Sequence[TableSpec] | None,
                 num_dense: int, overwrite: bool = False, nested: bool = False, bags: int = 0) -> None:
        self.out = Path(out)
        self.notes: list[str] = [] if nested else atomic.clean_stale(self.out)
        atomic.check_out(self.out, overwrite)
        self.tmp = atomic.temp_path(self.out, "tmp")
        self.tables = list(tables) if tables is not None else None
        self.num_dense = num_dense
        self.rows = 0
        self.num_bags = bags if tables is None else sum(t.multi_hot for t in tables)
        if tables is not None and bags and bags != self.num_bags:
            raise ValueError(f"bags={bags} but {self.num_bags} multi-hot tables")
        self._bag_len = np.zeros(self.num_bags, np.int64)  # ids written per bag table
        self._bag_lo = np.full(self.num_bags, np.iinfo(np.int64).max)
        self._bag_hi = np.full(self.num_bags, np.iinfo(np.int64).min)
        self._bag_empty = np.zeros(self.num_bags, np.int64)
        self._bag_longest = np.zeros(self.num_bags, np.int64)
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
            if self.num_bags:
                (self.tmp / "bags").mkdir()
            for k in range(self.num_bags):
                for name, rel in zip(("values", "offsets"), bag_files(k), strict=True):
                    self._files[f"bag{k}.{name}"] = open(self.tmp / rel, "wb")  # noqa: SIM115
        except OSError as e:
            self._cleanup()
            raise atomic.resource_error(e, self.out) or e from e
        self._sha = {n: hashlib.sha256() for n in self._files}
        for k in range(self.num_bags):  # offsets[0] = 0
            self._put(f"bag{k}.offsets", np.zeros(1, BAG_OFFSETS_DTYPE).tobytes())
        return self

    def _put(self, name: str, data: bytes) -> None:
        _write_all(self._files[name], data)
        self._sha[name].update(data)

    def append(self, label: np.ndarray, dense: np.ndarray, sparse: np.ndarray,
               bags: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> None:
        """Append a chunk: label (n,), dense (n, num_dense), sparse (n, T one-hot), and per
        multi-hot table (lengths (n,), values (lengths.sum(),)) of local ids."""
        n = label.shape[0]
        if dense.shape != (n, self.num_dense) or sparse.ndim != 2 or sparse.shape[0] != n:
            raise ValueError(f"chunk shapes disagree: label {label.shape}, dense {dense.shape}, sparse {sparse.shape}")
        if len(bags) != self.num_bags:
            raise ValueError(f"chunk has {len(bags)} multi-hot tables, the dataset {self.num_bags}")
        for k, (lengths, values) in enumerate(bags):
            self._append_bag(k, np.asarray(lengths, np.int64), np.asarray(values))
        if n:
            lo, hi = sparse.min(axis=0).astype(np.int64), sparse.max(axis=0).astype(np.int64)
            if self.tables is not None:
                self._check_ids(sparse, lo, hi)
            self._lo = lo if self._lo is None else np.minimum(self._lo, lo)
            self._hi = hi if self._hi is None else np.maximum(self._hi, hi)
        for name, arr in (("label", label), ("dense", dense), ("sparse", sparse)):
            self._put(name, np.ascontiguousarray(arr, dtype=DTYPES[name]).tobytes())
        self.rows += n

    def _append_bag(self, k: int, lengths: np.ndarray, values: np.ndarray) -> None:
        if lengths.ndim != 1 or values.ndim != 1 or int(lengths.sum()) != values.shape[0] or (lengths < 0).any():
            raise ValueError(f"bag {k}: lengths {lengths.shape} (sum {int(lengths.sum())}) do not cover "
                             f"values {values.shape}")
        if lengths.size:
            self._bag_empty[k] += int((lengths == 0).sum())
            self._bag_longest[k] = max(self._bag_longest[k], int(lengths.max()))
        if values.size:
            self._bag_lo[k] = min(self._bag_lo[k], int(values.min()))
            self._bag_hi[k] = max(self._bag_hi[k], int(values.max()))
            bag_tables = self._bag_tables()
            if bag_tables is not None:
                spec = bag_tables[k]
                if self._bag_lo[k] < 0 or self._bag_hi[k] >= spec.cardinality:
                    i = int(np.flatnonzero((values < 0) | (values >= spec.cardinality))[0])
                    row = self.rows + int(np.searchsorted(np.cumsum(lengths), i, side="right"))
                    raise DataFormatError("id out of range for its table", path=str(self.out), field=spec.name,
                                          expected=f"ids in [0, {spec.cardinality})",
                                          found=f"{values[i]} at row {row}")
        ends = self._bag_len[k] + np.cumsum(lengths)  # (n,) offsets[r+1] of this chunk's rows
        self._bag_len[k] += values.shape[0]
        self._put(f"bag{k}.values", np.ascontiguousarray(values, BAG_VALUES_DTYPE).tobytes())
        self._put(f"bag{k}.offsets", np.ascontiguousarray(ends, BAG_OFFSETS_DTYPE).tobytes())

    def _bag_tables(self) -> list[TableSpec] | None:
        return None if self.tables is None else [t for t in self.tables if t.multi_hot]

    def _one_hot_tables(self) -> list[TableSpec]:
        assert self.tables is not None
        return [t for t in self.tables if not t.multi_hot]

    def _check_ids(self, sparse: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        one_hot = self._one_hot_tables()
        cards = np.array([t.cardinality for t in one_hot])
        if sparse.shape[1] != cards.shape[0]:
            raise ValueError(f"chunk has {sparse.shape[1]} tables, the dataset {cards.shape[0]}")
        if (lo < 0).any() or (hi >= cards).any():
            r, t = np.argwhere((sparse < 0) | (sparse >= cards))[0]
            raise DataFormatError("id out of range for its table", path=str(self.out), field=one_hot[t].name,
                                  expected=f"ids in [0, {cards[t]})", found=f"{sparse[r, t]} at row {self.rows + r}")

    def finish(self, *, tables: Sequence[TableSpec] | None = None, order: np.ndarray | None = None,
               truncated: Sequence[int] | None = None, **manifest_extra: Any) -> Path:
        """Write the manifest and move the dataset into place.

        Args:
            tables: may be given here when cardinalities are only known at the
                end (a vocabulary built in the same pass).
            order: (N,) a permutation; row ``i`` of the result is row ``order[i]``
                of what was appended (``sort_by``).
            truncated: per multi-hot table, how many lists the reader cut at ``max_len``.
            manifest_extra: more manifest keys (encoding, sources, ...).
        """
        if tables is not None:
            self.tables = list(tables)
        if self.tables is None:
            raise ValueError("table specs were never given")
        bag_tables = self._bag_tables() or []
        if len(bag_tables) != self.num_bags:
            raise ValueError(f"{len(bag_tables)} multi-hot tables, {self.num_bags} bags written")
        if self._lo is not None and self._hi is not None:
            self._check_ids_at_end()
        for k, spec in enumerate(bag_tables):
            if self._bag_len[k] and (self._bag_lo[k] < 0 or self._bag_hi[k] >= spec.cardinality):
                raise DataFormatError("id out of range for its table", path=str(self.out), field=spec.name,
                                      expected=f"ids in [0, {spec.cardinality})",
                                      found=f"ids {self._bag_lo[k]}..{self._bag_hi[k]}")
            if self._bag_longest[k] > spec.max_len:
                raise ValueError(f"table {spec.name}: a list of {self._bag_longest[k]} ids exceeds "
                                 f"max_len {spec.max_len} (the reader truncates)")
        for f in self._files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
        if order is not None:
            self._permute(order)
        files = {COLUMN_FILES[n]: integrity.file_record(self.tmp / COLUMN_FILES[n], self._sha[n].hexdigest())
                 for n in COLUMN_FILES}
        for k in range(self.num_bags):
            for name, rel in zip(("values", "offsets"), bag_files(k), strict=True):
                files[rel] = integrity.file_record(self.tmp / rel, self._sha[f"bag{k}.{name}"].hexdigest())
        for p in sorted(self.tmp.rglob("*")):
            rel = p.relative_to(self.tmp).as_posix()
            if p.is_file() and rel not in files and rel.split("/")[0] != VAL_DIR:
                files[rel] = integrity.file_record(p)
        tables_json = self._tables_json(truncated)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "rows": self.rows,
            "num_dense": self.num_dense,
            "tables": tables_json,
            "columns": {
                "label": {"file": "label.bin", "dtype": "float32", "shape": [self.rows]},
                "dense": {"file": "dense.bin", "dtype": "float32", "shape": [self.rows, self.num_dense]},
                "sparse": {"file": "sparse.bin", "dtype": "int32",
                           "shape": [self.rows, len(self._one_hot_tables())]},
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

    def _tables_json(self, truncated: Sequence[int] | None) -> list[dict[str, Any]]:
        assert self.tables is not None
        out: list[dict[str, Any]] = []
        col = k = 0
        for t in self.tables:
            rec: dict[str, Any] = {"name": t.name, "cardinality": t.cardinality}
            if not t.multi_hot:
                rec["min_id"] = None if self._lo is None else int(self._lo[col])
                rec["max_id"] = None if self._hi is None else int(self._hi[col])
                col += 1
            else:
                seen = bool(self._bag_len[k])
                rec["min_id"] = int(self._bag_lo[k]) if seen else None
                rec["max_id"] = int(self._bag_hi[k]) if seen else None
                values, offsets = bag_files(k)
                rec["bag"] = {"values": values, "offsets": offsets, "count": int(self._bag_len[k]),
                              "max_len": t.max_len, "longest": int(self._bag_longest[k]),
                              "truncated": int(truncated[k]) if truncated is not None else 0,
                              "empty": int(self._bag_empty[k])}
                k += 1
            out.append(rec)
        return out

    def _check_ids_at_end(self) -> None:
        assert self.tables is not None and self._lo is not None and self._hi is not None
        one_hot = self._one_hot_tables()
        for t, spec in enumerate(one_hot):
            if self._lo[t] < 0 or self._hi[t] >= spec.cardinality:
                for f in self._files.values():
                    f.flush()
                sparse = np.memmap(self.tmp / COLUMN_FILES["sparse"], np.int32, "r",
                                   shape=(self.rows, len(one_hot)))
                hit = integrity.first_bad_id(sparse, t, spec.cardinality)
                raise DataFormatError("id out of range for its table", path=str(self.out), field=spec.name,
                                      expected=f"ids in [0, {spec.cardinality})",
                                      found=f"{hit[1]} at row {hit[0]}" if hit else "out of range")

    def _permute(self, order: np.ndarray) -> None:
        """Rewrite each column file in ``order``, in bounded chunks (re-hashing as it goes)."""
        widths = {"label": 1, "dense": self.num_dense, "sparse": len(self._one_hot_tables())}
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
        for k in range(self.num_bags):
            self._permute_bag(k, order)

    def _permute_bag(self, k: int, order: np.ndarray) -> None:
        """Reorder one multi-hot table's lists (in memory: V + N int64; the lists keep their order)."""
        vpath, opath = (self.tmp / rel for rel in bag_files(k))
        offsets = np.fromfile(opath, BAG_OFFSETS_DTYPE)  # (N+1,)
        values = np.fromfile(vpath, BAG_VALUES_DTYPE)  # (V,)
        lengths = np.diff(offsets)[order]  # (N,) in the new row order
        new_offsets = np.zeros(offsets.shape[0], np.int64)
        np.cumsum(lengths, out=new_offsets[1:])
        # value j of new row i comes from offsets[order[i]] + j
        src = np.repeat(offsets[:-1][order] - new_offsets[:-1], lengths) + np.arange(values.shape[0])
        for path, arr, name in ((vpath, values[src], "values"), (opath, new_offsets, "offsets")):
            data = np.ascontiguousarray(arr).tobytes()
            with open(path, "wb") as f:
                _write_all(f, data)
                f.flush()
                os.fsync(f.fileno())
            self._sha[f"bag{k}.{name}"] = hashlib.sha256(data)

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
