"""Who this process is among its peers: rank, world size, process group, timeout.

A :class:`DistContext` is built once per process and handed to every
distributed component (never read from module globals), so a test can run
several contexts side by side and a component's collaborators are visible in
its signature.

Two ways to build one::

    ctx = init_from_env(timeout=60)                       # under torchrun
    ctx = init_tcp("127.0.0.1", port, rank=r, world_size=2)   # tests, scripts

Failures: collectives on gloo end with an opaque "connection closed" (or
only after the timeout) when a peer dies. A rank that fails calls
:meth:`DistContext.report_failure` first, which writes its rank and error into
the rendezvous store; a survivor whose collective then fails raises
:class:`PeerFailedError` naming the failed rank(s) it finds there.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch.distributed as dist

from hotpipe.errors import ConfigError, HotpipeError

#: Seconds a collective may wait for a peer before every rank gives up.
#: Long enough for a slow step of a big table on a shared machine, short
#: enough that a dead peer is reported within minutes, not gloo's 30.
DEFAULT_TIMEOUT_S = 300.0
_FAIL_KEY = "hotpipe/failed/"


class PeerFailedError(HotpipeError):
    """A collective failed because another rank died, raised or never arrived.

    Attributes:
        rank: this process's rank.
        failed: ranks that reported a failure (empty if none could say: killed
            by a signal, or never arrived within the timeout).
        where: what this rank was doing (``"row exchange, step 12"``).
    """

    def __init__(self, rank: int, failed: dict[int, str], where: str, cause: BaseException) -> None:
        self.rank, self.failed, self.where = rank, failed, where
        who = ("; ".join(f"rank {r} failed: {msg}" for r, msg in sorted(failed.items()))
               if failed else "no peer reported an error (killed, or never arrived within the timeout)")
        super().__init__(f"rank {rank}: {where} failed: {who} [{type(cause).__name__}: "
                         f"{str(cause).splitlines()[0] if str(cause) else ''}]")


@dataclass
class DistContext:
    """One process's place in a process group.

    Args:
        rank: this process, 0..world_size-1.
        world_size: processes W.
        backend: ``gloo`` (CPU) or ``nccl`` (GPU).
        timeout: seconds a collective waits for its peers.
        store: the rendezvous key-value store (failure notes go there).
        group: the process group collectives run on (``None``: the default group).
    """

    rank: int
    world_size: int
    backend: str
    timeout: float
    store: Any
    group: Any = None
    #: what the rank is doing ("step 12"), named in a PeerFailedError; the loop sets it.
    phase: str = "setup"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def report_failure(self, exc: BaseException) -> None:
        """Leave this rank's error where its peers look when their collectives fail."""
        # The store may be gone with rank 0: then there is no one left to tell.
        with suppress(Exception):
            self.store.set(f"{_FAIL_KEY}{self.rank}", f"{type(exc).__name__}: {exc}"[:500])

    def failed_ranks(self) -> dict[int, str]:
        """Ranks that reported a failure, with their message (best effort)."""
        out: dict[int, str] = {}
        for r in range(self.world_size):
            try:
                if r != self.rank and self.store.check([f"{_FAIL_KEY}{r}"]):
                    out[r] = self.store.get(f"{_FAIL_KEY}{r}").decode(errors="replace")
            except Exception:  # noqa: BLE001 - store unreachable: we cannot name anyone
                break
        return out

    @contextmanager
    def guard(self, where: str) -> Iterator[None]:
        """Turn a failed collective into a :class:`PeerFailedError` naming the failed rank."""
        try:
            yield
        except (RuntimeError, dist.DistError) as e:
            if isinstance(e, HotpipeError):
                raise
            raise PeerFailedError(self.rank, self._wait_for_notes(), f"{where} at {self.phase}",
                                  e) from e

    def _wait_for_notes(self) -> dict[int, str]:
        # The failing rank writes its note just before it exits; its connection
        # can close a moment before the note lands, so look twice.
        notes = self.failed_ranks()
        if not notes:
            time.sleep(0.5)
            notes = self.failed_ranks()
        return notes

    def barrier(self, where: str = "barrier") -> None:
        with self.guard(where):
            dist.barrier(group=self.group)

    def close(self) -> None:
        """Leave the process group (safe to call twice)."""
        if dist.is_initialized():
            dist.destroy_process_group()


def init_tcp(host: str, port: int, *, rank: int, world_size: int, backend: str = "gloo",
             timeout: float = DEFAULT_TIMEOUT_S) -> DistContext:
    """Join (rank 0: host) a process group at ``tcp://host:port``.

    Example:
        >>> ctx = init_tcp("127.0.0.1", 29512, rank=0, world_size=1)  # doctest: +SKIP
    """
    return _init(f"tcp://{host}:{port}", rank=rank, world_size=world_size, backend=backend,
                 timeout=timeout)


def init_from_env(*, timeout: float = DEFAULT_TIMEOUT_S, backend: str | None = None) -> DistContext:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``).

    Raises:
        ConfigError: a variable is missing or not an integer.
    """
    vals: dict[str, int] = {}
    for key in ("RANK", "WORLD_SIZE"):
        raw = os.environ.get(key)
        if raw is None or not raw.strip().isdigit():
            raise ConfigError(key, f"expected an integer environment variable (set by torchrun), "
                                   f"found {raw!r}")
        vals[key] = int(raw)
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(key):
            raise ConfigError(key, "expected an environment variable (set by torchrun), found none")
    import torch

    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    return _init("env://", rank=vals["RANK"], world_size=vals["WORLD_SIZE"], backend=backend,
                 timeout=timeout)


def _init(url: str, *, rank: int, world_size: int, backend: str, timeout: float) -> DistContext:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError("rank", f"expected 0 <= rank < world_size, found rank={rank} "
                                  f"world_size={world_size}")
    if timeout <= 0:
        raise ConfigError("timeout", f"expected seconds > 0, found {timeout}")
    td = timedelta(seconds=timeout)
    # The same steps init_process_group takes for an init_method, done here so
    # that we keep the store (failure notes) instead of reaching into privates.
    store, rank, world_size = next(dist.rendezvous(url, rank=rank, world_size=world_size, timeout=td))
    store.set_timeout(td)
    dist.init_process_group(backend, store=dist.PrefixStore("default_pg", store), rank=rank,
                            world_size=world_size, timeout=td)
    return DistContext(rank=rank, world_size=world_size, backend=backend, timeout=timeout,
                       store=store)
