"""Speed modes side by side: exact vs fae vs hotline vs slipstream vs hotline+slipstream.

One invocation trains every arm on the same data, the arms interleaved
(exact, fae, hotline, slip 0.1, ..., exact, ...), and prints per arm the
medians of samples/s, epoch (training) time, stall seconds, rows and bytes
moved, the share skipped, validation AUC / log-loss and their difference
from exact, and (with ``--hw``) the cost model's prediction for the arm
(:func:`hotpipe.placement.costmodel.predict_run`). Writes JSON with every
run and a Markdown table.

The slow tier: ``--cold`` wraps the file tier in
:class:`benchmarks.cold_tier.ColdFileBacking`, which evicts the table files
from the page cache before every read, so fetches read the disk as a table
much larger than RAM would (a benchmark-only device: see its docstring).

Slipstream arms run with the stale set lagged by the planner's reach
(``train/skip.py``: ``plan_lag``) so skipped samples' rows are not fetched,
and read their snapshots without flushing the fast tier (``current_rows``);
``--whole-plans`` adds a slip arm whose planner still sees every sample
(rows saved = the difference).

    python benchmarks/bench_modes.py --rows 300000 --capacity 0.02 --cold --repeats 3 \\
        --markdown /tmp/hotpipe_fragments/modes_speed.md
    python benchmarks/bench_modes.py --rows 1000000 --untiered --repeats 1 --drift 0.5
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cold_tier import make_cold  # noqa: E402
from hotpipe.config import RunConfig, load_config  # noqa: E402
from hotpipe.data.synth import synthesize  # noqa: E402
from hotpipe.train.run import build_components, train  # noqa: E402
from hotpipe.train.skip import current_rows, plan_lag  # noqa: E402


def arms(targets: list[float], combined: float, whole: bool) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"exact": [], "fae": ["schedule.mode=fae"],
                                 "hotline": ["schedule.mode=hotline"]}
    for t in targets:
        out[f"slip {t:g}"] = ["skip.mode=slipstream", f"skip.target_drop={t}"]
    if whole:
        out[f"slip {combined:g} whole plans"] = ["skip.mode=slipstream", f"skip.target_drop={combined}"]
    out[f"hotline+slip {combined:g}"] = ["schedule.mode=hotline", "skip.mode=slipstream",
                                         f"skip.target_drop={combined}"]
    return out


def _run(cfg: RunConfig, out: Path, *, cold: bool, whole: bool) -> dict[str, Any]:
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    c = build_components(cfg, out)
    dropped = None
    if cold:
        dropped = make_cold(c)
    if c.skipper is not None:  # the lag that lets the planner see each stale set; no flushes
        c.skipper = c.skipper.with_lag(plan_lag(cfg.cache), plan_filter=not whole,
                                       read_rows=current_rows(c.feed))
    m = train(cfg, out, overwrite=True, components=c)
    ca, s, k = m["cache"], m.get("schedule", {}), m.get("skip", {})
    return {"val_auc": m["val_auc"], "val_logloss": m["val_logloss"],
            "samples_per_s": m["samples_per_s"], "train_seconds": m["train_seconds"],
            "stall_seconds": ca.get("stall_seconds", 0.0), "rows_fetched": ca.get("rows_fetched", 0),
            "rows_written_back": ca.get("rows_written_back", 0),
            "bytes_moved": ca.get("bytes_fetched", 0) + ca.get("bytes_written_back", 0),
            "popular_fraction": s.get("popular_fraction"), "stall_by_kind": s.get("stall_seconds"),
            "fraction_skipped": k.get("fraction_skipped", 0.0),
            "samples_not_planned": k.get("samples_not_planned", 0),
            "drop_seconds": dropped.drop_seconds if dropped else 0.0,
            "teacher_auc": m.get("teacher_auc"), "steps": m["steps"],
            "wall_s": time.perf_counter() - t0, "load_before": load0, "load_after": os.getloadavg()[0]}


KEYS = ("val_auc", "val_logloss", "samples_per_s", "train_seconds", "stall_seconds", "rows_fetched",
        "rows_written_back", "bytes_moved", "fraction_skipped", "samples_not_planned")


def _table(names: list[str], med: dict[str, dict[str, float]], pred: dict[str, dict[str, Any]]) -> str:
    ex = med["exact"]
    head = ("| arm | val AUC | ΔAUC | val log-loss | Δlog-loss | samples/s | × exact | epoch s "
            "| stall s | skipped | rows fetched | MiB moved |")
    sep = "|---|---|---|---|---|---|---|---|---|---|---|---|"
    if pred:
        head += " predicted samples/s | predicted × exact | predicted rows fetched |"
        sep += "---|---|---|"
    lines = [head, sep]
    for n in names:
        m = med[n]
        row = (f"| {n} | {m['val_auc']:.4f} | {m['val_auc'] - ex['val_auc']:+.4f} | {m['val_logloss']:.4f} "
               f"| {m['val_logloss'] - ex['val_logloss']:+.4f} | {m['samples_per_s']:,.0f} "
               f"| {m['samples_per_s'] / ex['samples_per_s']:.2f} | {m['train_seconds']:.1f} "
               f"| {m['stall_seconds']:.1f} | {m['fraction_skipped']:.3f} | {int(m['rows_fetched']):,} "
               f"| {m['bytes_moved'] / 2**20:,.0f} |")
        if pred:
            p, pe = pred[n], pred["exact"]
            row += (f" {p['samples_per_s']:,.0f} | {p['samples_per_s'] / pe['samples_per_s']:.2f} "
                    f"| {p['rows_fetched']:,} |")
        lines.append(row)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", default=None, help="a prepared dataset (default: synthesize one)")
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--scale", type=float, default=0.01, help="Criteo cardinalities x scale")
    ap.add_argument("--zipf", type=float, default=1.05)
    ap.add_argument("--drift", type=float, default=0.0)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--capacity", default="0.02")
    ap.add_argument("--window", type=int, default=64, help="cache.window and schedule.window")
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--untiered", action="store_true", help="every row resident (quality only)")
    ap.add_argument("--backing", default="file", choices=["host", "file"])
    ap.add_argument("--cold", action="store_true", help="evict the file tier before each read")
    ap.add_argument("--targets", default="0.1,0.3,0.5")
    ap.add_argument("--combined", type=float, default=0.3, help="target of hotline+slip")
    ap.add_argument("--whole-plans", action="store_true", help="add a slip arm planning every sample")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--interval", type=int, default=50)
    ap.add_argument("--only", default=None, help="comma-separated arm names (exact always runs)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--val-fraction", type=float, default=0.05)
    ap.add_argument("--max-val-rows", type=int, default=50_000)
    ap.add_argument("--hw", default=None, help="hotpipe calibrate's JSON: add the cost model's predictions")
    ap.add_argument("--json", default="bench_modes.json")
    ap.add_argument("--markdown", default=None, help="also write the table + command here")
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()

    work = Path(a.workdir or tempfile.mkdtemp(prefix="hotpipe-modes-"))
    if a.data:
        data = Path(a.data)
    else:
        data = work / f"data-{a.rows}-{a.scale}-{a.zipf}-{a.drift}"
        if not (data / "manifest.json").exists():
            synthesize(data, rows=a.rows, scale=a.scale, zipf=a.zipf, drift=a.drift, seed=0, progress=False)
    teacher = json.loads((data / "manifest.json").read_text()).get("teacher_auc")
    common = [f"data.path={data}", f"data.batch_size={a.batch_size}", f"model.embedding_dim={a.dim}",
              f"model.bottom=[64,{a.dim}]", "model.top=[64,1]", "train.progress=false",
              f"train.threads={a.threads}", f"train.epochs={a.epochs}", f"data.val_fraction={a.val_fraction}",
              f"data.max_val_rows={a.max_val_rows}", f"cache.capacity={a.capacity}",
              f"cache.window={a.window}", f"cache.depth={a.depth}", f"schedule.window={a.window}",
              f"skip.warmup={a.warmup}", f"skip.interval={a.interval}"]
    if a.untiered:
        common.append("cache.policy=none")
    else:
        common += ["cache.policy=lookahead", f"cache.backing={a.backing}",
                   f"cache.backing_dir={work / 'tables'}"]
    all_arms = arms([float(t) for t in a.targets.split(",") if t], a.combined, a.whole_plans)
    if a.only:
        keep = {"exact", *(x.strip() for x in a.only.split(","))}
        all_arms = {k: v for k, v in all_arms.items() if k in keep}
    names = list(all_arms)
    cfgs = {n: load_config(overrides=[*common, *all_arms[n]]) for n in names}
    pred: dict[str, dict[str, Any]] = {}
    if a.hw:
        from hotpipe.data.columnar import ColumnarDataset
        from hotpipe.placement.costmodel import predict_run
        from hotpipe.placement.hardware import Hardware

        hw, ds = Hardware.load(a.hw), ColumnarDataset.open(data)
        for n in names:  # rows moved: the whole trace's (the model cannot see the plan filter)
            pred[n] = predict_run(cfgs[n], ds, hw).to_dict()
            print(f"predicted {n}: {pred[n]['samples_per_s']:,.0f} samples/s, "
                  f"{pred[n]['rows_fetched']:,} rows fetched", flush=True)
    # One short unrecorded run first: the first training in a process pays one-time
    # costs (a compiled planner kernel, allocator warm-up) that no arm should carry.
    warm = load_config(overrides=[*common, "train.max_steps=20"])
    _run(warm, work / "warmup", cold=a.cold and not a.untiered, whole=False)
    runs: list[dict[str, Any]] = []
    for r in range(a.repeats):
        for n in names:
            res = {"arm": n, "repeat": r, **_run(cfgs[n], work / "run", cold=a.cold and not a.untiered,
                                                 whole=n.endswith("whole plans"))}
            runs.append(res)
            print(f"[{r}] {n:22s} auc={res['val_auc']:.4f} {res['samples_per_s']:>9,.0f} samples/s "
                  f"epoch={res['train_seconds']:.1f}s stall={res['stall_seconds']:.1f}s "
                  f"fetched={res['rows_fetched']:,} skipped={res['fraction_skipped']:.3f} "
                  f"load={res['load_before']:.1f}", flush=True)
    med = {n: {k: statistics.median(float(x[k]) for x in runs if x["arm"] == n) for k in KEYS}
           for n in names}
    table = _table(names, med, pred)
    loads = [x["load_before"] for x in runs] + [x["load_after"] for x in runs]
    ds_note = (f"{data}" if a.data else f"{a.rows:,} synthetic rows (scale {a.scale}, zipf {a.zipf}, "
               f"drift {a.drift})")
    tier = ("untiered (every row resident)" if a.untiered else
            f"lookahead at capacity {a.capacity} over {'a cold ' if a.cold else ''}{a.backing} tier, "
            f"window {a.window}, depth {a.depth}")
    note = (f"{ds_note}; teacher AUC {teacher if teacher is None else f'{teacher:.4f}'}; batch "
            f"{a.batch_size}, dim {a.dim}, {a.epochs} epoch(s), {runs[0]['steps']} steps; {tier}; "
            f"skip warmup {a.warmup}, interval {a.interval}, lag {plan_lag(cfgs['exact'].cache)}; "
            f"medians of {a.repeats} interleaved repeats; 1-min load average "
            f"{min(loads):.1f}–{max(loads):.1f} on {os.cpu_count()} cores")
    cmd = "python " + " ".join(shlex.quote(x) for x in sys.argv)
    print("\n" + note + "\n\n" + table)
    Path(a.json).write_text(json.dumps({"args": vars(a), "runs": runs, "median": med,
                                        "predicted": pred, "teacher_auc": teacher}, indent=2))
    if a.markdown:
        Path(a.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(a.markdown).write_text(f"{note}\n\n```\n{cmd}\n```\n\n{table}\n")


if __name__ == "__main__":
    main()
