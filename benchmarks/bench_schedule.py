"""Popular/non-popular scheduling: exact vs fae vs hotline, small fast tier over a slow one.

Trains the same model on the same synthetic data (``hotpipe synth``) with the
exact lookahead order and with ``schedule.mode=fae`` and ``hotline``, the
runs interleaved (exact, fae, hotline, exact, ...), and prints per mode the
median validation AUC / log-loss and their difference from exact, samples/s
and its ratio to exact, stall seconds (by kind of step), the popular sample
fraction and rows fetched. Writes JSON with every run and a Markdown table.

    python benchmarks/bench_schedule.py --rows 300000 --scale 0.01 --capacity 0.05 \\
        --backing file --repeats 3 --markdown /tmp/hotpipe_fragments/schedule_BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hotpipe.config import load_config
from hotpipe.data.synth import synthesize
from hotpipe.train.run import train

MODES = ("exact", "fae", "hotline")


def _run(overrides: list[str], out: Path) -> dict[str, Any]:
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    m = train(load_config(overrides=overrides), out, overwrite=True)
    s = m.get("schedule", {})
    return {"val_auc": m["val_auc"], "val_logloss": m["val_logloss"],
            "samples_per_s": m["samples_per_s"], "train_seconds": m["train_seconds"],
            "stall_seconds": m["cache"]["stall_seconds"], "rows_fetched": m["cache"]["rows_fetched"],
            "hit_rate": m["cache"]["hit_rate"], "popular_fraction": s.get("popular_fraction"),
            "batches": s.get("batches"), "stall_by_kind": s.get("stall_seconds"),
            "wall_s": time.perf_counter() - t0, "load_before": load0, "load_after": os.getloadavg()[0]}


def _table(med: dict[str, dict[str, float]], runs: list[dict[str, Any]]) -> str:
    ex = med["exact"]
    lines = ["| mode | val AUC | ΔAUC vs exact | val log-loss | Δlog-loss | samples/s | × exact "
             "| stall s | stall s popular / non-pop. / mixed (last repeat) | popular samples | rows fetched |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for mode in MODES:
        m = med[mode]
        last = [r for r in runs if r["mode"] == mode][-1]
        kinds = last["stall_by_kind"]
        by_kind = " / ".join(f"{kinds[k]:.2f}" for k in ("popular", "non_popular", "mixed")) if kinds else "—"
        pop = f"{last['popular_fraction']:.3f}" if last["popular_fraction"] is not None else "—"
        lines.append(
            f"| {mode} | {m['val_auc']:.4f} | {m['val_auc'] - ex['val_auc']:+.4f} | {m['val_logloss']:.4f} "
            f"| {m['val_logloss'] - ex['val_logloss']:+.4f} | {m['samples_per_s']:,.0f} "
            f"| {m['samples_per_s'] / ex['samples_per_s']:.2f} | {m['stall_seconds']:.2f} | {by_kind} "
            f"| {pop} | {int(m['rows_fetched']):,} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--scale", type=float, default=0.01, help="Criteo cardinalities x scale")
    ap.add_argument("--zipf", type=float, default=1.05)
    ap.add_argument("--drift", type=float, default=0.0)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--capacity", default="0.05")
    ap.add_argument("--window", type=int, default=64, help="cache.window and schedule.window")
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--backing", default="file", choices=["host", "file"])
    ap.add_argument("--sample", type=float, default=0.05, help="schedule.sample")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default="bench_schedule.json")
    ap.add_argument("--markdown", default=None, help="also write the table + command here")
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()

    work = Path(a.workdir or tempfile.mkdtemp(prefix="hotpipe-bench-"))
    data = work / f"data-{a.rows}-{a.scale}-{a.zipf}-{a.drift}"
    if not (data / "manifest.json").exists():
        synthesize(data, rows=a.rows, scale=a.scale, zipf=a.zipf, drift=a.drift, seed=0, progress=False)
    teacher = json.loads((data / "manifest.json").read_text()).get("teacher_auc")
    common = [f"data.path={data}", f"data.batch_size={a.batch_size}", f"model.embedding_dim={a.dim}",
              f"model.bottom=[64,{a.dim}]", "model.top=[64,1]", "train.progress=false",
              f"train.epochs={a.epochs}", f"train.threads={a.threads}", "data.val_fraction=0.05",
              "data.max_val_rows=20000", "cache.policy=lookahead", f"cache.capacity={a.capacity}",
              f"cache.window={a.window}", f"cache.depth={a.depth}", f"cache.backing={a.backing}",
              f"cache.backing_dir={work / 'tables'}"]
    sched = {"exact": [], **{m: [f"schedule.mode={m}", f"schedule.window={a.window}",
                                 f"schedule.sample={a.sample}"] for m in ("fae", "hotline")}}
    runs: list[dict[str, Any]] = []
    for r in range(a.repeats):
        for mode in MODES:
            res = {"mode": mode, "repeat": r, **_run([*common, *sched[mode]], work / f"run-{mode}")}
            runs.append(res)
            print(f"[{r}] {mode:8s} auc={res['val_auc']:.4f} logloss={res['val_logloss']:.4f} "
                  f"{res['samples_per_s']:>9,.0f} samples/s stall={res['stall_seconds']:.2f}s "
                  f"load={res['load_before']:.1f}", flush=True)
    keys = ("val_auc", "val_logloss", "samples_per_s", "stall_seconds", "rows_fetched", "train_seconds")
    med = {m: {k: statistics.median(float(x[k]) for x in runs if x["mode"] == m) for k in keys}
           for m in MODES}
    table = _table(med, runs)
    loads = [x["load_before"] for x in runs]
    cmd = "python " + " ".join(shlex.quote(x) for x in sys.argv)
    note = (f"{a.rows:,} synthetic rows (scale {a.scale}, zipf {a.zipf}, drift {a.drift}; teacher AUC "
            f"{teacher if teacher is None else f'{teacher:.4f}'}), batch {a.batch_size}, dim {a.dim}, "
            f"{a.epochs} epoch(s), lookahead at capacity {a.capacity} over {a.backing} backing, "
            f"window {a.window}, depth {a.depth}; medians of {a.repeats} interleaved repeats; "
            f"1-min load average {min(loads):.1f}–{max(loads):.1f} on {os.cpu_count()} cores")
    print("\n" + note + "\n\n" + table)
    Path(a.json).write_text(json.dumps({"args": vars(a), "runs": runs, "median": med,
                                        "teacher_auc": teacher}, indent=2))
    if a.markdown:
        Path(a.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(a.markdown).write_text(f"{note}\n\n```\n{cmd}\n```\n\n{table}\n")


if __name__ == "__main__":
    main()
