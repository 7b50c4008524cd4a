"""FLuID (issue #14): FedAvg vs random / ordered / invariant dropout at fixed r.

For each seed: one FedAvg run (the baseline, measured in the same invocation)
and every (method, r) pair, all with five clients at speeds 1, 1, 0.9, 0.8,
0.5 (the 0.5 client is the straggler; equal-sized client train sets, so speed
alone decides who it is). Every run is the deterministic in-process simulator
(:mod:`hotpipe.fl.simulator`): simulated time = work / speed, so the time
columns do not depend on the machine's load; measured CPU time is logged too.

Printed per run: final accuracy, accuracy minus FedAvg's, total simulated
time and its ratio to FedAvg's, mean round time after profiling against the
next-slowest client's mean time. Results go to ``--out`` (JSON, written after
every run, so a stopped sweep keeps what it finished); ``fl_table.py`` turns
several of them into the BENCHMARKS.md tables (mean ± std over seeds).

    python benchmarks/fl_bench.py --task digits --seeds 0,1,2 --rounds 30 \\
        --out benchmarks/fl/results/digits.json
    python benchmarks/fl_bench.py --task femnist --seeds 0 --rounds 20 \\
        --out benchmarks/fl/results/femnist_s0.json                    # ~8 min, 1 core

FEMNIST and Shakespeare need ../shared/data/leaf_samples (research use; not in
the repository). Sizes are cut to fit a shared 2-core CPU: see BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from hotpipe.fl.data import ClientData, load_shakespeare_clients
from hotpipe.fl.invariance import ThresholdConfig
from hotpipe.fl.server import FluidConfig
from hotpipe.fl.simulator import History, SimConfig, simulate
from hotpipe.fl.tasks import Task, load_task


def _balanced(task: Task) -> Task:
    """Cut every client's train set to the smallest one (digits' Dirichlet split is uneven)."""
    n = min(len(c.y_train) for c in task.clients)
    return Task(task.name, task.spec, [ClientData(c.x_train[:n], c.y_train[:n], c.x_test,
                                                  c.y_test) for c in task.clients], task.train)


def _summary(h: History, wall: float) -> dict[str, Any]:
    recs = h.rounds
    after = recs[2:]  # round 1 is the profiling round: everyone trains the full model
    strag = recs[-1]["straggler"]
    nxt = [max(c["sim_time"] for k, c in r["clients"].items() if int(k) != strag) for r in after]
    return {"final_accuracy": recs[-1]["accuracy"],
            "best_accuracy": max(r["accuracy"] for r in recs),
            "sim_time": recs[-1]["sim_clock"],
            "mean_round_time": statistics.fmean(r["round_time"] for r in after),
            "mean_next_slowest": statistics.fmean(nxt),
            "straggler": strag,
            "cpu_time": sum(r["cpu_time"] for r in recs),
            "wall_time": wall,
            "mean_invariant_fraction": statistics.fmean(r["invariant_fraction"] for r in after),
            "final_threshold": recs[-1]["threshold"],
            "kept": recs[-1]["kept"],
            "accuracy_curve": [round(r["accuracy"], 4) for r in recs],
            "clock_curve": [round(r["sim_clock"], 1) for r in recs]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True, choices=("digits", "femnist", "shakespeare"))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--rs", default="0.95,0.75,0.5")
    ap.add_argument("--methods", default="random,ordered,invariant")
    ap.add_argument("--speeds", default="1,1,0.9,0.8,0.5")
    ap.add_argument("--threshold-every", type=int, default=None,
                    help="rounds between threshold raises (default: rounds/25, the reference's "
                         "10 of 250 rounds scaled to the run)")
    ap.add_argument("--max-train", type=int, default=400,
                    help="shakespeare: train samples per client (seeded subsample)")
    ap.add_argument("--max-test", type=int, default=200,
                    help="shakespeare: test samples per client (seeded subsample)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # shared machine; the models are too small to gain from threads

    speeds = tuple(float(s) for s in args.speeds.split(","))
    rs = [float(r) for r in args.rs.split(",")]
    methods = args.methods.split(",")
    every = args.threshold_every or max(1, args.rounds // 25)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"task": args.task, "rounds": args.rounds, "speeds": speeds,
                           "max_train": args.max_train if args.task == "shakespeare" else None,
                           "max_test": args.max_test if args.task == "shakespeare" else None,
                           "threshold_every": every, "command": " ".join(sys.argv), "runs": []}
    for seed in (int(s) for s in args.seeds.split(",")):
        task = load_task(args.task, len(speeds), seed)
        if args.task == "shakespeare":
            task = Task(task.name, task.spec, load_shakespeare_clients(
                len(speeds), seed, max_train=args.max_train, max_test=args.max_test), task.train)
        task = _balanced(task)
        sim = SimConfig(rounds=args.rounds, speeds=speeds, seed=seed)
        base = None
        for method, r in [("fedavg", 1.0)] + [(m, r) for r in rs for m in methods]:
            fluid = FluidConfig(method=method, r=None if method == "fedavg" else r, seed=seed,
                                threshold=ThresholdConfig(every=every))
            t0 = time.perf_counter()
            s = _summary(simulate(task, fluid, sim), time.perf_counter() - t0)
            base = base or s
            doc["runs"].append({"seed": seed, "method": method, "r": r, **s})
            print(f"{args.task} seed={seed} {method:9s} r={r:.2f}  acc={s['final_accuracy']:.4f} "
                  f"(vs fedavg {s['final_accuracy'] - base['final_accuracy']:+.4f})  "
                  f"sim_time={s['sim_time']:.0f} (x{s['sim_time'] / base['sim_time']:.3f})  "
                  f"round={s['mean_round_time']:.1f} next-slowest={s['mean_next_slowest']:.1f}  "
                  f"inv={s['mean_invariant_fraction']:.2f}  wall={s['wall_time']:.0f}s",
                  flush=True)
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc, indent=1))
            tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
