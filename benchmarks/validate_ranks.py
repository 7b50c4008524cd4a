"""Validate `hotpipe plan --ranks`: predicted vs measured samples/s, rows and bytes (issue #9).

One invocation, on this machine (gloo, every rank one thread):

1. makes one seeded dataset per Zipf skew (26 tables; ``--rows-per-table``
   rows each, so every table splits over 4 ranks);
2. per round: calibrates compute (one process, untiered, at B/2 and B/4 of the
   largest batch, per embedding dim; with ``--rank-compute`` also one rank of
   the runtime itself at those batches), batch read, the link (gloo loopback)
   and the routing work, then trains every (configuration, W) with the
   distributed runtime (``run_ranks`` + ``train_distributed``) in a rotated
   order, recording the load around each run;
3. predicts each from the medians of all calibrations (taken in the same
   noise as the runs) and the exchange counted from the training trace;
4. prints predicted vs measured (median) samples/s, the error, and whether
   every rank's rows and bytes equal the prediction; writes JSON.

    python benchmarks/validate_ranks.py --out validate_ranks.json
    python benchmarks/validate_ranks.py --quick     # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hotpipe.config import RunConfig, validate
from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.layout import TableLayout
from hotpipe.data.loader import TrainTrace
from hotpipe.distributed.calibrate import measure_rank_compute
from hotpipe.distributed.context import DistContext
from hotpipe.distributed.run import train_distributed
from hotpipe.distributed.sharding import RowSharding
from hotpipe.distributed.spawn import run_ranks
from hotpipe.model.sparse_optim import make_row_optimizer
from hotpipe.placement.calibrate import CalibrationSpec, calibrate, make_calibration_data
from hotpipe.placement.costmodel import Candidate, workload_from_config
from hotpipe.placement.exchange_model import count_exchange, hottest_rows, replicated_set
from hotpipe.placement.hardware import ComputeFit, Hardware
from hotpipe.placement.ranks import predict_ranks
from hotpipe.train.builders import capacity_rows


@dataclass(frozen=True)
class Config:
    zipf: float
    batch: int
    dim: int
    replicate: float  # share of all rows replicated (0: none)
    capacity: float = 0.0  # > 0: tiered ranks, lookahead over this share of each rank's rows

    def label(self) -> str:
        tier = f" tier={self.capacity:g}" if self.capacity else ""
        return f"zipf={self.zipf} B={self.batch} D={self.dim} repl={self.replicate:g}{tier}"


CONFIGS = [
    Config(1.05, 2048, 16, 0.0),
    Config(1.05, 2048, 16, 0.01),
    Config(1.2, 2048, 16, 0.0),
    Config(0.9, 2048, 16, 0.01),
    Config(1.05, 4096, 16, 0.001),
    Config(1.05, 1024, 16, 0.0),
    Config(1.05, 2048, 64, 0.01),
    Config(1.2, 1024, 64, 0.0),
]

# --tiered: each rank's rows behind its own lookahead cache (host backing),
# the part of the ranks model marked unvalidated until measured here.
TIERED = [
    Config(1.05, 2048, 16, 0.0, capacity=0.1),
    Config(1.05, 2048, 16, 0.01, capacity=0.1),
    Config(1.2, 2048, 64, 0.0, capacity=0.05),
]
TIER_WINDOW, TIER_DEPTH = 32, 1


def load() -> float:
    return os.getloadavg()[0]


def run_cfg(data: Path, c: Config, steps: int) -> RunConfig:
    tree: dict[str, Any] = {"data": {"path": str(data), "batch_size": c.batch, "val_fraction": 0.01,
                                     "max_val_rows": 256},
                            "model": {"embedding_dim": c.dim, "bottom": [64, c.dim]},
                            "train": {"threads": 1, "progress": False, "max_steps": steps,
                                      "log_every": 1000, "checkpoint_every": 0}}
    if c.capacity:
        tree["cache"] = {"policy": "lookahead", "capacity": c.capacity, "window": TIER_WINDOW,
                         "depth": TIER_DEPTH, "backing": "host"}
    return validate(tree)


def _rank(ctx: DistContext, cfg: RunConfig, out: str, hot: np.ndarray) -> dict[str, Any]:
    return train_distributed(cfg, out, ctx, replicate=hot)


def measure(cfg: RunConfig, w: int, hot: np.ndarray, out: Path) -> dict[str, Any]:
    before = load()
    res = run_ranks(_rank, w, args=(cfg, str(out), hot), timeout=300)
    if any(r.exitcode != 0 for r in res):
        raise RuntimeError(f"a rank failed: {[r.error for r in res if r.error]}")
    m = json.loads((out / "metrics.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    return {"samples_per_s": m["samples_per_s"], "dist": m["dist"], "cache": m["cache"],
            "loadavg": [before, load()]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20, help="training steps per run")
    ap.add_argument("--ranks", default="2,4")
    ap.add_argument("--rows-per-table", type=int, default=20000)
    ap.add_argument("--configs", type=int, default=len(CONFIGS), help="first N configurations")
    ap.add_argument("--rank-compute", action="store_true",
                    help="calibrate a rank's compute on the runtime itself (one rank) instead of "
                         "one process's training step")
    ap.add_argument("--tiered", type=int, default=0,
                    help="also the first N tiered configurations (each rank's rows behind a "
                         "lookahead cache; predicted rows fetched checked against rank 0's)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 configs, 1 repeat, 2 ranks")
    ap.add_argument("--out", default="validate_ranks.json")
    a = ap.parse_args()
    configs = CONFIGS[: a.configs] + TIERED[: a.tiered]
    ranks = [int(x) for x in a.ranks.split(",")]
    if a.quick:
        configs, a.repeats, ranks, a.steps = CONFIGS[:1] + TIERED[:1], 1, [2], 8
    tiered = any(c.capacity for c in configs)
    work_dir = Path(tempfile.mkdtemp(prefix="hotpipe-validate-ranks-"))
    t_start = time.time()
    load0 = load()
    try:
        big_b = max(c.batch for c in configs)
        datasets: dict[float, Path] = {}
        for z in sorted({c.zipf for c in configs}):
            n_rows = int((a.steps + 2) * big_b / 0.99) + 512
            datasets[z] = make_calibration_data(work_dir / f"data-{z}", rows=n_rows, tables=26,
                                                rows_per_table=a.rows_per_table, num_dense=13,
                                                seed=1, zipf=z)
        # What each point trains, its replicated rows (chosen here and handed to
        # the runtime, the same rule it applies to a count) and its trace.
        points = []
        for c in configs:
            ds = ColumnarDataset.open(datasets[c.zipf])
            cfg = run_cfg(datasets[c.zipf], c, a.steps)
            trace = TrainTrace(ds, batch_size=c.batch, val_fraction=0.01, max_steps=a.steps)
            steps = list(trace)
            n_hot = int(c.replicate * trace.num_rows)
            hot = hottest_rows(steps[: max(1, len(steps) // 20)], trace.num_rows, n_hot)
            for w in ranks:
                points.append((c, w, cfg, ds, steps, hot))
        dims = sorted({c.dim for c in configs})

        def calibrate_all() -> dict[int, Hardware]:
            out = {}
            for i, d in enumerate(dims):
                # B/2 and B/4 of the largest batch: the per-rank batches of 2 and 4 ranks.
                base = run_cfg(datasets[configs[0].zipf], Config(1.05, big_b // 2, d, 0), 15)
                spec = CalibrationSpec(run=base, tables=26, num_dense=13, steps=12, repeats=2,
                                       policies=("lookahead",) if tiered else (),
                                       tiers=("host",) if tiered else (), overlap=tiered,
                                       link=i == 0, route=i == 0,
                                       workdir=str(work_dir))
                out[d] = calibrate(spec, log=lambda m: print(f"  calibrate: {m}", flush=True))
            first = out[dims[0]]  # link and route do not depend on the model
            return {d: replace(h, link=first.link, route=first.route,
                               rank_compute=rank_compute(d) if a.rank_compute else None)
                    for d, h in out.items()}

        def rank_compute(d: int) -> ComputeFit:
            """One rank's step on the runtime itself (W = 1) at the per-rank batches."""
            data = datasets[configs[0].zipf]
            return measure_rank_compute(run_cfg(data, Config(1.05, big_b // 2, d, 0), a.steps), data,
                                        [big_b // 2, big_b // 4], workdir=work_dir,
                                        log=lambda m: print(f"  calibrate: {m}", flush=True))

        cals: list[dict[int, Hardware]] = [calibrate_all()]
        measured: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(points))}
        for rep in range(a.repeats):
            order = list(range(len(points)))
            k = rep * 3 % len(order)
            for i in order[k:] + order[:k]:  # rotated: spread the machine's noise
                c, w, cfg, _, _, hot = points[i]
                r = measure(cfg, w, hot, work_dir / f"run-{rep}-{i}")
                measured[i].append(r)
                print(f"  rep {rep} W={w} {c.label():<36} {r['samples_per_s']:>9,.0f} samples/s "
                      f"load {r['loadavg'][0]:.2f}", flush=True)
            cals.append(calibrate_all())
        hws = {d: Hardware.median([cal[d] for cal in cals]) for d in dims}

        rows = []
        for i, (c, w, cfg, ds, steps, hot) in enumerate(points):
            work = workload_from_config(cfg, ds.cardinalities, ds.num_dense)
            rep_set = replicated_set(hot, ds.cardinalities, w)
            count = count_exchange(steps, world_size=w, dim=c.dim, replicated=rep_set,
                                   dense_params=work.dense_params)
            cand = Candidate("none", work.num_rows, ranks=w, replicated=len(hot))
            if c.capacity:
                # The runtime's slots on rank 0 (cache.capacity is per rank), plus the
                # replicas the model counts inside a rank's fast tier.
                local = RowSharding(TableLayout.of(ds), world_size=w, rank=0).local_layout()
                slots = capacity_rows(cfg.cache, local, c.dim, make_row_optimizer(cfg.optim.embedding, lr=0.1,
                                                                                   dim=c.dim))
                cand = Candidate("lookahead", slots + len(rep_set), TIER_WINDOW, TIER_DEPTH, "host",
                                 ranks=w, replicated=len(rep_set))
            p = predict_ranks(cand, steps, work, hws[c.dim], hot, cardinalities=ds.cardinalities,
                              count=count)
            ms = measured[i]
            meas = float(np.median([m["samples_per_s"] for m in ms]))
            d0 = ms[0]["dist"]
            same = (all(d0[k] == p.exchange[k] for k in ("rows_sent", "bytes_sent", "bytes_received"))
                    and all(m[k] == q[k] for m, q in zip(d0["per_rank"], p.exchange["per_rank"], strict=True)
                            for k in ("rows_sent", "rows_received", "bytes_sent", "bytes_received",
                                      "allreduce_bytes")))
            if c.capacity:  # rank 0's movement: the planner's rows fetched, predicted vs counted
                same = same and ms[0]["cache"]["per_rank"][0]["rows_fetched"] == p.rows_fetched
            rows.append({"config": c.label(), "world_size": w, "predicted_samples_per_s": p.samples_per_s,
                         "measured_samples_per_s": meas,
                         "measured_all": [m["samples_per_s"] for m in ms],
                         "error": (p.samples_per_s - meas) / meas, "rows_bytes_equal": same,
                         "predicted_bytes_per_sample": p.bytes_per_sample,
                         "measured_bytes_per_sample": d0["bytes_per_sample"],
                         "predicted_ms": p.times_ms, "limit": p.limit,
                         "measured_exchange_s": [m["dist"]["exchange_seconds"] for m in ms],
                         "loadavg": [m["loadavg"] for m in ms]})
        errs = np.abs([r["error"] for r in rows])
        summary = {"median_abs_error": float(np.median(errs)), "max_abs_error": float(np.max(errs)),
                   "rows_bytes_equal": all(r["rows_bytes_equal"] for r in rows),
                   "loadavg_start": load0, "loadavg_end": load(),
                   "loadavg_runs": [float(np.min([x[0] for r in rows for x in r["loadavg"]])),
                                    float(np.max([x[0] for r in rows for x in r["loadavg"]]))],
                   "seconds": time.time() - t_start, "steps": a.steps, "repeats": a.repeats}
        print(f"\n{'W':>2} {'configuration':<36} {'predicted':>10} {'measured':>10} {'error':>7} "
              f"{'rows/bytes':>10} {'limit':>8}")
        for r in rows:
            print(f"{r['world_size']:>2} {r['config']:<36} {r['predicted_samples_per_s']:>10,.0f} "
                  f"{r['measured_samples_per_s']:>10,.0f} {r['error']:>+7.1%} "
                  f"{'equal' if r['rows_bytes_equal'] else 'DIFFER':>10} {r['limit']:>8}")
        print(f"\nmedian |error| {summary['median_abs_error']:.1%} (goal <= 15%), worst "
              f"{summary['max_abs_error']:.1%} (goal <= 30%); rows/bytes predicted == measured: "
              f"{summary['rows_bytes_equal']}; load {summary['loadavg_runs'][0]:.1f}-"
              f"{summary['loadavg_runs'][1]:.1f} during runs; {summary['seconds']:.0f} s")
        Path(a.out).write_text(json.dumps({"rows": rows, "summary": summary,
                                           "hardware": {d: h.to_dict() for d, h in hws.items()}}, indent=1))
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
