"""A file tier that stays cold: a benchmark utility, never used by training itself.

The machine has 24 GiB of RAM, so any table a test can build fits in the page
cache, and a memory-mapped file tier then runs at RAM speed: the exact
lookahead run never stalls and schedules or skipping cannot show what they
save. :class:`ColdFileBacking` wraps the file tier of a built run and keeps
it cold: once at the start it evicts the table files from the page cache,
and after every read it evicts the pages that read touched
(``madvise(MADV_DONTNEED)`` on the map, then ``posix_fadvise(POSIX_FADV_DONTNEED)``
on the file, per run of consecutive pages), so each fetch reads the disk as a
table much larger than RAM would (page-cache hit rate ~ RAM / table size ~ 0).
Dropping only the pages just read costs a few syscalls per page range
(``drop_seconds``); dropping whole files before every read cost ~60 ms per
step here, a third of the epoch, which a real big table would not pay.
Dirty pages are not forced out (fadvise starts their write-back and keeps
them until written, as the kernel's own write-back would), so written rows
may still be read warm.

It needs the file tier's memory maps (``FileBacking.maps``) and its table
files (``table-*.f32`` in its directory).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

_MADV_DONTNEED = 4  # Linux <sys/mman.h>
_PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)


class ColdFileBacking:
    """Delegates to a file tier, dropping its pages from the page cache before each read.

    Args:
        inner: a ``FileBacking`` (hotpipe/storage/backing.py).

    Attributes:
        drops: page-cache drops done (one at the start, one per read).
        drop_seconds: time spent dropping (part of the mover's time).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.num_rows, self.width = inner.num_rows, inner.width
        self._files = sorted(Path(inner.dir).glob("table-*.f32"))
        if not self._files or len(self._files) != len(getattr(inner, "maps", [])):
            raise ValueError(f"{inner!r} is not a memory-mapped file tier with table files")
        self._fds = [os.open(p, os.O_RDONLY) for p in self._files]
        self._bounds = np.asarray(inner.offsets, dtype=np.int64)  # (T+1,) first global row per table
        self._row_bytes = inner.width * 4
        self.drops, self.drop_seconds = 0, 0.0
        self.drop()

    def drop(self) -> None:
        """Evict every page of the table files that is not dirty."""
        t0 = time.perf_counter()
        for t, a in enumerate(self.inner.maps):
            self._evict(t, 0, a.nbytes)
        self.drops += 1
        self.drop_seconds += time.perf_counter() - t0

    def _evict(self, t: int, start: int, length: int) -> None:
        a: np.ndarray = self.inner.maps[t]
        if _libc.madvise(ctypes.c_void_p(a.ctypes.data + start), ctypes.c_size_t(length),
                         _MADV_DONTNEED) != 0:
            raise OSError(ctypes.get_errno(), "madvise(MADV_DONTNEED) failed")
        os.posix_fadvise(self._fds[t], start, length, os.POSIX_FADV_DONTNEED)

    def drop_rows(self, ids: torch.Tensor) -> None:
        """Evict the pages holding rows ``ids`` (global), one call per run of pages."""
        t0 = time.perf_counter()
        g = ids.numpy().astype(np.int64)
        table = np.searchsorted(self._bounds, g, side="right") - 1  # (M,)
        local = g - self._bounds[table]
        first = local * self._row_bytes // _PAGE  # a row may straddle two pages
        last = ((local + 1) * self._row_bytes - 1) // _PAGE
        pages = np.unique(np.concatenate([table * (1 << 40) + first, table * (1 << 40) + last]))
        tab, page = pages >> 40, pages & ((1 << 40) - 1)
        # runs of consecutive pages of one table
        brk = np.flatnonzero((np.diff(page) != 1) | (np.diff(tab) != 0)) + 1
        for lo, hi in zip(np.r_[0, brk], np.r_[brk, pages.size], strict=True):
            t = int(tab[lo])
            start = int(page[lo]) * _PAGE
            end = min((int(page[hi - 1]) + 1) * _PAGE, int(self.inner.maps[t].nbytes))
            self._evict(t, start, end - start)
        self.drops += 1
        self.drop_seconds += time.perf_counter() - t0

    def read(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.inner.read(ids)
        self.drop_rows(ids)  # cold again for the next read of these rows
        return out

    def write(self, ids: torch.Tensor, records: torch.Tensor) -> None:
        self.inner.write(ids, records)

    def flush(self) -> None:
        self.inner.flush()

    def export(self) -> Any:
        return self.inner.export()

    def load(self, records: np.ndarray) -> None:
        self.inner.load(records)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        self.inner.close()


def make_cold(components: Any) -> ColdFileBacking:
    """Wrap a built run's file tier (``build_components(...)`` with ``cache.backing=file``)."""
    tiers = components.feed.tiers
    cold = ColdFileBacking(tiers.backing)
    tiers.backing = cold
    return cold
