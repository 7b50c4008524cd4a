"""Speed with a small fast tier: tiered (lookahead, 10% of rows) vs untiered.

Trains the same model on the same data, interleaving the runs
(untiered, tiered, untiered, tiered, ...), and prints the median samples/s
of each, their ratio, the hit rate, the stall share and whether the losses
were identical (they must be). With ``--threads 2,1`` every arm runs at each
torch thread count (``train.threads``) and the ratio compares the best
tiered arm with the best untiered one. Writes JSON with every run.

    python benchmarks/bench_tiered.py --rows 400000 --scale 0.02 --repeats 3
    python benchmarks/bench_tiered.py --rows 600000 --scale 0.05 --dim 64 --repeats 3 --threads 2,1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from hotpipe.config import load_config
from hotpipe.data.synth import synthesize
from hotpipe.train.run import train


def _loadavg() -> float:
    return os.getloadavg()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--scale", type=float, default=0.02, help="Criteo cardinalities x scale")
    ap.add_argument("--zipf", type=float, default=1.05)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--capacity", default="0.1")
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--backing", default="host", choices=["host", "file"])
    ap.add_argument("--optimizer", default="rowwise_adagrad")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="small", choices=["small", "dlrm"],
                    help="small: 64-D MLPs; dlrm: bottom 512-256-D, top 512-256-1")
    ap.add_argument("--threads", default="0",
                    help="comma-separated train.threads values (0: torch's default)")
    ap.add_argument("--json", default="bench_tiered.json")
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()

    work = Path(a.workdir or tempfile.mkdtemp(prefix="hotpipe-bench-"))
    data = work / "data"
    if not (data / "manifest.json").exists():
        synthesize(data, rows=a.rows, scale=a.scale, zipf=a.zipf, seed=0, progress=False)
    mlp = (["model.bottom=[64," + str(a.dim) + "]", "model.top=[64,1]"] if a.model == "small"
           else ["model.bottom=[512,256," + str(a.dim) + "]", "model.top=[512,256,1]"])
    common = [f"data.path={data}", f"data.batch_size={a.batch_size}", f"model.embedding_dim={a.dim}",
              *mlp, f"optim.embedding={a.optimizer}", "optim.dense=sgd", "train.progress=false",
              "data.val_fraction=0.05", "data.max_val_rows=20000"]
    tiered = ["cache.policy=lookahead", f"cache.capacity={a.capacity}", f"cache.window={a.window}",
              f"cache.depth={a.depth}", f"cache.backing={a.backing}",
              f"cache.backing_dir={work / 'tables'}"]
    runs: list[dict] = []
    losses: dict[str, list[float]] = {}
    arms = [(f"{kind}@t{t}", kind, [*extra, f"train.threads={t}"])
            for t in a.threads.split(",")
            for kind, extra in (("untiered", []), ("tiered", tiered))]
    for r in range(a.repeats):
        for name, kind, extra in arms:
            load0 = _loadavg()
            t0 = time.perf_counter()
            m = train(load_config(overrides=[*common, *extra]), work / f"run-{name}",
                      overwrite=True)
            losses[name] = json.loads((work / f"run-{name}" / "losses.json").read_text())
            runs.append({"name": name, "kind": kind, "repeat": r,
                         "samples_per_s": m["samples_per_s"],
                         "wall_s": time.perf_counter() - t0, "load_before": load0,
                         "load_after": _loadavg(), "cache": {k: v for k, v in m["cache"].items()
                                                              if k != "per_table"}})
            c = m["cache"]
            print(f"[{r}] {name:12s} {m['samples_per_s']:>9,.0f} samples/s  "
                  f"hit={c['hit_rate']:.3f} stall={c['stall_seconds']:.2f}s  "
                  f"load={load0:.2f}-{_loadavg():.2f}", flush=True)
    med = {n: statistics.median(x["samples_per_s"] for x in runs if x["name"] == n)
           for n, _, _ in arms}
    best = {k: max((n for n, kind, _ in arms if kind == k), key=med.__getitem__)
            for k in ("untiered", "tiered")}
    # Tiered must equal untiered at the same thread count (matmuls may round
    # differently with another number of threads).
    identical = all(losses[f"tiered@t{t}"] == losses[f"untiered@t{t}"]
                    for t in a.threads.split(","))
    t = [x for x in runs if x["name"] == best["tiered"]][-1]["cache"]
    ratio = med[best["tiered"]] / med[best["untiered"]]
    loads = [x[k] for x in runs for k in ("load_before", "load_after")]
    print("\nmedian samples/s: " + "  ".join(f"{n} {med[n]:,.0f}" for n, _, _ in arms))
    print(f"best tiered ({best['tiered']}) / best untiered ({best['untiered']}): {ratio:.3f} "
          f"(goal >= 0.9); load {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cpus")
    print(f"tiered: capacity {a.capacity} of rows, hit rate {t['hit_rate']:.3f}, rows fetched "
          f"{t['rows_fetched']:,}, stall {t['stall_seconds']:.2f}s; losses identical: {identical}")
    Path(a.json).write_text(json.dumps({"args": vars(a), "runs": runs, "median": med,
                                        "best": best, "ratio": ratio,
                                        "losses_identical": identical}, indent=2))


if __name__ == "__main__":
    main()
