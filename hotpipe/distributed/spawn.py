"""Run a function on W local ranks (CPU, gloo, a port the OS picks): tests and benchmarks.

Each rank is a fresh process (forked from a clean fork server, never from the caller) with one torch thread (W ranks on a
2-core machine must not fight over cores), joins the group through
:func:`init_from_env` with the variables torchrun would set (the store is
hosted by the caller, as by torchrun's agent), runs ``fn(ctx, *args)`` and hands its return value (or its
error) back. A rank that raises leaves a failure note for its peers first
(:meth:`DistContext.report_failure`), so they end with an error naming it.

Example:
    >>> results = run_ranks(my_fn, 2, args=(cfg,), timeout=60)   # doctest: +SKIP
    >>> [r.exitcode for r in results]
    [0, 0]
"""

from __future__ import annotations

import os
import pickle
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from hotpipe.errors import HotpipeError


@dataclass
class RankResult:
    """What one rank left: its exit code, return value or error (type name and message)."""

    rank: int
    exitcode: int | None  # None: still running at the deadline (then killed)
    value: Any = None
    error_type: str | None = None
    error: str | None = None


def _entry(fn: Callable[..., Any], rank: int, world_size: int, port: int, args: tuple[Any, ...],
           timeout: float, out: str) -> None:
    import torch

    from hotpipe.distributed.context import init_from_env

    torch.set_num_threads(1)
    # What torchrun sets: ranks join through init_from_env, the path users take.
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), TORCHELASTIC_USE_AGENT_STORE="True")
    ctx = None
    result: dict[str, Any] = {}
    try:
        ctx = init_from_env(timeout=timeout, backend="gloo")
        result["value"] = fn(ctx, *args)
    except BaseException as e:  # noqa: BLE001 - every error goes back to the parent
        if ctx is not None:
            ctx.report_failure(e)
        result = {"error_type": type(e).__name__, "error": f"{e}\n{traceback.format_exc()}"}
    Path(out).write_bytes(pickle.dumps(result))
    if ctx is not None and "error" not in result:
        ctx.close()
    if "error" in result:
        raise SystemExit(1)


def run_ranks(fn: Callable[..., Any], world_size: int, *, args: tuple[Any, ...] = (),
              timeout: float = 60.0, join_timeout: float | None = None) -> list[RankResult]:
    """Run ``fn(ctx, *args)`` on ``world_size`` spawned ranks; collect every rank's result.

    Args:
        fn: a module-level (picklable) function.
        world_size: ranks W.
        args: picklable arguments for every rank.
        timeout: the process group's collective timeout (seconds).
        join_timeout: seconds to wait for all ranks (default ``2 * timeout + 30``);
            ranks still alive then are killed and reported with exitcode None.
    """
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if world_size < 1:
        raise HotpipeError(f"world_size must be >= 1, found {world_size}")
    # The rendezvous store lives here, as torchrun's agent hosts it, not in
    # rank 0: a failed rank 0 then takes no one's failure notes with it.
    store = dist.TCPStore("127.0.0.1", 0, world_size, is_master=True, wait_for_workers=False,
                          timeout=timedelta(seconds=timeout))
    port = store.port
    spawn = mp.get_context("forkserver")
    # The fork server imports torch and the training stack once, before any
    # torch op has started a thread pool, and forks every rank from there:
    # a rank then starts in well under a second instead of re-importing
    # torch (seconds each on a loaded 2-core machine). Later calls reuse it.
    # torch._dynamo: torch.optim imports it on first use, 6 s on this machine.
    spawn.set_forkserver_preload(["torch", "torch._dynamo", "hotpipe.distributed.run", fn.__module__])
    with tempfile.TemporaryDirectory(prefix="hotpipe-ranks-") as tmp:
        outs = [str(Path(tmp) / f"rank{r}.pkl") for r in range(world_size)]
        procs = [spawn.Process(target=_entry, args=(fn, r, world_size, port, args, timeout, outs[r]),
                               daemon=False) for r in range(world_size)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + (join_timeout if join_timeout is not None else 2 * timeout + 30)
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        results = []
        for r, p in enumerate(procs):
            if p.is_alive():  # past the deadline: a hang, reported as such
                p.kill()
                p.join()
                results.append(RankResult(r, None))
                continue
            res = RankResult(r, p.exitcode)
            if Path(outs[r]).exists():
                data = pickle.loads(Path(outs[r]).read_bytes())
                res.value, res.error_type, res.error = (data.get("value"), data.get("error_type"),
                                                        data.get("error"))
            results.append(res)
        return results
