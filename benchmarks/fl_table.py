"""Turn ``fl_bench.py`` result files into the BENCHMARKS.md tables (mean ± std over seeds).

    python benchmarks/fl_table.py benchmarks/fl/results/*.json

Per task: one row per (method, r) with final accuracy, accuracy minus the
same seed's FedAvg (paired), total simulated time and its ratio to FedAvg,
and mean round time against the next-slowest client's; then the issue's
goals checked one by one (met / not met, with the numbers).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


def _ms(xs: list[float], scale: float = 1.0, digits: int = 1) -> str:
    m = statistics.fmean(xs) * scale
    s = statistics.stdev(xs) * scale if len(xs) > 1 else 0.0
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def table(runs: list[dict[str, Any]], task: str, meta: dict[str, Any]) -> list[str]:
    base = {r["seed"]: r for r in runs if r["method"] == "fedavg"}
    groups: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[(r["method"], r["r"])].append(r)
    seeds = sorted(base)
    lines = [f"**{task}** — speeds {meta['speeds']}, seeds {seeds}",
             "",
             "| method | r | final acc (%) | Δ vs FedAvg (pts) | sim. time | × FedAvg "
             "| round time | next-slowest | invariant frac. |",
             "|---|---|---|---|---|---|---|---|---|"]
    order = {"fedavg": 0, "random": 1, "ordered": 2, "invariant": 3}
    for (method, r), rs in sorted(groups.items(), key=lambda kv: (-kv[0][1], order[kv[0][0]])):
        acc = [x["final_accuracy"] for x in rs]
        delta = [x["final_accuracy"] - base[x["seed"]]["final_accuracy"] for x in rs]
        ratio = [x["sim_time"] / base[x["seed"]]["sim_time"] for x in rs]
        lines.append(
            f"| {method} | {r:.2f} | {_ms(acc, 100)} | {_ms(delta, 100, 2)} "
            f"| {_ms([x['sim_time'] for x in rs], 1, 0)} | {_ms(ratio, 1, 3)} "
            f"| {_ms([x['mean_round_time'] for x in rs], 1, 0)} "
            f"| {_ms([x['mean_next_slowest'] for x in rs], 1, 0)} "
            f"| {_ms([x['mean_invariant_fraction'] for x in rs], 1, 2)} |")
    lines += ["", *goals(groups, base)]
    return lines


def goals(groups: dict[tuple[str, float], list[dict[str, Any]]],
          base: dict[int, dict[str, Any]]) -> list[str]:
    def mean_acc(m: str, r: float) -> float:
        return statistics.fmean(x["final_accuracy"] for x in groups[(m, r)]) * 100

    fed = statistics.fmean(b["final_accuracy"] for b in base.values()) * 100
    out = []
    for r in sorted({r for m, r in groups if m != "fedavg"}, reverse=True):
        inv, ordd, rnd = mean_acc("invariant", r), mean_acc("ordered", r), mean_acc("random", r)
        shape = inv >= ordd >= rnd
        out.append(f"- r={r:.2f}: invariant {inv:.1f} ≥ ordered {ordd:.1f} ≥ random {rnd:.1f}: "
                   f"{'met' if shape else 'not met'}")
        if r >= 0.75:
            gap = fed - inv
            out.append(f"- r={r:.2f}: invariant within 1 pt of FedAvg ({fed:.1f}): gap {gap:+.1f} pts "
                       f"— {'met' if gap <= 1.0 else 'not met'}")
        rt = statistics.fmean(x["mean_round_time"] for x in groups[("invariant", r)])
        nx = statistics.fmean(x["mean_next_slowest"] for x in groups[("invariant", r)])
        out.append(f"- r={r:.2f}: round time {rt:.0f} vs next-slowest {nx:.0f} "
                   f"(× {rt / nx:.2f}; FedAvg's straggler round "
                   f"{statistics.fmean(b['mean_round_time'] for b in base.values()):.0f})")
    return out


def main(paths: list[str]) -> int:
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    meta: dict[str, dict[str, Any]] = {}
    for p in paths:
        doc = json.loads(Path(p).read_text())
        key = f"{doc['task']}, {doc['rounds']} rounds"  # sweeps of other lengths stay apart
        seen = {(r["seed"], r["method"], r["r"]) for r in by_task[key]}
        # a run repeated in another file (e.g. the FedAvg baseline) counts once
        by_task[key].extend(r for r in doc["runs"] if (r["seed"], r["method"], r["r"]) not in seen)
        meta[key] = doc
    for task, runs in by_task.items():
        print("\n".join(table(runs, task, meta[task])))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
