"""Samples/s of W ranks (1 thread each, gloo, one host) vs one process, untiered and tiered.

Arms, interleaved round by round (``--repeats`` rounds, medians reported):

- ``1proc-1t``  one process, one torch thread (what one rank computes with)
- ``1proc-Wt``  one process, W threads (all the cores the ranks use)
- ``Wrank``     W ranks x 1 thread, every rank's rows resident
- ``Wrank-tiered``  W ranks x 1 thread, each rank's rows tiered
  (lookahead, ``--capacity`` of its own rows, host backing)
- ``Wrank-oneshot``, ``Wrank-tiered-oneshot``  the same with
  ``dist.fetch_ahead=false``: each step's rows fetched in one exchange after
  the previous update (nothing overlapped; the same bits)

Each arm trains the same ``--steps`` global steps of the same data
(``train.threads`` sets the threads; the ranks are spawned by
``distributed/spawn.py``) and reports the run's own ``samples_per_s`` (train
seconds: setup and evaluation excluded). The distributed arms also report
their exchange and stall seconds (slowest rank). The machine's load
average is printed before each run. Example::

    python benchmarks/dist_speed.py --data /tmp/dsyn105 --steps 30 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from hotpipe.config import RunConfig, validate
from hotpipe.distributed.context import DistContext
from hotpipe.distributed.run import train_distributed
from hotpipe.distributed.spawn import run_ranks
from hotpipe.plan.planner import Planner
from hotpipe.train.run import train


def _rank(ctx: DistContext, cfg: RunConfig, out: str) -> dict[str, Any]:
    _warm_planner()
    return train_distributed(cfg, out, ctx, overwrite=True)


def _warm_planner() -> None:
    """Plan two tiny steps first: a compiled planner kernel (plan/kernel.py, numba) is
    compiled or loaded from its cache on its first call in a process, seconds to
    minutes on a loaded machine, which is start-up, not training."""
    list(Planner(num_rows=8, capacity=4, window=2, depth=1).plan([np.array([1, 2]), np.array([3])]))


def _cfg(a: argparse.Namespace, threads: int, tiered: bool, ahead: bool = True) -> RunConfig:
    tree: dict[str, Any] = {
        "data": {"path": a.data, "batch_size": a.batch_size, "val_fraction": 0.01,
                 "max_val_rows": 2048},
        "model": {"embedding_dim": a.dim, "bottom": [64, a.dim], "top": [64, 1]},
        "optim": {"embedding": "rowwise_adagrad", "dense": "adagrad"},
        "train": {"max_steps": a.steps, "progress": False, "threads": threads},
        "dist": {"replicate": a.replicate, "fetch_ahead": ahead},
    }
    if tiered:
        tree["cache"] = {"policy": "lookahead", "capacity": a.capacity, "window": 32, "depth": 1}
    return validate(tree)


def _one(arm: str, a: argparse.Namespace, work: Path) -> dict[str, Any]:
    w = a.ranks
    out = str(work / arm)
    if arm.startswith("1proc"):
        _warm_planner()
        m = train(_cfg(a, 1 if arm == "1proc-1t" else w, False), out, overwrite=True)
        return {"samples_per_s": m["samples_per_s"], "train_seconds": m["train_seconds"]}
    cfg = _cfg(a, 1, "tiered" in arm, ahead=not arm.endswith("oneshot"))
    results = run_ranks(_rank, w, args=(cfg, out), timeout=600)
    bad = [r for r in results if r.exitcode != 0]
    if bad:
        raise SystemExit(f"{arm}: rank {bad[0].rank} failed: {bad[0].error}")
    m = results[0].value
    d = m["dist"]
    return {"samples_per_s": m["samples_per_s"], "train_seconds": m["train_seconds"],
            "exchange_seconds": d["exchange_seconds"], "stall_seconds": d["stall_seconds"],
            "allreduce_seconds": max(p["allreduce_seconds"] for p in d["per_rank"]),
            "bytes_per_sample": d["bytes_per_sample"],
            "cache_stall_seconds": m["cache"].get("stall_seconds", 0.0),
            "ahead_wait_seconds": max(p["ahead_wait_seconds"] for p in d["per_rank"]),
            "rows_fetched_ahead": d["rows_fetched_ahead"],
            "rows_fetched_after_update": d["rows_fetched_after_update"],
            "hit_rate": m["cache"].get("hit_rate")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="dataset directory")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--replicate", default=0, help="dist.replicate (0: none)")
    ap.add_argument("--capacity", default="0.1", help="cache.capacity per rank (tiered arm)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--arms", default="1proc-1t,1proc-Wt,Wrank,Wrank-tiered")
    ap.add_argument("--json", default="dist_speed.json")
    a = ap.parse_args()
    if isinstance(a.replicate, str) and a.replicate.strip().isdigit():
        a.replicate = int(a.replicate)
    arms = a.arms.split(",")
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    work = Path(tempfile.mkdtemp(prefix="hotpipe-dist-speed-"))
    for rnd in range(a.repeats):
        for arm in arms:
            load = os.getloadavg()[0]
            r = {**_one(arm, a, work), "load": load}
            runs[arm].append(r)
            print(f"round {rnd} {arm:>13}: {r['samples_per_s']:>9,.0f} samples/s "
                  f"(load {load:.1f})" + (f", exchange {r['exchange_seconds']:.2f} s, stall "
                                          f"{r['stall_seconds']:.2f} s of {r['train_seconds']:.2f} s"
                                          if "exchange_seconds" in r else ""), flush=True)
    base = statistics.median(r["samples_per_s"] for r in runs[arms[0]])
    print(f"\nmedians of {a.repeats} (B={a.batch_size}, D={a.dim}, {a.steps} steps, W={a.ranks}); "
          f"load during the runs {min(r['load'] for x in runs.values() for r in x):.1f}-"
          f"{max(r['load'] for x in runs.values() for r in x):.1f}")
    summary = {}
    for arm in arms:
        med = {k: statistics.median(r[k] for r in runs[arm]) for k in runs[arm][0]
               if isinstance(runs[arm][0][k], (int, float)) and runs[arm][0][k] is not None}
        summary[arm] = med
        extra = (f"  exchange {med['exchange_seconds']:.2f} s  all-reduce {med['allreduce_seconds']:.2f} s"
                 f"  stall {med['stall_seconds']:.2f} s of {med['train_seconds']:.2f} s"
                 if "exchange_seconds" in med else "")
        print(f"{arm:>13}: {med['samples_per_s']:>9,.0f} samples/s  {med['samples_per_s'] / base:.2f}x "
              f"{arms[0]}{extra}")
    Path(a.json).write_text(json.dumps({"args": vars(a), "runs": runs, "medians": summary}, indent=1))


if __name__ == "__main__":
    main()
