"""Stale-sample skipping: exact vs slipstream at several targets, small fast tier over a slower one.

Trains the same model on the same synthetic data (``hotpipe synth``) exactly
and with ``skip.mode=slipstream`` at each ``--targets`` share, the runs
interleaved (exact, 0.1, 0.3, 0.5, exact, ...), and prints per mode the
median validation AUC / log-loss and their difference from exact, samples/s
(samples of the data passed over per second of training, skipped ones
included, so it is the epoch-time ratio) and its ratio to exact, the share
of samples skipped, rows fetched and rows written back. Writes JSON with
every run and a Markdown table.

    python benchmarks/bench_skip.py --rows 300000 --scale 0.01 --capacity 0.05 \\
        --backing host --repeats 3 --markdown /tmp/hotpipe_fragments/skip_BENCHMARKS.md
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


def _run(overrides: list[str], out: Path) -> dict[str, Any]:
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    m = train(load_config(overrides=overrides), out, overwrite=True)
    s = m.get("skip", {})
    return {"val_auc": m["val_auc"], "val_logloss": m["val_logloss"],
            "samples_per_s": m["samples_per_s"], "train_seconds": m["train_seconds"],
            "stall_seconds": m["cache"]["stall_seconds"], "rows_fetched": m["cache"]["rows_fetched"],
            "rows_written_back": m["cache"]["rows_written_back"],
            "fraction_skipped": s.get("fraction_skipped", 0.0), "periods": s.get("periods", []),
            "wall_s": time.perf_counter() - t0, "load_before": load0, "load_after": os.getloadavg()[0]}


def _table(modes: list[str], med: dict[str, dict[str, float]]) -> str:
    ex = med["exact"]
    lines = ["| mode | val AUC | ΔAUC vs exact | val log-loss | Δlog-loss | samples/s | × exact "
             "| train s | samples skipped | rows fetched | rows written back |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for mode in modes:
        m = med[mode]
        lines.append(
            f"| {mode} | {m['val_auc']:.4f} | {m['val_auc'] - ex['val_auc']:+.4f} | {m['val_logloss']:.4f} "
            f"| {m['val_logloss'] - ex['val_logloss']:+.4f} | {m['samples_per_s']:,.0f} "
            f"| {m['samples_per_s'] / ex['samples_per_s']:.2f} | {m['train_seconds']:.1f} "
            f"| {m['fraction_skipped']:.3f} | {int(m['rows_fetched']):,} | {int(m['rows_written_back']):,} |")
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
    ap.add_argument("--untiered", action="store_true", help="cache.policy=none (compute only)")
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--backing", default="host", choices=["host", "file"])
    ap.add_argument("--targets", default="0.1,0.3,0.5", help="skip.target_drop values")
    ap.add_argument("--warmup", type=int, default=100, help="skip.warmup")
    ap.add_argument("--interval", type=int, default=50, help="skip.interval")
    ap.add_argument("--hot-rows", type=int, default=0, help="skip.hot_rows (0 = the fast tier's size)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default="bench_skip.json")
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
              "data.max_val_rows=20000", f"cache.policy={'none' if a.untiered else 'lookahead'}",
              f"cache.capacity={a.capacity}",
              f"cache.window={a.window}", f"cache.depth={a.depth}", f"cache.backing={a.backing}",
              f"cache.backing_dir={work / 'tables'}"]
    modes = {"exact": []}
    for t in a.targets.split(","):
        modes[f"slipstream {t}"] = ["skip.mode=slipstream", f"skip.target_drop={t}",
                                    f"skip.warmup={a.warmup}", f"skip.interval={a.interval}",
                                    f"skip.hot_rows={a.hot_rows}"]
    runs: list[dict[str, Any]] = []
    for r in range(a.repeats):
        for mode, extra in modes.items():
            res = {"mode": mode, "repeat": r, **_run([*common, *extra], work / "run")}
            runs.append(res)
            print(f"[{r}] {mode:15s} auc={res['val_auc']:.4f} logloss={res['val_logloss']:.4f} "
                  f"{res['samples_per_s']:>9,.0f} samples/s skipped={res['fraction_skipped']:.3f} "
                  f"load={res['load_before']:.1f}", flush=True)
    keys = ("val_auc", "val_logloss", "samples_per_s", "train_seconds", "fraction_skipped",
            "rows_fetched", "rows_written_back")
    med = {m: {k: statistics.median(float(x[k]) for x in runs if x["mode"] == m) for k in keys}
           for m in modes}
    table = _table(list(modes), med)
    loads = [x["load_before"] for x in runs]
    steps = int(a.rows * 0.95) // a.batch_size * a.epochs
    cmd = "python " + " ".join(shlex.quote(x) for x in sys.argv)
    note = (f"{a.rows:,} synthetic rows (scale {a.scale}, zipf {a.zipf}, drift {a.drift}; teacher AUC "
            f"{teacher if teacher is None else f'{teacher:.4f}'}), batch {a.batch_size} (~{steps} steps), "
            f"dim {a.dim}, {a.epochs} epoch(s), "
            f"{'untiered' if a.untiered else f'lookahead at capacity {a.capacity} over {a.backing} backing'}"
            f", skip.warmup {a.warmup}, skip.interval {a.interval}, "
            f"hot rows {a.hot_rows or '= fast tier'}; "
            f"medians of {a.repeats} interleaved repeats; 1-min load average "
            f"{min(loads):.1f}–{max(loads):.1f} on {os.cpu_count()} cores")
    print("\n" + note + "\n\n" + table)
    Path(a.json).write_text(json.dumps({"args": vars(a), "runs": runs, "median": med,
                                        "teacher_auc": teacher}, indent=2))
    if a.markdown:
        Path(a.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(a.markdown).write_text(f"{note}\n\n```\n{cmd}\n```\n\n{table}\n")


if __name__ == "__main__":
    main()
