"""Putting a finished dataset directory in place without ever losing one.

A writer builds ``DIR`` as ``.DIR.tmp-<host>-<pid>`` next to it. To publish it
(``--overwrite`` included)::

    1. rename DIR      -> .DIR.old-<host>-<pid>    (only if DIR exists)
    2. rename tmp      -> DIR
    3. delete .DIR.old-<host>-<pid>

A kill before 1 leaves the old DIR untouched; between 1 and 2 leaves the old
dataset whole under its ``.old`` name (the next writer puts it back, see
:func:`clean_stale`); after 2 leaves the new DIR complete. Never a half
dataset, never neither.

Temp and aside folders carry their owner's host and pid, so a later run can
tell an abandoned one (its process is gone) from one being written right now.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
from pathlib import Path

from hotpipe.data.integrity import fsync_dir
from hotpipe.errors import ConfigError, ResourceError

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def owner_tag() -> str:
    """``<host>-<pid>`` of this process, safe inside a file name."""
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname()) or "host"
    return f"{host}-{os.getpid()}"


def temp_path(out: Path, kind: str) -> Path:
    return out.parent / f".{out.name}.{kind}-{owner_tag()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _abandoned(name: str, prefix: str) -> bool:
    """Whether ``.DIR.<kind>-<host>-<pid>`` was left by a dead process of this host."""
    tag = name[len(prefix):]
    host, _, pid = tag.rpartition("-")
    # "" is the older ".DIR.tmp-<pid>" naming, written before hosts were recorded: judged as ours.
    if not pid.isdigit() or host not in ("", owner_tag().rpartition("-")[0]):
        return False  # another machine's (shared filesystem): not ours to judge
    return int(pid) != os.getpid() and not _pid_alive(int(pid))


def clean_stale(out: Path) -> list[str]:
    """Remove temp folders of dead writers of ``out``; restore an old dataset left aside.

    Returns:
        one line per action, for the caller to report.
    """
    done: list[str] = []
    if not out.parent.is_dir():
        return done
    for kind in ("old", "tmp"):  # "old" first: a restored DIR must not be deleted as a temp
        prefix = f".{out.name}.{kind}-"
        for p in sorted(out.parent.glob(f"{prefix}*")):
            if not _abandoned(p.name, prefix):
                continue
            if kind == "old" and not out.exists():
                os.replace(p, out)  # killed between steps 1 and 2: the old dataset is the good one
                done.append(f"restored {out} from an interrupted --overwrite ({p.name})")
            else:
                shutil.rmtree(p, ignore_errors=True)
                done.append(f"removed abandoned {p.name}")
    return done


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` that cannot or must not be replaced, before any work is done.

    Raises:
        ConfigError: ``out`` is a file, exists without ``overwrite``, or exists
            and is not a dataset (``--overwrite`` would delete someone's folder).
        ResourceError: the parent directory cannot be written.
    """
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise ConfigError("out", f"{out} is a file, not a dataset directory; choose another --out")
        if not overwrite:
            raise ConfigError("out", f"{out} already exists; choose another --out or pass --overwrite")
        if not (out / "manifest.json").is_file() and any(out.iterdir()):
            raise ConfigError("out", f"{out} exists and is not a hotpipe dataset (no manifest.json); "
                                     "refusing to delete it with --overwrite")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError("out", f"{parent} is a file, so {out} cannot be created")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ResourceError(f"{parent}: permission denied; cannot create {out} there")


def publish(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` to ``out`` by the three steps in the module docstring."""
    aside = temp_path(out, "old") if out.exists() else None
    if aside is not None:
        os.replace(out, aside)
    try:
        os.replace(tmp, out)
    except BaseException:
        if aside is not None:
            os.replace(aside, out)
        raise
    fsync_dir(out.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def resource_error(e: OSError, what: Path) -> ResourceError | None:
    """The ResourceError for a full disk or a permission problem, else None."""
    if e.errno in _DISK_FULL:
        return ResourceError(f"{what}: disk full ({os.strerror(e.errno)}) while writing the dataset; "
                             "temporary files were removed, nothing was changed; free space and rerun")
    if isinstance(e, PermissionError):
        return ResourceError(f"{e.filename or what}: permission denied")
    return None
