"""A file tier that stays cold: a benchmark utility, never used by training itself.

The machine has 24 GiB of RAM, so any table a test can build fits in the page
cache, and a memory-mapped file tier then runs at RAM speed: the exact
lookahead run never stalls and schedules or skipping cannot show what they
save. :class:`ColdFileBacking` wraps the file tier of a built run and, before
every read, evicts the table files' pages from the page cache
(``madvise(MADV_DONTNEED)`` on the maps, then ``posix_fadvise(POSIX_FADV_DONTNEED)``
on the files), so each fetch reads the disk as a table much larger than RAM
would (page-cache hit rate ~ RAM / table size ~ 0). Dirty pages are not
forced out (fadvise starts their write-back and keeps them until written, as
the kernel's own write-back would), so written rows may still be read warm.

It needs the file tier's memory maps (``FileBacking.maps``) and its table
files (``table-*.f32`` in its directory).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

_MADV_DONTNEED = 4  # Linux <sys/mman.h>
_libc = ctypes.CDLL(None, use_errno=True)


class ColdFileBacking:
    """Delegates to a file tier, dropping its pages from the page cache before each read.

    Args:
        inner: a ``FileBacking`` (hotpipe/storage/backing.py).

    Attributes:
        drops: page-cache drops done (one per read).
        drop_seconds: time spent dropping (part of the mover's time).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.num_rows, self.width = inner.num_rows, inner.width
        self._files = sorted(Path(inner.dir).glob("table-*.f32"))
        if not self._files or not getattr(inner, "maps", None):
            raise ValueError(f"{inner!r} is not a memory-mapped file tier with table files")
        self._fds = [os.open(p, os.O_RDONLY) for p in self._files]
        self.drops, self.drop_seconds = 0, 0.0

    def drop(self) -> None:
        """Evict every page of the table files that is not dirty."""
        import time

        t0 = time.perf_counter()
        for arr in self.inner.maps:
            a: np.ndarray = arr
            if _libc.madvise(ctypes.c_void_p(a.ctypes.data), ctypes.c_size_t(a.nbytes),
                             _MADV_DONTNEED) != 0:
                raise OSError(ctypes.get_errno(), "madvise(MADV_DONTNEED) failed")
        for fd in self._fds:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        self.drops += 1
        self.drop_seconds += time.perf_counter() - t0

    def read(self, ids: torch.Tensor) -> torch.Tensor:
        self.drop()
        return self.inner.read(ids)

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
