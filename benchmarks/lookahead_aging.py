"""Rows fetched ÷ LRU's for every policy, with lookahead's counts aged or not.

    hotpipe synth --out /tmp/ag_1.05_0.5 --rows 1000000 --scale 0.05 --zipf 1.05 --drift 0.5
    python benchmarks/lookahead_aging.py /tmp/ag_1.05_0.5 [more datasets...]

Prints a Markdown table (BENCHMARKS.md, "Update: aged counts in lookahead's
tie-break"): batch 2048, window 64, depth 1, capacities 1/5/10/25 %.
"""

from __future__ import annotations

import argparse

from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.loader import TrainTrace
from hotpipe.errors import CapacityError
from hotpipe.plan.lookahead import LookaheadPolicy
from hotpipe.plan.planner import Planner


def fetched(steps: list, num_rows: int, capacity: int, policy: object, window: int) -> int:
    planner = Planner(num_rows=num_rows, capacity=capacity, window=window, depth=1,
                      policy=policy)  # type: ignore[arg-type]
    return sum(p.fetch_ids.shape[0] for p in planner.plan(steps))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--window", type=int, default=64)
    a = ap.parse_args()
    print("| trace | capacity | LRU rows | LFU | static | lookahead, counts never age "
          "| lookahead, aged every window |")
    print("|---|---|---|---|---|---|---|")
    for path in a.datasets:
        tr = TrainTrace(ColumnarDataset.open(path), batch_size=a.batch_size, val_fraction=0.0)
        steps = list(tr)
        for frac in (0.01, 0.05, 0.1, 0.25):
            cap = round(frac * tr.num_rows)
            try:
                r = {p: fetched(steps, tr.num_rows, cap, p, a.window) for p in ("lru", "lfu", "static")}
            except CapacityError:
                continue  # no policy can run: two in-flight steps pin more rows than fit
            never = fetched(steps, tr.num_rows, cap, LookaheadPolicy(age_every=10**9), a.window)
            aged = fetched(steps, tr.num_rows, cap, "lookahead", a.window)
            lru = r["lru"]
            print(f"| {path} | {frac:.0%} | {lru:,} | {r['lfu'] / lru:.3f} | {r['static'] / lru:.3f} "
                  f"| {never / lru:.3f} | **{aged / lru:.3f}** |", flush=True)


if __name__ == "__main__":
    main()
