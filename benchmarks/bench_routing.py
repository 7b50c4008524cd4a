"""Routing one step on one rank: ``placement/routing.py`` vs the per-peer routing it replaced.

The baseline is the runtime's routing before it was vectorized: one
``torch.unique`` per peer (of the peer's ids filtered to this rank's rows,
or of all its ids when rows are replicated, to collect the touched ones)
and ``torch.isin`` for replicated membership. Both run on the same real
global batches of a dataset, interleaved, one torch thread; every call's
result is checked equal before timing counts. Prints median milliseconds
per step and the ratio, per (W, replicated share)::

    python benchmarks/bench_routing.py --data /tmp/dsyn105 --batch-size 2048 --ranks 2,4,8,16
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.loader import TrainTrace
from hotpipe.placement.exchange_model import hottest_rows
from hotpipe.placement.routing import Routing, StepRoutes


def per_peer(needs: list[torch.Tensor], rank: int, hot: torch.Tensor | None) -> StepRoutes:
    """The routing as the runtime did it before (a baseline, not used by hotpipe)."""
    w, r = len(needs), rank
    u, inv = torch.unique(needs[r].reshape(-1), return_inverse=True)
    is_hot = torch.isin(u, hot) if hot is not None else torch.zeros(len(u), dtype=torch.bool)
    serve_ids, send_counts, touched = [], [], []
    for s, ids in enumerate(needs):
        if s == r:
            v = u[~is_hot]
            touched.append(u[is_hot])
        elif hot is None:
            flat = ids.reshape(-1)
            v = torch.unique(flat[flat.remainder(w) == r])
        else:
            v = torch.unique(ids.reshape(-1))
            v_hot = torch.isin(v, hot)
            touched.append(v[v_hot])
            v = v[~v_hot]
        mine = v[v.remainder(w) == r]
        serve_ids.append(mine)
        send_counts.append(len(mine))
    cold = u[~is_hot]
    own = cold.remainder(w)
    order = torch.cat([torch.nonzero(~is_hot).squeeze(1)[torch.argsort(own, stable=True)],
                       torch.nonzero(is_hot).squeeze(1)])
    pos = torch.empty_like(order)
    pos[order] = torch.arange(len(order))
    all_touched = torch.unique(torch.cat(touched)) if hot is not None else torch.empty(0, dtype=torch.int64)
    ids = torch.cat(serve_ids)
    return StepRoutes(tuple(needs[r].shape), u[order], pos[inv], torch.bincount(own, minlength=w).tolist(),
                      ids.div(w, rounding_mode="floor"), send_counts, serve_ids=ids,
                      rep_ids=u[is_hot], touched=all_touched)


def same(a: StepRoutes, b: StepRoutes) -> bool:
    return (torch.equal(a.uniq, b.uniq) and torch.equal(a.inverse, b.inverse)
            and a.recv_counts == b.recv_counts and torch.equal(a.serve, b.serve)
            and a.send_counts == b.send_counts and torch.equal(a.touched, b.touched)
            and torch.equal(a.rep_ids, b.rep_ids))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--ranks", default="2,4,8,16")
    ap.add_argument("--replicate", default="0,0.01", help="shares of all rows replicated")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(1)
    ds = ColumnarDataset.open(a.data)
    trace = TrainTrace(ds, batch_size=a.batch_size, val_fraction=0.01, max_steps=a.steps)
    steps = [torch.from_numpy(s) for s in trace]
    print(f"{len(steps)} global batches of {a.batch_size} x {ds.num_tables} ids; load "
          f"{os.getloadavg()[0]:.1f}; one torch thread; medians of {a.repeats} rounds (ms per step)")
    print(f"{'W':>3} {'replicated':>10} {'per-peer':>9} {'routing':>9} {'ratio':>6}")
    for w in (int(x) for x in a.ranks.split(",")):
        for share in (float(x) for x in a.replicate.split(",")):
            n_hot = int(share * trace.num_rows)
            hot = (torch.from_numpy(hottest_rows([s.numpy() for s in steps], trace.num_rows, n_hot))
                   if n_hot else None)
            rt = Routing(trace.num_rows, world_size=w, rank=0, replicated=hot)
            rt.scratch()
            b = a.batch_size // w
            batches = [[s[i * b:(i + 1) * b] for i in range(w)] for s in steps]
            assert all(same(per_peer(n, 0, hot), rt.route(n)) for n in batches[:3])
            rounds: dict[str, list[float]] = {"per-peer": [], "routing": []}
            for _ in range(a.repeats):
                for name, fn in (("per-peer", lambda n, h=hot: per_peer(n, 0, h)), ("routing", rt.route)):
                    t0 = time.perf_counter()
                    for n in batches:
                        fn(n)
                    rounds[name].append((time.perf_counter() - t0) / len(batches) * 1e3)
            old, new = (statistics.median(rounds[k]) for k in ("per-peer", "routing"))
            print(f"{w:>3} {share:>10g} {old:>9.2f} {new:>9.2f} {old / new:>5.2f}x", flush=True)
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
