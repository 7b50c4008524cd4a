"""The columnar on-disk dataset: one memory-mappable array per column group.

Layout of a dataset directory::

    DIR/manifest.json   format, version, rows, num_dense, tables (name,
                        cardinality, min_id, max_id), checksums, fingerprint,
                        encoding, sources, bad_lines, columns (see manifest.py)
    DIR/label.bin       (N,)    float32
    DIR/dense.bin       (N, 13) float32, row-major
    DIR/sparse.bin      (N, T1) int32,   row-major, local ids of the T1 one-hot tables
    DIR/bags/           multi-hot tables (list columns): values + offsets per
                        table, see manifest.py
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

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hotpipe.data import integrity
from hotpipe.data.manifest import (
    BAG_OFFSETS_DTYPE,
    BAG_VALUES_DTYPE,
    COLUMN_FILES,
    DTYPES,
    FORMAT,
    VAL_DIR,
    VERSION,
    Manifest,
    TableSpec,
    bag_files,
    column_shapes,
    parse_manifest,
)
from hotpipe.data.writer import ColumnarWriter
from hotpipe.errors import DataFormatError

__all__ = ["ColumnarDataset", "ColumnarWriter", "TableSpec", "UnverifiedDatasetWarning", "FORMAT", "VERSION",
           "Bag"]


@dataclass(frozen=True)
class Bag:
    """One multi-hot table's lists, CSR-style: row ``r`` holds ``values[offsets[r]:offsets[r+1]]``."""

    values: np.ndarray  # (V,) int32 memmap
    offsets: np.ndarray  # (N+1,) int64 memmap


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
    sparse: np.ndarray  # (N, T1) int32 memmap, the one-hot tables (``one_hot``)
    manifest: dict[str, Any] = field(repr=False)
    verified: str = "quick"
    _meta: Manifest | None = field(default=None, repr=False)
    bags: dict[int, Bag] = field(default_factory=dict, repr=False)  # table index -> its lists

    @property
    def one_hot(self) -> list[int]:
        """Table indices of ``sparse``'s columns (all tables when none is multi-hot)."""
        return [t for t, spec in enumerate(self.tables) if not spec.multi_hot]

    @property
    def multi_hot(self) -> bool:
        """True when some table holds lists (batches are then :class:`~hotpipe.data.batch.JaggedIds`)."""
        return bool(self.bags)

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
        bags = {t: _open_bag(root, k, m.rows, (m.bag_values or {})[t])
                for k, t in enumerate(t for t, spec in enumerate(m.tables) if spec.multi_hot)}
        ds = cls(root, m.rows, m.tables, m.num_dense, arrays["label"], arrays["dense"],
                 arrays["sparse"], raw, _meta=m, bags=bags)
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
        if t in self.bags:
            bag = self.bags[t]
            hit = integrity.first_bad_id(bag.values.reshape(-1, 1), 0, spec.cardinality)
            if hit:  # position in values -> the row holding it
                hit = (int(np.searchsorted(bag.offsets, hit[0], side="right")) - 1, hit[1])
            path = self.path / bag_files(list(self.bags).index(t))[0]
        else:
            hit = integrity.first_bad_id(self.sparse, self.one_hot.index(t), spec.cardinality)
            path = self.path / COLUMN_FILES["sparse"]
        where = f"{hit[1]} at row {hit[0]}" if hit else "a recorded min_id/max_id outside the table"
        raise DataFormatError("id out of range for its table", path=str(path),
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
        ranges = dict(zip(self.one_hot, integrity.id_ranges(self.sparse), strict=True))
        for t, bag in self.bags.items():
            ranges[t] = integrity.id_ranges(bag.values.reshape(-1, 1))[0]
            offsets = np.asarray(bag.offsets)
            lengths = np.diff(offsets)
            if (offsets[0] != 0 or offsets[-1] != bag.values.shape[0] or (lengths < 0).any()
                    or lengths.max(initial=0) > self.tables[t].max_len):
                raise DataFormatError("list offsets do not run from 0 to the values' count in steps "
                                      "of 0..max_len", path=str(
                    self.path / bag_files(list(self.bags).index(t))[1]), field=self.tables[t].name,
                    expected=f"lengths in [0, {self.tables[t].max_len}]",
                    found=f"offsets {int(offsets[0])}..{int(offsets[-1])} for {bag.values.shape[0]} values, "
                          f"lengths {int(lengths.min(initial=0))}..{int(lengths.max(initial=0))}")
        for t, rng in sorted(ranges.items()):
            if rng is not None and (rng[0] < 0 or rng[1] >= self.tables[t].cardinality):
                self._raise_bad_id(t)
        self.verified = "full" if sums is not None else "unverified"

    def check_ids(self, ids: np.ndarray, first_row: int) -> None:
        """Bounds-check a block of one-hot ids read from this dataset: (B, T1) from row ``first_row``.

        For a loader that wants per-batch checks (a max/min over B x T, much
        cheaper than the step); raises the same error as :meth:`verify`.
        """
        cards = np.asarray(self.cardinalities)[self.one_hot]
        bad = (ids < 0) | (ids >= cards)
        if bad.any():
            r, t = np.argwhere(bad)[0]
            spec = self.tables[self.one_hot[int(t)]]
            raise DataFormatError("id out of range for its table", path=str(self.path / COLUMN_FILES["sparse"]),
                                  field=spec.name, expected=f"ids in [0, {spec.cardinality})",
                                  found=f"{int(ids[r, t])} at row {first_row + int(r)}")


def _open_bag(root: Path, k: int, rows: int, count: int) -> Bag:
    """Map the ``k``-th multi-hot table's files, checking their sizes against the manifest."""
    arrays = []
    for rel, dtype, n in zip(bag_files(k), (BAG_VALUES_DTYPE, BAG_OFFSETS_DTYPE), (count, rows + 1),
                             strict=True):
        f = root / rel
        want = n * np.dtype(dtype).itemsize
        have = f.stat().st_size if f.is_file() else -1
        if have != want:
            raise DataFormatError("list column file has the wrong size", path=str(f),
                                  expected=f"{want} bytes ({n} x {np.dtype(dtype).name})",
                                  found=f"{have} bytes" if have >= 0 else "missing")
        arrays.append(np.memmap(f, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(n, dtype))
    return Bag(arrays[0], arrays[1])


def _aside_hint(root: Path) -> str:
    aside = list(root.parent.glob(f".{root.name}.old-*")) if root.parent.is_dir() else []
    return f" ({aside[0].name} holds a dataset left aside by an interrupted --overwrite)" if aside else ""
