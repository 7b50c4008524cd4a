"""Atomic checkpoints.

Layout::

    RUN/checkpoints/step-00000123/   dense.pt (model, optimizer, counters),
                                     emb_records.npy (R, D+W): each row's weights
                                     then its optimizer state
    RUN/checkpoints/LATEST           "step-00000123"

A checkpoint directory is written under a temporary name, fsynced and
renamed; only then is LATEST replaced (write + fsync + rename). A crash at
any point leaves LATEST naming a complete checkpoint. Older checkpoints are
removed after the new LATEST is in place.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from hotpipe.errors import CheckpointError


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RowSource(Protocol):
    """Anything with a 2-D ``shape`` that can be sliced in row chunks."""

    shape: tuple[int, int]

    def __getitem__(self, rows: slice) -> np.ndarray: ...


def _save_npy(path: Path, rows: RowSource, chunk: int = 1 << 16) -> None:
    """Stream ``rows`` into a .npy file chunk by chunk: a table bigger than RAM
    is checkpointed without ever being loaded whole."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=tuple(rows.shape))
    for r0 in range(0, rows.shape[0], chunk):
        out[r0:r0 + chunk] = rows[r0:r0 + chunk]
    out.flush()
    del out
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def save_checkpoint(run_dir: Path, step: int, dense: dict[str, Any], records: RowSource,
                    keep: int = 1) -> Path:
    """Write checkpoint ``step`` atomically and point LATEST at it."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    tmp = root / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    with open(tmp / "dense.pt", "wb") as f:
        torch.save(dense, f)
        f.flush()
        os.fsync(f.fileno())
    _save_npy(tmp / "emb_records.npy", records)
    _fsync_dir(tmp)
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    latest_tmp = root / f".LATEST.tmp-{os.getpid()}"
    latest_tmp.write_text(name)
    with open(latest_tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(latest_tmp, root / "LATEST")
    _fsync_dir(root)
    old = sorted(p for p in root.glob("step-*") if p.name != name)
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def load_checkpoint(run_dir: Path) -> tuple[dict[str, Any], np.ndarray]:
    """Read the checkpoint LATEST names: (dense dict, (R, D+W) memory-mapped records)."""
    root = Path(run_dir) / "checkpoints"
    latest = root / "LATEST"
    if not latest.is_file():
        raise CheckpointError(f"no checkpoint to resume from: {latest} does not exist")
    ck = root / latest.read_text().strip()
    try:
        dense = torch.load(ck / "dense.pt", weights_only=False)
        records = np.load(ck / "emb_records.npy", mmap_mode="r")
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {ck} is unreadable: {e}") from e
    return dense, records
