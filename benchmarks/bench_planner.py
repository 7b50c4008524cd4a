"""Planner throughput and rows moved per policy on a seeded Zipf trace.

Tables are the 26 Criteo Kaggle fields, cardinalities scaled by ``--scale``
(0.1 gives ~3.4M rows); each table's ids follow Zipf(``--alpha``) over its
rows, hot rows scattered by a fixed permutation. Every policy plans the same
in-memory trace, so the ratios against LRU in the printout are side by side.

    python benchmarks/bench_planner.py --steps 200 --out bench_planner.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from hotpipe.capacity import Capacity
from hotpipe.plan import min_capacity
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
    for cap in args.capacity.split(","):
        rows = Capacity.parse(cap, "--capacities").rows(num_rows, bytes_per_row=1)
        for policy in args.policies.split(","):
            results.append(replay(trace, num_rows=num_rows, capacity_rows=rows, policy=policy,
                                  window=args.window, depth=args.depth))
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
        json.dump({"config": meta, "results": [r.to_dict() for r in results]}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
