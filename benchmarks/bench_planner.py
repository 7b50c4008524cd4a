"""Planner throughput and rows moved per policy on a seeded Zipf trace.

Tables are the 26 Criteo Kaggle fields, cardinalities scaled by ``--scale``
(0.1 gives ~3.4M rows); each table's ids follow Zipf(``--alpha``) over its
rows, hot rows scattered by a fixed permutation. Every policy plans the same
in-memory trace, so the ratios against LRU in the printout are side by side.

    python benchmarks/bench_planner.py --steps 200 --out bench_planner.json

Then the lookahead planner alone (no move counting), compiled kernel vs the
numpy reference, arms interleaved, ``--repeats`` runs each: steady-state
lookups/s after the first step, by wall clock and by the thread's CPU time
(less disturbed by other processes on a shared machine), with the load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np

from hotpipe.capacity import Capacity
from hotpipe.plan import Planner, kernel, min_capacity
from hotpipe.plan.simulate import SimResult, format_table, replay

CRITEO_KAGGLE_CARDINALITIES = [
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27,
    14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
]


def zipf_trace(cards: list[int], *, steps: int, batch: int, alpha: float,
               seed: int) -> list[np.ndarray]:
    """``steps`` (batch, T) int64 batches of global ids, Zipf(alpha) per table."""
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(cards)[:-1]])
    cols = []
    for card, off in zip(cards, offsets, strict=True):
        cdf = np.cumsum(np.arange(1, card + 1, dtype=np.float64) ** -alpha)
        ranks = np.searchsorted(cdf, rng.random(steps * batch) * cdf[-1])  # 0 = most popular
        cols.append(rng.permutation(card)[np.minimum(ranks, card - 1)] + off)
    ids = np.stack(cols, axis=1)  # (steps * batch, T)
    return [ids[s * batch : (s + 1) * batch] for s in range(steps)]


def planner_only(trace: list[np.ndarray], *, num_rows: int, capacity: int, window: int,
                 depth: int, kernel_name: str) -> tuple[float, float]:
    """Steady (wall, cpu) lookups/s of the lookahead planner, the first step excluded."""
    planner = Planner(num_rows=num_rows, capacity=capacity, window=window, depth=depth,
                      kernel=kernel_name)
    it = planner.plan(trace)
    next(it)  # setup: per-row state, the first window, compilation (cached after once)
    lookups = sum(int(x.size) for x in trace[1:])
    w0, c0 = time.perf_counter(), time.thread_time()
    for _ in it:
        pass
    return lookups / (time.perf_counter() - w0), lookups / (time.thread_time() - c0)


def compare_kernels(trace: list[np.ndarray], args: argparse.Namespace, num_rows: int,
                    caps: list[int]) -> list[dict]:
    arms = ["compiled", "reference"] if kernel.AVAILABLE else ["reference"]
    out = []
    for cap in caps:
        runs: dict[str, list[tuple[float, float]]] = {a: [] for a in arms}
        loads = [os.getloadavg()[0]]
        for _ in range(args.repeats):
            for arm in arms:  # interleaved, so drifting load hits both
                runs[arm].append(planner_only(trace, num_rows=num_rows, capacity=cap,
                                              window=args.window, depth=args.depth,
                                              kernel_name=arm))
                loads.append(os.getloadavg()[0])
        row: dict = {"capacity_rows": cap, "load_min": min(loads), "load_max": max(loads)}
        for arm in arms:
            row[arm] = {"wall_M": statistics.median(r[0] for r in runs[arm]) / 1e6,
                        "cpu_M": statistics.median(r[1] for r in runs[arm]) / 1e6}
        msg = "  ".join(f"{a}: {row[a]['wall_M']:.1f}M/s wall, {row[a]['cpu_M']:.1f}M/s cpu"
                        for a in arms)
        if len(arms) == 2:
            row["speedup_cpu"] = row["compiled"]["cpu_M"] / row["reference"]["cpu_M"]
            msg += f"  (compiled/reference {row['speedup_cpu']:.2f}x by cpu time)"
        print(f"lookahead planner alone at {cap} rows, median of {args.repeats}: {msg}; "
              f"load {row['load_min']:.1f}-{row['load_max']:.1f} on {os.cpu_count()} cpus")
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.1)
    ap.add_argument("--alpha", type=float, default=1.05)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--capacity", default="0.01,0.1")
    ap.add_argument("--policies", default="lru,lookahead,lfu,static")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="runs per arm of the kernel comparison")
    ap.add_argument("--skip-replay", action="store_true", help="only the kernel comparison")
    ap.add_argument("--out", default="bench_planner.json")
    args = ap.parse_args()

    cards = [max(1, round(c * args.scale)) for c in CRITEO_KAGGLE_CARDINALITIES]
    num_rows = sum(cards)
    t0 = time.perf_counter()
    trace = zipf_trace(cards, steps=args.steps, batch=args.batch, alpha=args.alpha,
                       seed=args.seed)
    need = min_capacity(trace, args.depth)
    print(f"{num_rows:,} rows, {args.steps} steps x {args.batch} x {len(cards)} lookups "
          f"(trace made in {time.perf_counter() - t0:.1f}s); pinned working set "
          f"{need:,} rows at depth {args.depth}")
    results: list[SimResult] = []
    caps = [Capacity.parse(c, "--capacities").rows(num_rows, bytes_per_row=1)
            for c in args.capacity.split(",")]
    kernels = compare_kernels(trace, args, num_rows, caps)
    for rows in caps if not args.skip_replay else []:
        for policy in args.policies.split(","):
            results.append(replay(trace, num_rows=num_rows, capacity_rows=rows, policy=policy,
                                  window=args.window, depth=args.depth))
    if results:
        print(format_table(results))
    for r in results:
        if r.error is None and r.seconds > r.setup_seconds:
            steady = r.lookups / (r.seconds - r.setup_seconds) / 1e6
            print(f"  {r.policy} at {r.capacity_rows} rows: {r.setup_seconds:.2f}s setup "
                  f"(per-row state, first window), then {steady:.1f}M lookups/s")
    meta = {k: v for k, v in vars(args).items()}
    meta.update(num_rows=num_rows, min_capacity=need, machine=platform.platform(),
                processor=platform.processor())
    with open(args.out, "w") as f:
        json.dump({"config": meta, "results": [r.to_dict() for r in results],
                   "kernels": kernels}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
