"""Atomic, verified checkpoints.

Layout::

    RUN/checkpoints/step-00000123/      dense.pt (model, optimizer, counters, config),
                                        emb_records.npy (R, D+W): each row's weights
                                        then its optimizer state,
                                        integrity.json: sha256 of both, the step,
                                        the dataset's fingerprint
    RUN/checkpoints/step-00000123.r1/   a later checkpoint at the same step
    RUN/checkpoints/LATEST              "step-00000123.r1"

The protocol, and why each part:

1. Write the new checkpoint under a temporary name (``.NAME.tmp-<pid>``),
   fsync every file and the folder, then rename it to a name *no existing
   checkpoint has* (``.rK`` for a rewrite at the same step). A crash here
   leaves only a temp folder, which the next save removes (its pid is gone).
2. Point ``LATEST`` at it (write + fsync + rename + fsync of the folder).
   Until this rename, ``LATEST`` names the previous complete checkpoint.
3. Only then remove older checkpoints. The last complete checkpoint is never
   removed before its replacement is durable, so a kill at any point leaves
   ``LATEST`` naming a complete, verifiable checkpoint.

A full disk raises :class:`~hotpipe.errors.ResourceError` with the partial
folder removed, so freeing space is enough for the next save or resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hotpipe._fs import disk_errors, remove_stale_temps
from hotpipe.errors import CheckpointError
from hotpipe.storage.slots import RowSource

_NAME = re.compile(r"^step-(\d{8})(?:\.r(\d+))?$")
_CHUNK = 1 << 16


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _save_npy(path: Path, rows: RowSource) -> str:
    """Stream ``rows`` into a .npy file chunk by chunk (a table bigger than RAM
    is never loaded whole); return the sha256 of the row data."""
    h = hashlib.sha256()
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=tuple(rows.shape))
    for r0 in range(0, rows.shape[0], _CHUNK):
        chunk = np.ascontiguousarray(rows[r0:r0 + _CHUNK], dtype=np.float32)
        out[r0:r0 + chunk.shape[0]] = chunk
        h.update(chunk.tobytes())
    out.flush()
    del out
    _fsync_file(path)
    return h.hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _order(p: Path) -> tuple[int, int]:
    m = _NAME.match(p.name)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else (-1, -1)


def _fresh_name(root: Path, step: int) -> str:
    """``step-N``, or ``step-N.rK`` if a checkpoint of that step exists: never reuse a name."""
    base = f"step-{step:08d}"
    if not (root / base).exists():
        return base
    k = 1
    while (root / f"{base}.r{k}").exists():
        k += 1
    return f"{base}.r{k}"


def save_checkpoint(run_dir: Path, step: int, dense: dict[str, Any], records: RowSource, *,
                    dataset: str = "", keep: int = 1) -> Path:
    """Write checkpoint ``step`` atomically and point LATEST at it.

    Args:
        run_dir: the run directory.
        step: steps trained so far.
        dense: everything but the rows (model, optimizers, loop state, config, rng).
        records: (R, D+W) row records, read in chunks.
        dataset: the dataset's fingerprint; resume refuses another dataset.
        keep: complete checkpoints to keep (>= 1).

    Raises:
        ResourceError: the disk is full (or read-only); the partial checkpoint is removed.
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(root)
    name = _fresh_name(root, step)
    tmp = root / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with disk_errors(root / name, cleanup=tmp):
        tmp.mkdir()
        with open(tmp / "dense.pt", "wb") as f:
            torch.save(dense, f)
            f.flush()
            os.fsync(f.fileno())
        rows_sha = _save_npy(tmp / "emb_records.npy", records)
        integrity = {"step": step, "dataset": dataset, "rows_shape": list(records.shape),
                     "dense.pt": _sha256_file(tmp / "dense.pt"), "emb_records.npy": rows_sha}
        (tmp / "integrity.json").write_text(json.dumps(integrity, indent=1))
        _fsync_file(tmp / "integrity.json")
        _fsync_dir(tmp)
        final = root / name
        os.replace(tmp, final)
        _fsync_dir(root)
        latest_tmp = root / f".LATEST.tmp-{os.getpid()}"
        latest_tmp.write_text(name)
        _fsync_file(latest_tmp)
        os.replace(latest_tmp, root / "LATEST")
        _fsync_dir(root)
    # Only now, with LATEST durable on the new one, may older ones go.
    older = sorted((p for p in root.glob("step-*") if p.name != name), key=_order)
    for p in older[: max(0, len(older) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_step(run_dir: Path) -> int | None:
    """The step of the checkpoint LATEST names, or None if there is none."""
    latest = Path(run_dir) / "checkpoints" / "LATEST"
    if not latest.is_file():
        return None
    m = _NAME.match(latest.read_text().strip())
    return int(m.group(1)) if m else None


def load_checkpoint(run_dir: Path, *, dataset: str | None = None,
                    verify: bool = True) -> tuple[dict[str, Any], np.ndarray]:
    """Read and verify the checkpoint LATEST names.

    Returns:
        (dense dict, (R, D+W) memory-mapped records).

    Raises:
        CheckpointError: no checkpoint, a missing or garbled file, a checksum
            mismatch, non-finite rows, or (``dataset`` given) a checkpoint of
            another dataset — each naming the file.
    """
    root = Path(run_dir) / "checkpoints"
    latest = root / "LATEST"
    if not latest.is_file():
        raise CheckpointError(f"no checkpoint to resume from: {latest} does not exist")
    ck = root / latest.read_text().strip()
    if not ck.is_dir():
        raise CheckpointError(f"{latest} names {ck.name}, which does not exist")
    integrity = _read_integrity(ck)
    if dataset is not None and integrity is not None and integrity.get("dataset") not in ("", dataset):
        raise CheckpointError(f"checkpoint {ck} was trained on another dataset (fingerprint "
                              f"{str(integrity.get('dataset'))[:12]}..., this one {dataset[:12]}...); "
                              "resume with the dataset it was trained on")
    if verify and integrity is not None:
        got = _sha256_file(ck / "dense.pt") if (ck / "dense.pt").is_file() else "missing"
        if got != integrity.get("dense.pt"):
            raise CheckpointError(f"{ck / 'dense.pt'} is damaged: its sha256 does not match "
                                  "integrity.json (found a different or missing file)")
    try:
        dense = torch.load(ck / "dense.pt", weights_only=False)
        records = np.load(ck / "emb_records.npy", mmap_mode="r")
    except Exception as e:  # torch/numpy raise many types for a garbled file
        raise CheckpointError(f"checkpoint {ck} is unreadable: {type(e).__name__}: {e}") from e
    if not isinstance(dense, dict) or records.ndim != 2:
        raise CheckpointError(f"checkpoint {ck} is garbled: expected a dict and (R, D+W) records, "
                              f"found {type(dense).__name__} and shape {records.shape}")
    if verify:
        _verify_rows(ck / "emb_records.npy", records, integrity)
    return dense, records


def _read_integrity(ck: Path) -> dict[str, Any] | None:
    f = ck / "integrity.json"
    if not f.is_file():
        return None  # a checkpoint written before integrity records existed
    try:
        out = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{f} is garbled: {e}") from e
    if not isinstance(out, dict):
        raise CheckpointError(f"{f} is garbled: expected a JSON object")
    return out


def _verify_rows(path: Path, records: np.ndarray, integrity: dict[str, Any] | None) -> None:
    """One streaming pass: checksum (when recorded) and finiteness of every row."""
    h = hashlib.sha256()
    for r0 in range(0, records.shape[0], _CHUNK):
        chunk = np.ascontiguousarray(records[r0:r0 + _CHUNK])
        if not np.isfinite(chunk).all():
            bad = r0 + int(np.nonzero(~np.isfinite(chunk).all(axis=1))[0][0])
            raise CheckpointError(f"{path} holds non-finite values (first at row {bad}); "
                                  "it cannot be resumed")
        h.update(chunk.tobytes())
    if integrity is not None and h.hexdigest() != integrity.get("emb_records.npy"):
        raise CheckpointError(f"{path} is damaged: its sha256 does not match integrity.json")
