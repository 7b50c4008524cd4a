"""Relaxed sync (``dist.staleness=1``) vs exact: quality and speed, side by side (issue #9).

For each dataset, world size and replicated share, trains the exact run
(``dist.staleness=0``) and the stale one (every exchanged row of the next
step sent before the in-flight update) on the same global batches, every
rank one thread, interleaved round by round. Quality (validation AUC and
log-loss, the last logged training loss) comes from the first round (it is
deterministic given the data and seed); speed is the median of the rounds.
Also printed: the rows the stale run read one update late (what the exact
run fetched after the update instead). Example::

    python benchmarks/dist_staleness.py --data /tmp/dsyn105 --ranks 2,4 --replicate 0,0.01 \\
        --batch-size 2048 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from hotpipe.config import RunConfig, validate
from hotpipe.distributed.context import DistContext
from hotpipe.distributed.run import train_distributed
from hotpipe.distributed.spawn import run_ranks


def _rank(ctx: DistContext, cfg: RunConfig, out: str) -> dict[str, Any]:
    return train_distributed(cfg, out, ctx, overwrite=True)


def _cfg(data: str, a: argparse.Namespace, replicate: float, staleness: int) -> RunConfig:
    return validate({
        "data": {"path": data, "batch_size": a.batch_size, "val_fraction": 0.1,
                 "max_val_rows": a.max_val_rows},
        "model": {"embedding_dim": a.dim, "bottom": [64, a.dim], "top": [64, 1]},
        "optim": {"embedding": "rowwise_adagrad", "dense": "adagrad"},
        "train": {"max_steps": a.steps, "progress": False, "threads": 1, "epochs": a.epochs},
        "dist": {"replicate": replicate if replicate else 0, "staleness": staleness},
    })


def _run(data: str, a: argparse.Namespace, w: int, replicate: float, staleness: int,
         out: Path) -> dict[str, Any]:
    load = os.getloadavg()[0]
    res = run_ranks(_rank, w, args=(_cfg(data, a, replicate, staleness), str(out)), timeout=1800)
    bad = [r for r in res if r.exitcode != 0]
    if bad:
        raise SystemExit(f"rank {bad[0].rank} failed: {bad[0].error}")
    m = res[0].value
    d = m["dist"]
    return {"val_auc": m.get("val_auc"), "val_logloss": m.get("val_logloss"),
            "final_loss": m["final_loss"], "samples_per_s": m["samples_per_s"], "steps": m["steps"],
            "rows_after_update": d["rows_fetched_after_update"], "rows_ahead": d["rows_fetched_ahead"],
            "load": load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", required=True, help="prepared dataset directories")
    ap.add_argument("--ranks", default="2,4")
    ap.add_argument("--replicate", default="0,0.01", help="shares of rows replicated")
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--steps", type=int, default=0, help="0: the whole training split")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-val-rows", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default="dist_staleness.json")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hotpipe-staleness-"))
    table: list[dict[str, Any]] = []
    print(f"load at start {os.getloadavg()[0]:.1f}; B={a.batch_size} D={a.dim}, one thread a rank")
    for data in a.data:
        for w in (int(x) for x in a.ranks.split(",")):
            for rep in (float(x) for x in a.replicate.split(",")):
                runs: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
                for rnd in range(a.repeats):
                    for st in (0, 1):
                        runs[st].append(_run(data, a, w, rep, st, work / f"r{st}"))
                        r = runs[st][-1]
                        print(f"  {Path(data).name} W={w} repl={rep:g} staleness={st} round {rnd}: "
                              f"{r['samples_per_s']:,.0f} samples/s (load {r['load']:.1f})", flush=True)
                ex, sl = runs[0][0], runs[1][0]
                row = {"data": Path(data).name, "ranks": w, "replicate": rep, "steps": ex["steps"],
                       "exact": ex, "stale": sl,
                       "d_auc": (sl["val_auc"] or 0) - (ex["val_auc"] or 0),
                       "d_logloss": (sl["val_logloss"] or 0) - (ex["val_logloss"] or 0),
                       "speed_exact": statistics.median(r["samples_per_s"] for r in runs[0]),
                       "speed_stale": statistics.median(r["samples_per_s"] for r in runs[1]),
                       "loads": [r["load"] for x in runs.values() for r in x]}
                table.append(row)
                print(f"{row['data']} W={w} repl={rep:g} ({ex['steps']} steps): AUC {ex['val_auc']:.4f} -> "
                      f"{sl['val_auc']:.4f} ({row['d_auc']:+.4f}), logloss {ex['val_logloss']:.4f} -> "
                      f"{sl['val_logloss']:.4f} ({row['d_logloss']:+.4f}); rows read late "
                      f"{ex['rows_after_update']:,} of "
                      f"{ex['rows_ahead'] + ex['rows_after_update']:,}; samples/s "
                      f"{row['speed_exact']:,.0f} -> {row['speed_stale']:,.0f} "
                      f"({row['speed_stale'] / row['speed_exact']:.2f}x)", flush=True)
    Path(a.json).write_text(json.dumps({"args": vars(a), "rows": table}, indent=1))


if __name__ == "__main__":
    main()
