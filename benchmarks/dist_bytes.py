"""Embedding bytes exchanged per sample: hotpipe's partitioned tables vs plain row-wise sharding.

Counts with :func:`hotpipe.distributed.traffic.count_traffic` over a run's
training trace (the counter the runtime's ``dist.bytes_sent`` is tested
against), for each world size and replicated share, side by side with the
baseline (one pooled vector per remote lookup each way, what a TorchRec
row-wise plan sends for one-hot features). Tables with fewer rows than
ranks count as replicated at that world size, as the runtime holds them
(``sharding.small_table_rows``). Counts are exact and do not depend on
machine load. Example::

    python benchmarks/dist_bytes.py --data DIR --batch-size 2048 --dim 16 --ranks 2,4,8 \\
        --replicate 0,0.01 --max-steps 200
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from hotpipe.capacity import Capacity
from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.loader import TrainTrace
from hotpipe.distributed.replicas import choose_replicated
from hotpipe.distributed.sharding import small_table_rows
from hotpipe.distributed.traffic import count_traffic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="dataset directory")
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--ranks", default="2,4,8")
    ap.add_argument("--replicate", default="0,0.01", help="replicated shares (capacity spellings; 0 = none)")
    ap.add_argument("--max-steps", type=int, default=200, help="training steps counted (0: all)")
    ap.add_argument("--json", help="also write the rows as JSON here")
    a = ap.parse_args()
    ds = ColumnarDataset.open(a.data)
    trace = TrainTrace(ds, batch_size=a.batch_size, val_fraction=0.0, max_steps=a.max_steps)
    steps = list(trace)
    print(f"{a.data}: {trace.num_rows:,} rows, {len(steps)} steps of {a.batch_size}, dim {a.dim}")
    print(f"{'W':>3} {'replicated':>10} {'row-wise B/s':>13} {'hotpipe B/s':>12} {'ratio':>6} "
          f"{'+replica wire':>14} {'total ratio':>11}")
    out = []
    for rep in a.replicate.split(","):
        n = 0 if rep.strip() in ("0", "") else Capacity.parse(rep, "--replicate").rows(trace.num_rows, 1)
        hot = choose_replicated(trace.loader, trace.layout, n, max(1, len(steps) // 20)) if n else None
        for w in (int(x) for x in a.ranks.split(",")):
            small = small_table_rows(trace.layout, w)  # replicated by the runtime at this W
            both = np.union1d(hot if hot is not None else small, small) if len(small) else hot
            t = count_traffic(steps, world_size=w, replicated=both)
            b = t.bytes(a.dim)
            print(f"{w:>3} {rep:>10} {b['rowwise_per_sample']:>13.0f} {b['hotpipe_per_sample']:>12.0f} "
                  f"{b['ratio']:>6.3f} {b['replica_wire_bytes'] / max(t.samples, 1):>14.0f} "
                  f"{b['ratio_total']:>11.3f}")
            out.append({"world_size": w, "replicate": rep, "small_table_rows": len(small),
                        **t.as_dict(), **b})
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
