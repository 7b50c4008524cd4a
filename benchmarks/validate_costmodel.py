"""Validate the cost model: predicted vs measured samples/s and rows moved (issue #4).

One invocation:

1. synthesizes a seeded Criteo-shaped dataset (``hotpipe.data.synth``) unless
   ``--data`` is given;
2. calibrates this machine (``hotpipe.placement.calibrate``) unless ``--hw``;
3. asks the search (``hotpipe plan``'s) for its best configuration within the
   largest capacity's memory and adds it to the configurations below;
4. trains every configuration with ``hotpipe.train.run.train`` (cache.* set),
   ``--repeats`` times, in a rotating order so machine noise hits all of them
   alike, recording /proc/loadavg around each run, and calibrates again
   after each round: the rates used are the medians over all calibrations,
   taken in the same noise as the runs they predict;
5. predicts every configuration from the planner's trace and those rates;
6. prints predicted vs measured (median) samples/s with the error, predicted
   vs measured rows fetched / written back, and whether the configuration the
   model ranks first is within 10 % of the best measured one; writes JSON.

    python benchmarks/validate_costmodel.py --out validate.json
    python benchmarks/validate_costmodel.py --quick          # smoke test, ~1 min
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from hotpipe.config import RunConfig, validate
from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.loader import TrainTrace
from hotpipe.data.synth import synthesize
from hotpipe.errors import CapacityError
from hotpipe.placement.calibrate import CalibrationSpec, calibrate
from hotpipe.placement.costmodel import Candidate, predict, workload_from_config
from hotpipe.placement.hardware import Hardware
from hotpipe.placement.search import SearchSpace, search
from hotpipe.plan.movement import StepTrace, trace_movement
from hotpipe.train.run import train


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def configurations(num_rows: int, fractions: list[float]) -> list[Candidate]:
    """Capacities x windows x backing tiers x policies, plus the untiered run."""
    caps = [max(1, int(f * num_rows)) for f in fractions]
    small, mid, big = caps[0], caps[len(caps) // 2], caps[-1]
    return [
        Candidate("none", num_rows),
        Candidate("lookahead", small, 64, 1, "host"),
        Candidate("lookahead", small, 64, 1, "file"),
        Candidate("lookahead", mid, 8, 1, "host"),
        Candidate("lookahead", big, 64, 2, "file"),
        Candidate("lru", small, 8, 1, "host"),
        Candidate("lru", mid, 8, 1, "file"),
        Candidate("static", big, 8, 1, "host"),
    ]


def run_config(base: RunConfig, c: Candidate, run_dir: Path) -> dict[str, Any]:
    tree = base.model_dump()
    tree["cache"].update(policy=c.policy, backing=c.backing, window=c.window, depth=c.depth,
                         capacity=c.capacity if c.policy != "none" else 1.0,
                         backing_dir=str(run_dir / "tables"))
    cfg = validate(tree)
    before = loadavg()
    m = train(cfg, run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"samples_per_s": m["samples_per_s"], "rows_fetched": m["cache"].get("rows_fetched", 0),
            "rows_written_back": m["cache"].get("rows_written_back", 0),
            "hit_rate": m["cache"].get("hit_rate", 1.0), "loadavg": [before, loadavg()]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="dataset (default: synthesize one)")
    ap.add_argument("--rows", type=int, default=300_000, help="synthetic samples")
    ap.add_argument("--scale", type=float, default=0.05, help="synthetic table sizes x Criteo Kaggle's")
    ap.add_argument("--zipf", type=float, default=1.05, help="synthetic skew (lower: more rows moved)")
    ap.add_argument("--dim", type=int, default=16, help="embedding dim (bottom MLP [64, dim])")
    ap.add_argument("--hw", help="hardware file (default: calibrate now)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training (0: all)")
    ap.add_argument("--capacities", default="0.04,0.1,0.25",
                    help="fractions of all rows (small, mid, big)")
    ap.add_argument("--max-steps", type=int, default=0, help="training steps per run (0: all)")
    ap.add_argument("--quick", action="store_true", help="small smoke test")
    ap.add_argument("--out", default="validate_costmodel.json")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.repeats, args.scale = 60_000, 1, 0.01

    work_dir = Path(tempfile.mkdtemp(prefix="hotpipe-validate-"))
    try:
        data = Path(args.data) if args.data else work_dir / "data"
        if not args.data:
            synthesize(data, rows=args.rows, scale=args.scale, zipf=args.zipf, seed=0, progress=False)
        ds = ColumnarDataset.open(data)
        base = validate({"data": {"path": str(data), "batch_size": 2048, "val_fraction": 0.05,
                                  "max_val_rows": 4096},
                         "model": {"embedding_dim": args.dim, "bottom": [64, args.dim]},
                         "train": {"threads": args.threads, "progress": False, "max_steps": args.max_steps,
                                   "log_every": 1000}})
        work = workload_from_config(base, ds.cardinalities, ds.num_dense)
        load0 = loadavg()
        spec = CalibrationSpec(run=base, tables=ds.num_tables, num_dense=ds.num_dense,
                               steps=15 if args.quick else 20, repeats=2)

        def calibrate_now() -> Hardware:
            return calibrate(spec, log=lambda m: print(f"  calibrate: {m}", flush=True))

        hws = [Hardware.load(args.hw)] if args.hw else [calibrate_now()]
        trace = TrainTrace(ds, batch_size=2048, val_fraction=0.05, max_steps=args.max_steps)
        cands = configurations(work.num_rows, [float(f) for f in args.capacities.split(",")])

        # Plan every configuration first: one whose capacity cannot hold a
        # step's working set would fail in training too (CapacityError).
        traces: dict[Candidate, StepTrace] = {}
        for c in list(cands):
            try:
                traces[c] = (StepTrace.untiered(trace.batch_sizes()) if c.policy == "none" else
                             trace_movement(trace, num_rows=work.num_rows, capacity=c.capacity,
                                            window=c.window, depth=c.depth, policy=c.policy))
            except CapacityError as e:
                print(f"  skipped {c.label()}: {e}")
                cands.remove(c)

        # The search's own pick (with the first calibration), within the memory
        # of the largest capacity tried.
        space = SearchSpace(memory=max(c.capacity for c in cands if c.policy != "none") * work.row_bytes,
                            capacity_fractions=(1.0, 0.4, 0.16), windows=(8, 64), depths=(1,))
        ranked, _ = search(trace, space, work, hws[0])
        chosen = ranked[0].candidate
        if chosen not in cands:
            cands.append(chosen)
            traces[chosen] = trace_movement(trace, num_rows=work.num_rows, capacity=chosen.capacity,
                                            window=chosen.window, depth=chosen.depth, policy=chosen.policy)

        measured: dict[Candidate, list[dict[str, Any]]] = {c: [] for c in cands}
        for rep in range(args.repeats):
            order = cands[rep % len(cands):] + cands[:rep % len(cands)]  # rotate: spread the noise
            for i, c in enumerate(order):
                r = run_config(base, c, work_dir / f"run-{rep}-{i}")
                measured[c].append(r)
                print(f"  rep {rep} {c.label():<42} {r['samples_per_s']:>9,.0f} samples/s "
                      f"load {r['loadavg'][0]:.2f}", flush=True)
            if not args.hw:
                hws.append(calibrate_now())
        hw = Hardware.median(hws)
        preds = {c: predict(c, traces[c], work, hw) for c in cands}

        rows = []
        for c in cands:
            p, ms = preds[c], measured[c]
            meas = float(np.median([m["samples_per_s"] for m in ms]))
            rows.append({
                "config": c.label(), "candidate": c.__dict__, "chosen_by_search": c == chosen,
                "predicted_samples_per_s": p.samples_per_s, "measured_samples_per_s": meas,
                "measured_all": [m["samples_per_s"] for m in ms],
                "error": (p.samples_per_s - meas) / meas,
                "predicted_rows_fetched": p.rows_fetched, "measured_rows_fetched": ms[0]["rows_fetched"],
                "predicted_rows_written_back": p.rows_written_back,
                "measured_rows_written_back": ms[0]["rows_written_back"],
                "predicted_hit_rate": p.hit_rate, "measured_hit_rate": ms[0]["hit_rate"],
                "loadavg": [m["loadavg"] for m in ms],
            })
        errs = np.abs([r["error"] for r in rows])
        # The pick is judged against configurations that fit the same fast-tier
        # memory (the untiered run holds every row, so it is not one of them).
        budget = space.memory // work.row_bytes
        fits = [r for r, c in zip(rows, cands, strict=True) if c.policy != "none" and c.capacity <= budget]
        best_meas = max(r["measured_samples_per_s"] for r in fits)
        top_pred = max(fits, key=lambda r: r["predicted_samples_per_s"])
        summary = {
            "median_abs_error": float(np.median(errs)), "max_abs_error": float(np.max(errs)),
            "rows_moved_equal": all(r["predicted_rows_fetched"] == r["measured_rows_fetched"] and
                                    r["predicted_rows_written_back"] == r["measured_rows_written_back"]
                                    for r in rows),
            "memory_budget_rows": int(budget),
            "best_measured_within_budget": max(fits, key=lambda r: r["measured_samples_per_s"])["config"],
            "model_pick": top_pred["config"],
            "model_pick_vs_best_measured": top_pred["measured_samples_per_s"] / best_meas,
            "search_pick": chosen.label(),
            "search_pick_vs_best_measured":
                next(r["measured_samples_per_s"] for r in rows if r["chosen_by_search"]) / best_meas,
            "loadavg_start": load0, "loadavg_end": loadavg(),
            "steps": trace.steps, "num_rows": work.num_rows, "threads": args.threads,
        }
        print_table(rows, summary)
        Path(args.out).write_text(json.dumps({"rows": rows, "summary": summary, "hardware": hw.to_dict(),
                                              "calibrations": [h.to_dict() for h in hws],
                                              "args": vars(args)}, indent=1))
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def print_table(rows: list[dict[str, Any]], s: dict[str, Any]) -> None:
    print("\n| configuration | predicted samples/s | measured samples/s (median) | error | "
          "rows fetched pred / meas | rows written back pred / meas | load avg |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        loads = [x for pair in r["loadavg"] for x in pair]
        mark = " (search pick)" if r["chosen_by_search"] else ""
        print(f"| {r['config']}{mark} | {r['predicted_samples_per_s']:,.0f} | {r['measured_samples_per_s']:,.0f} "
              f"| {r['error']:+.1%} | {r['predicted_rows_fetched']:,} / {r['measured_rows_fetched']:,} "
              f"| {r['predicted_rows_written_back']:,} / {r['measured_rows_written_back']:,} "
              f"| {min(loads):.2f}-{max(loads):.2f} |")
    print(f"\nmedian |error| {s['median_abs_error']:.1%}, worst {s['max_abs_error']:.1%}; "
          f"rows moved equal: {s['rows_moved_equal']}; within {s['memory_budget_rows']:,} fast-tier rows "
          f"the best measured is {s['best_measured_within_budget']!r}; the model's top pick "
          f"{s['model_pick']!r} measures {s['model_pick_vs_best_measured']:.1%} of it, the search's pick "
          f"{s['search_pick']!r} {s['search_pick_vs_best_measured']:.1%}; {s['steps']} steps, "
          f"{s['num_rows']:,} rows, "
          f"threads {s['threads']}; load {s['loadavg_start']:.2f} -> {s['loadavg_end']:.2f}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t0:.0f} s)")
