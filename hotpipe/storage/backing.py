"""Backing tiers: where every row (weights + optimizer state) lives in full.

A row is stored as one record of ``D + W`` float32 (weights, then the
optimizer state), so the state travels with the row: a fetch or write-back
moves both in one contiguous read/write and evicting a row can never reset
its accumulator.

- :class:`HostBacking`: one (R, D+W) tensor in RAM (pinned when CUDA is
  present, so copies to the device can be asynchronous).
- :class:`FileBacking`: one file per table, memory-mapped, for tables bigger
  than RAM. Reads and writes are vectorized gathers/scatters over the map
  (``index_select``/``index_copy_`` release the GIL); the OS writes dirty
  pages back and ``flush()`` forces it. Chosen over pread/pwrite because a
  row-granular pread from Python is a call per row. Two measured choices
  (BENCHMARKS.md, "Bigger than RAM"): the maps are advised ``MADV_RANDOM``
  (without it each fault read up to 8 MiB around a 260-byte row: 0.74x a
  plain map; with it 20x), and gathers are split over ``io_threads``
  threads so that many page faults — disk reads — are in flight at once
  (another 1.9x: one thread waits out one read latency per row).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from hotpipe._fs import DirLock, check_memory, gib, reserve_file
from hotpipe.data.layout import TableLayout
from hotpipe.errors import ResourceError
from hotpipe.storage.init import init_rows
from hotpipe.storage.slots import (
    FLOAT_BYTES,
    RowBlocks,
    RowSource,
    RowStateSpec,
    copy_rows,
    record_width,
)


class BackingStore(Protocol):
    num_rows: int
    width: int  # D + W

    def read(self, ids: torch.Tensor) -> torch.Tensor: ...  # (M,) -> (M, D+W)
    def write(self, ids: torch.Tensor, records: torch.Tensor) -> None: ...
    def flush(self) -> None: ...
    def export(self) -> RowSource: ...  # (R, D+W) records, complete after flush()
    def load(self, records: np.ndarray) -> None: ...
    def close(self) -> None: ...


def _initial_records(write_block, cardinalities: list[int], dim: int, optimizer: RowStateSpec,
                     seed: int) -> None:
    """Fill every record: deterministic weights (storage/init.py) + fresh optimizer state."""
    def put(r0: int, rows: torch.Tensor) -> None:
        state = optimizer.init_state(rows.shape[0], dim)
        write_block(r0, torch.cat([rows, state], dim=1))

    init_rows(cardinalities, dim, seed, put)


class HostBacking:
    """All rows in host RAM."""

    def __init__(self, *, cardinalities: list[int], dim: int, optimizer: RowStateSpec,
                 seed: int, pin: bool = False) -> None:
        self.num_rows = sum(cardinalities)
        self.width = record_width(dim, optimizer)
        check_memory(self.num_rows * self.width * FLOAT_BYTES, f"a host tier of {self.num_rows} rows",
                     "use cache.backing=file (memory-mapped table files) or a smaller dataset")
        self.data = torch.empty(self.num_rows, self.width, pin_memory=pin)

        def block(r0: int, rec: torch.Tensor) -> None:
            self.data[r0:r0 + rec.shape[0]].copy_(rec)

        _initial_records(block, cardinalities, dim, optimizer, seed)

    def read(self, ids: torch.Tensor) -> torch.Tensor:
        return self.data.index_select(0, ids)

    def write(self, ids: torch.Tensor, records: torch.Tensor) -> None:
        self.data.index_copy_(0, ids, records)

    def flush(self) -> None:
        pass

    def export(self) -> RowSource:
        return RowBlocks([[self.data.numpy()]])

    def load(self, records: np.ndarray) -> None:
        copy_rows(self.data, records)

    def close(self) -> None:
        pass


class FileBacking:
    """One memory-mapped file per table under ``directory``.

    Args:
        directory: where ``table-XXX.f32`` files are created (or reused when
            ``reuse=True`` and their sizes match — the bigger-than-RAM
            benchmark initialises once). The directory is locked while open:
            a second process using the same files gets a :class:`LockError`.
        advise_random: advise the maps ``MADV_RANDOM`` (no read-around on a
            fault); off only to measure what it buys.
        io_threads: threads a gather is split over (page faults in flight).
    """

    def __init__(self, *, directory: str | os.PathLike[str], cardinalities: list[int], dim: int,
                 optimizer: RowStateSpec, seed: int, reuse: bool = False,
                 advise_random: bool = True, io_threads: int = 16) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = DirLock(self.dir / ".lock", "table files")
        self.layout = TableLayout(cardinalities)
        self.num_rows = self.layout.num_rows
        self.width = record_width(dim, optimizer)
        self.cards = list(cardinalities)
        self.offsets = self.layout.bounds
        need = self.num_rows * self.width * FLOAT_BYTES
        free = shutil.disk_usage(self.dir).free
        if not reuse and need > free:
            self._lock.release()
            raise ResourceError(f"table files in {self.dir} need {gib(need)} of disk but "
                                f"{gib(free)} is free")
        self._mmaps: list[mmap.mmap] = []
        self.maps: list[np.ndarray] = []  # (card, D+W) float32 views of the maps
        self.tensors: list[torch.Tensor] = []
        fresh = False
        for t, card in enumerate(cardinalities):
            path = self.dir / f"table-{t:03d}.f32"
            want = card * self.width * FLOAT_BYTES
            if not (reuse and path.is_file() and path.stat().st_size == want):
                fresh = True
                reserve_file(path, want)
            with open(path, "r+b") as f:
                mm = mmap.mmap(f.fileno(), want)  # the map outlives the descriptor
            if advise_random and hasattr(mmap, "MADV_RANDOM"):
                mm.madvise(mmap.MADV_RANDOM)
            arr = np.frombuffer(mm, dtype=np.float32).reshape(card, self.width)
            self._mmaps.append(mm)
            self.maps.append(arr)
            self.tensors.append(torch.from_numpy(arr))
        self.io_threads = max(1, io_threads)
        self._pool = (ThreadPoolExecutor(self.io_threads, thread_name_prefix="hotpipe-io")
                      if self.io_threads > 1 else None)
        if fresh:
            _initial_records(self._write_block, cardinalities, dim, optimizer, seed)
            self.flush()

    def _write_block(self, r0: int, rec: torch.Tensor) -> None:
        t = int(np.searchsorted(self.offsets, r0, side="right") - 1)
        lo = r0 - int(self.offsets[t])
        self.tensors[t][lo:lo + rec.shape[0]].copy_(rec)

    def _split(self, ids: torch.Tensor) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """Group global ids by table: [(table, positions in ids, local ids)]."""
        off = torch.from_numpy(self.offsets)
        table = torch.searchsorted(off, ids, right=True) - 1
        order = torch.argsort(table, stable=True)
        counts = torch.bincount(table, minlength=len(self.cards)).tolist()
        out, start = [], 0
        for t, c in enumerate(counts):
            if c:
                pos = order[start:start + c]
                out.append((t, pos, ids[pos] - int(self.offsets[t])))
            start += c
        return out

    def _parts(self, ids: torch.Tensor) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """(table, positions, local ids) pieces, each table's split io_threads ways."""
        parts = []
        for t, pos, local in self._split(ids):
            n = self.io_threads if local.numel() >= 4 * self.io_threads else 1
            parts += [(t, p, q) for p, q in zip(pos.tensor_split(n), local.tensor_split(n),
                                                strict=True) if p.numel()]
        return parts

    def read(self, ids: torch.Tensor) -> torch.Tensor:
        out = torch.empty(ids.shape[0], self.width)
        parts = self._parts(ids)
        if self._pool is None or len(parts) == 1:
            for t, pos, local in parts:
                out.index_copy_(0, pos, self.tensors[t].index_select(0, local))
            return out
        jobs = [(pos, self._pool.submit(self.tensors[t].index_select, 0, local))
                for t, pos, local in parts]
        for pos, job in jobs:
            out.index_copy_(0, pos, job.result())
        return out

    def write(self, ids: torch.Tensor, records: torch.Tensor) -> None:
        # Distinct ids, so pieces write disjoint rows and may run concurrently.
        parts = self._parts(ids)
        if self._pool is None or len(parts) == 1:
            for t, pos, local in parts:
                self.tensors[t].index_copy_(0, local, records.index_select(0, pos))
            return
        jobs = [self._pool.submit(self.tensors[t].index_copy_, 0, local, records.index_select(0, pos))
                for t, pos, local in parts]
        for job in jobs:
            job.result()

    def flush(self) -> None:
        for mm in self._mmaps:
            mm.flush()

    def export(self) -> RowSource:
        # A checkpoint of a bigger-than-RAM table must stream: concatenate lazily.
        return RowBlocks([[m] for m in self.maps])

    def load(self, records: np.ndarray) -> None:
        for t, tensor in enumerate(self.tensors):
            copy_rows(tensor, records[int(self.offsets[t]):int(self.offsets[t + 1])])
        self.flush()

    def close(self) -> None:
        if not self._mmaps:
            self._lock.release()
            return
        self.flush()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        # Views must go before the maps can close; a view still held
        # elsewhere (an export being read) keeps its map alive instead.
        self.tensors.clear()
        self.maps.clear()
        for mm in self._mmaps:
            with contextlib.suppress(BufferError):
                mm.close()
        self._mmaps.clear()
        self._lock.release()

