"""The run directory: one writer at a time, never an old run silently replaced.

``RunDir`` is taken before anything is written:

- it holds an advisory lock on ``RUN/.lock`` for the whole run, so a second
  ``hotpipe train`` into the same directory fails at once with a
  :class:`~hotpipe.errors.LockError` naming the holder (the kernel drops
  the lock when the holder dies, even by kill -9);
- a directory that already holds a run (a checkpoint or ``metrics.json``)
  is refused unless the caller resumes it or asks to overwrite it;
- on resume, outputs that describe a finished run (``metrics.json``,
  ``losses.json``, ``report.md``) are removed first — a killed resume must
  not leave results that look current — and ``history.jsonl`` is cut back
  to the checkpoint's step so steps are never listed twice.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from hotpipe._fs import DirLock, remove_stale_temps
from hotpipe.errors import ConfigError, HotpipeError, ResourceError

# What `hotpipe train` writes; --overwrite removes exactly these, nothing else.
OUTPUTS = ("checkpoints", "metrics.json", "losses.json", "history.jsonl", "config.yaml",
           "report.md", "plots", "tensorboard", "tables")
_FINISHED = ("metrics.json", "losses.json", "report.md", "plots")


class RunExistsError(HotpipeError):
    """The run directory already holds a run and neither resume nor overwrite was asked."""


class RunDir:
    """Lock and prepare a run directory.

    Args:
        path: the run directory (created if missing).
        resume: continue the run there.
        overwrite: replace a run there.
    """

    def __init__(self, path: str | os.PathLike[str], *, resume: bool, overwrite: bool) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ResourceError(f"--out {self.path} is a file, not a run directory")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ResourceError(f"cannot create run directory {self.path}: {e.strerror}") from e
        if not os.access(self.path, os.W_OK):
            raise ResourceError(f"run directory {self.path} is not writable (permission denied)")
        self.lock = DirLock(self.path / ".lock", "training run")
        try:
            self._prepare(resume, overwrite)
        except BaseException:
            self.lock.release()
            raise

    def _prepare(self, resume: bool, overwrite: bool) -> None:
        remove_stale_temps(self.path)  # half-written metrics/history of a killed run
        if resume and overwrite:
            raise ConfigError("--overwrite", "cannot be combined with --resume")
        held = [n for n in ("checkpoints/LATEST", "metrics.json") if (self.path / n).exists()]
        if resume:
            for name in _FINISHED:
                _remove(self.path / name)
            return
        if held and not overwrite:
            raise RunExistsError(f"{self.path} already holds a run ({', '.join(held)}); use --resume "
                                 "to continue it or --overwrite to replace it")
        if held:  # --overwrite of a finished or checkpointed run: its outputs go, nothing else
            for name in OUTPUTS:
                _remove(self.path / name)

    def trim_history(self, step: int) -> None:
        """Keep only history records up to ``step`` (the resumed checkpoint's)."""
        path = self.path / "history.jsonl"
        if not path.is_file():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill mid-write
            if isinstance(rec, dict) and int(rec.get("step", 0)) <= step:
                kept.append(line)
        write_atomic(path, "".join(f"{x}\n" for x in kept))

    def release(self) -> None:
        self.lock.release()


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` so that a reader sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def dump_json(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON: NaN/inf become null (a metric that is undefined), never a bare NaN token."""
    return json.dumps(_finite(obj), indent=indent, allow_nan=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
