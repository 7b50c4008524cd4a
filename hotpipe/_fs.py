"""File-system guards every stage shares: advisory locks, stale temp folders,
free memory and disk, and turning ENOSPC into an error a user can act on.

Why advisory ``flock`` locks: they are released by the kernel when the holder
dies (kill -9 included), so a crashed run never leaves a lock that blocks the
next one, and the lock file itself can say who holds it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from hotpipe.errors import LockError, ResourceError


class DirLock:
    """An exclusive advisory lock on ``path`` (a file created if missing).

    Args:
        path: the lock file (e.g. ``RUN/.lock``).
        what: a short description for the holder line ("training run", "table files").

    Raises:
        LockError: another live process holds it; the message names it.
    """

    def __init__(self, path: str | os.PathLike[str], what: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.path.read_text(errors="replace").strip() or "unknown process"
            os.close(self._fd)
            self._fd = None
            raise LockError(str(self.path.parent), holder) from None
        cmd = " ".join(sys.argv[:3])[:120]
        info = f"{what}: pid {os.getpid()} on {socket.gethostname()} ({cmd})"
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, info.encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> DirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_TMP_PID = re.compile(r"\.tmp-(\d+)$")


def remove_stale_temps(directory: Path) -> list[Path]:
    """Remove ``*.tmp-<pid>`` entries in ``directory`` whose owner process is gone."""
    gone: list[Path] = []
    if not directory.is_dir():
        return gone
    for p in directory.iterdir():
        m = _TMP_PID.search(p.name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def available_memory() -> int | None:
    """Bytes of RAM available to a new allocation (MemAvailable), or None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def check_memory(needed: int, what: str, hint: str) -> None:
    """Refuse an allocation that cannot fit in RAM, before trying it.

    Raises:
        ResourceError: naming what needs how much, what is available and ``hint``.
    """
    have = available_memory()
    if have is not None and needed > have:
        raise ResourceError(f"{what} needs {gib(needed)} of RAM but {gib(have)} is available; {hint}")


@contextlib.contextmanager
def disk_errors(path: str | os.PathLike[str], cleanup: Path | None = None) -> Iterator[None]:
    """Turn ENOSPC/EDQUOT/EACCES while writing ``path`` into a :class:`ResourceError`,
    removing ``cleanup`` (a partial temp file or folder) first."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
            raise
        if cleanup is not None:
            if cleanup.is_dir():
                shutil.rmtree(cleanup, ignore_errors=True)
            else:
                cleanup.unlink(missing_ok=True)
        reason = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                  errno.EACCES: "permission denied", errno.EROFS: "the file system is read-only"}
        raise ResourceError(f"cannot write {path}: {reason[e.errno]}"
                            + (f" (partial {cleanup.name} removed)" if cleanup is not None else "")
                            ) from e


def reserve_file(path: Path, size: int) -> None:
    """Create ``path`` with ``size`` bytes actually allocated on disk.

    Why not ``truncate``: a sparse file that a memory map later fills finds a
    full disk as SIGBUS (the process dies with no message); allocating up
    front turns that into ENOSPC here, where it can be reported.
    """
    with disk_errors(path, cleanup=path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            if size:
                try:
                    os.posix_fallocate(fd, 0, size)
                except OSError as e:  # file systems without fallocate (tmpfs on old kernels)
                    if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    os.ftruncate(fd, size)
        finally:
            os.close(fd)
