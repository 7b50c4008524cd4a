"""The benchmark-only cold file tier (benchmarks/cold_tier.py) really reads from disk:
no clean page of the table files stays resident at the start or after a read."""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.cold_tier import ColdFileBacking
from hotpipe.model.sparse_optim import make_row_optimizer
from hotpipe.storage.backing import FileBacking

pytestmark = pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="Linux page-cache calls")


def _resident_pages(path: Path) -> int:
    """Pages of ``path`` in the page cache (mincore over a fresh map of it)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)
    try:
        view = np.frombuffer(mm, dtype=np.uint8)
        vec = (ctypes.c_ubyte * -(-size // mmap.PAGESIZE))()
        libc = ctypes.CDLL(None, use_errno=True)
        rc = libc.mincore(ctypes.c_void_p(view.ctypes.data), ctypes.c_size_t(size), vec)
        assert rc == 0, ctypes.get_errno()
        del view  # the map cannot close while a view of it lives
        return sum(v & 1 for v in vec)
    finally:
        mm.close()


def test_cold_tier_evicts_the_pages_each_read_touched(tmp_path: Path) -> None:
    opt = make_row_optimizer("adagrad", lr=0.1, dim=16)
    inner = FileBacking(directory=tmp_path / "t", cardinalities=[4096, 2048], dim=16, optimizer=opt, seed=0)
    files = sorted((tmp_path / "t").glob("table-*.f32"))
    assert sum(_resident_pages(f) for f in files) > 0  # just written: in the page cache
    cold = ColdFileBacking(inner)
    try:
        assert sum(_resident_pages(f) for f in files) == 0  # evicted at the start
        ids = torch.tensor([5, 6, 4095, 4096, 6000, 100, 2000])  # both tables, a page boundary
        want = inner.read(ids)  # a plain read brings their pages back
        assert sum(_resident_pages(f) for f in files) > 0
        assert torch.equal(cold.read(ids), want)  # the same rows ...
        assert sum(_resident_pages(f) for f in files) == 0  # ... and their pages evicted after
        cold.write(ids[:3], want[:3] + 1)
        cold.flush()
        assert torch.equal(cold.read(ids[:3]), want[:3] + 1) and cold.drops == 3
    finally:
        cold.close()
