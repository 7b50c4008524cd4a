"""Rows moved per eviction policy (issue #3): lookahead vs LRU / LFU / static.

End to end, through the CLI: ``hotpipe prepare`` the real samples of
``../shared/data`` (two Criteo samples, TalkingData) into a temporary
directory outside the repo (their terms forbid committing them),
``hotpipe synth`` Criteo-shaped sets (1M samples, scale 0.05, batch 2048) at
Zipf 1.05 and 1.2, each with drift 0, 0.5 and 0.02, then ``hotpipe simulate`` each one at 1%, 5%, 10% and 25% capacity
with all four policies (window 64, depth 1), plus lookahead with window 256
and with a window covering the whole trace (= Belady's MIN, the optimum under
the planner's cache model). Prints one table with rows fetched relative to
LRU and whether issue #3's goal holds:

* lookahead <= 0.7x LRU's rows fetched at 1% and 5% capacity, and
* lookahead below every other policy at every capacity.

``uniq`` is the number of distinct rows the trace touches: every policy
fetches each at least once, so ``uniq / LRU`` bounds every ratio from below.
A capacity smaller than the rows pinned by ``depth + 1`` consecutive steps
cannot be planned by any policy (``infeasible``); for the small real samples
the script therefore also runs the largest power-of-two batch <= 128 at which
1% capacity is feasible.

    python benchmarks/rows_moved.py                      # ~4 min on 2 busy cores
    python benchmarks/rows_moved.py --json /tmp/rows_moved.json --workdir /tmp/rm --drifts 0.5

Every number is deterministic (seeded generator, deterministic planner); only
the runtimes vary with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.loader import TrainTrace
from hotpipe.plan import min_capacity
from hotpipe.plan.reference import belady_fetches
from hotpipe.plan.simulate import replay

REPO = Path(__file__).resolve().parents[1]
CAPACITIES = ("0.01", "0.05", "0.1", "0.25")
POLICIES = ("lookahead", "lru", "lfu", "static")
GOAL_CAPS = (0.01, 0.05)
GOAL_RATIO = 0.7
TALKINGDATA_SCHEMA = "label: is_attributed\ncategorical: [ip, app, device, os, channel]\ndense: []\n"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def hotpipe_cmd() -> list[str]:
    exe = shutil.which("hotpipe") or str(Path(sys.executable).with_name("hotpipe"))
    return [exe]


def run(args: list[str], log: list[str]) -> None:
    """Run a hotpipe CLI command; on failure show its output and stop."""
    cmd = hotpipe_cmd() + args
    log.append(" ".join(["hotpipe", *args]))
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}")


def simulate(data: Path, out: Path, *, batch: int, window: int, policies: tuple[str, ...],
             log: list[str], depth: int = 1) -> dict[tuple[str, float], dict[str, Any]]:
    """``hotpipe simulate``; results keyed by (policy, capacity fraction as asked)."""
    run(["simulate", "--data", str(data), "--out", str(out), "--policy", ",".join(policies),
         "--capacity", ",".join(CAPACITIES), "--window", str(window), "--depth", str(depth),
         "--batch-size", str(batch)], log)
    res = json.loads((out / "simulate.json").read_text())
    # capacity-major, policies in the order asked
    keys = [(p, float(c)) for c in CAPACITIES for p in policies]
    if len(res) != len(keys):
        raise SystemExit(f"{out}/simulate.json: {len(res)} results, expected {len(keys)}")
    return dict(zip(keys, res, strict=True))


def distinct_rows(data: Path) -> int:
    """Rows the whole dataset touches at least once (a floor on any policy's fetches)."""
    ds = ColumnarDataset.open(data)
    return sum(int(np.count_nonzero(np.bincount(ds.sparse[:, t], minlength=1)))
               for t in range(ds.sparse.shape[1]))


def small_batch_for_1pct(data: Path, depth: int, start: int) -> int:
    """Largest power-of-two batch <= start whose pinned rows fit in 1% of the rows (at least 1)."""
    ds = ColumnarDataset.open(data)
    b = start
    while b > 1:
        tr = TrainTrace(ds, batch_size=b, val_fraction=0.0)
        if min_capacity(tr, depth) <= round(0.01 * tr.num_rows):
            return b
        b //= 2
    return 1


def bench_config(name: str, data: Path, work: Path, batch: int, log: list[str],
                 wide: int) -> dict[str, Any]:
    """All simulate runs of one (dataset, batch): W=64 all policies, W=wide and W=all lookahead."""
    ds = ColumnarDataset.open(data)
    steps = -(-ds.rows // batch)
    t0 = time.perf_counter()
    tag = f"{name}_b{batch}"
    base = simulate(data, work / f"sim_{tag}_w64", batch=batch, window=64, policies=POLICIES,
                    log=log)
    res: dict[str, dict[float, dict[str, Any]]] = {
        p: {float(c): base[(p, float(c))] for c in CAPACITIES} for p in POLICIES}
    # lookahead with a wider window, then with the whole trace in view (Belady's MIN)
    for key, w in ((f"lookahead_w{wide}", wide), ("min", steps)):
        if w <= 64:
            res[key] = res["lookahead"]
            continue
        if key == "min" and steps <= wide:
            res[key] = res[f"lookahead_w{wide}"]
            continue
        r = simulate(data, work / f"sim_{tag}_w{w}", batch=batch, window=w,
                     policies=("lookahead",), log=log)
        res[key] = {float(c): r[("lookahead", float(c))] for c in CAPACITIES}
    return {"dataset": name, "batch": batch, "steps": steps, "samples": ds.rows,
            "num_rows": sum(ds.cardinalities), "uniq": distinct_rows(data),
            "results": res, "seconds": time.perf_counter() - t0, "load_after": loadavg()}


def summarize(cfgs: list[dict[str, Any]], wide: int) -> tuple[str, list[str]]:
    """The summary table (ratios to LRU at the same capacity) and goal misses."""
    la_w = f"lookahead_w{wide}"
    head = (f"{'dataset':<18} {'batch':>5} {'steps':>5} {'cap':>4} {'slots':>8} "
            f"{'LRU rows':>10} {'LA64 rows':>10} {'LFU':>6} {'static':>6} {'LA64':>6} "
            f"{'LA' + str(wide):>6} {'MIN':>6} {'uniq':>6}  {'LA<all':>6}  goal<=0.7")
    lines = [head, "-" * len(head)]
    misses: list[str] = []
    for cfg in cfgs:
        res, uniq = cfg["results"], cfg["uniq"]
        for c in map(float, CAPACITIES):
            lru = res["lru"][c]
            pre = (f"{cfg['dataset']:<18} {cfg['batch']:>5} {cfg['steps']:>5} {c:>4.0%} "
                   f"{lru['capacity_rows']:>8} ")
            errs = [res[p][c]["error"] for p in POLICIES if res[p][c]["error"]]
            if errs:
                lines.append(pre + f"infeasible: {errs[0].split(': need')[0]}")
                continue
            base = lru["rows_fetched"]

            def ratio(key: str, c: float = c, base: int = base,
                      res: dict[str, Any] = res) -> float:
                r = res[key][c]
                return float("nan") if r["error"] else r["rows_fetched"] / base

            la = res["lookahead"][c]["rows_fetched"]
            others = min(res[p][c]["rows_fetched"] for p in ("lru", "lfu", "static"))
            if la < others:
                lowest = "yes"
            elif la == others and la == res["min"][c]["rows_fetched"]:
                lowest = "=MIN"  # a tie at the optimum (e.g. all fit): nothing to beat
            else:
                lowest = "NO"
            if c in GOAL_CAPS:
                goal = "yes" if la <= GOAL_RATIO * base else "NO"
                if goal == "NO":
                    m = ratio("min")
                    goal += f" (MIN {m:.3f}: {'unreachable' if m > GOAL_RATIO else 'reachable'})"
            else:
                goal = "-"
            if lowest == "NO" or goal.startswith("NO"):
                misses.append(f"{cfg['dataset']} batch {cfg['batch']} at {c:.0%}: "
                              f"lookahead/LRU {la / base:.3f}, lowest: {lowest}, goal: {goal}")
            lines.append(pre + f"{base:>10} {la:>10} {ratio('lfu'):>6.3f} {ratio('static'):>6.3f} "
                         f"{la / base:>6.3f} {ratio(la_w):>6.3f} {ratio('min'):>6.3f} "
                         f"{uniq / base:>6.3f}  {lowest:>6}  {goal}")
    return "\n".join(lines), misses


def check_min_is_belady(data: Path, batch: int, caps: tuple[float, ...]) -> list[str]:
    """Lookahead with the whole trace in view fetches what the slow reference MIN fetches."""
    ds = ColumnarDataset.open(data)
    tr = TrainTrace(ds, batch_size=batch, val_fraction=0.0)
    steps = list(tr)
    out = []
    for c in caps:
        cap = round(c * tr.num_rows)
        ref = belady_fetches(steps, capacity=cap, depth=1)
        got = replay(steps, num_rows=tr.num_rows, capacity_rows=cap, policy="lookahead",
                     window=len(steps), depth=1).rows_fetched
        out.append(f"{data.name} batch {batch} cap {cap}: lookahead(full window) {got}, "
                   f"reference belady_fetches {ref}: {'equal' if got == ref else 'DIFFERENT'}")
    return out


def check_window_independent(data: Path, batch: int, wide: int) -> list[str]:
    """LRU, LFU and static must not depend on the window (they do not look ahead)."""
    ds = ColumnarDataset.open(data)
    tr = TrainTrace(ds, batch_size=batch, val_fraction=0.0)
    steps = list(tr)
    cap = round(0.05 * tr.num_rows)
    out = []
    for p in ("lru", "lfu", "static"):
        a, b = (replay(steps, num_rows=tr.num_rows, capacity_rows=cap, policy=p, window=w,
                       depth=1).rows_fetched for w in (64, wide))
        out.append(f"{data.name} batch {batch} cap {cap} {p}: W=64 {a}, W={wide} {b}: "
                   f"{'equal' if a == b else 'DIFFERENT'}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                    help="folder with criteo_samples/ and talkingdata_sample/")
    ap.add_argument("--rows", type=int, default=1_000_000, help="synthetic samples per set")
    ap.add_argument("--scale", type=float, default=0.05, help="synthetic table sizes x Criteo")
    ap.add_argument("--drifts", default="0.5,0.02",
                    help="comma-separated drifts of the drifting sets (drift 0 always runs)")
    ap.add_argument("--batch", type=int, default=2048, help="synthetic batch size")
    ap.add_argument("--real-batch", type=int, default=128, help="batch size of the real samples")
    ap.add_argument("--wide-window", type=int, default=256, help="the larger lookahead window")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep prepared data and results here (default: a temp dir, removed)")
    ap.add_argument("--json", type=Path, default=None, help="write all numbers here")
    args = ap.parse_args()

    t_start = time.perf_counter()
    load0 = loadavg()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="hotpipe_rows_moved_"))
    if work.resolve().is_relative_to(REPO):
        raise SystemExit(f"--workdir {work} is inside the repo; the real data must not land there")
    work.mkdir(parents=True, exist_ok=True)
    log: list[str] = []
    phases: dict[str, float] = {}
    print(f"workdir {work}; load average at start {load0}", flush=True)
    try:
        t = time.perf_counter()
        real: list[tuple[str, Path]] = []
        crit = args.data / "criteo_samples"
        for name, fname in (("criteo_8k", "criteo_lapishong_8k.txt"),
                            ("criteo_4.6k", "criteo_cafpereira_random_4584.txt")):
            if (crit / fname).exists():
                run(["prepare", "--out", str(work / name), "--no-progress", str(crit / fname)], log)
                real.append((name, work / name))
            else:
                print(f"skipped {name}: {crit / fname} not found")
        td = args.data / "talkingdata_sample" / "train_sample.csv"
        if td.exists():
            (work / "talkingdata.yaml").write_text(TALKINGDATA_SCHEMA)
            run(["prepare", "--out", str(work / "talkingdata"), "--schema",
                 str(work / "talkingdata.yaml"), "--no-progress", str(td)], log)
            real.append(("talkingdata", work / "talkingdata"))
        else:
            print(f"skipped talkingdata: {td} not found")
        phases["prepare real"] = time.perf_counter() - t

        t = time.perf_counter()
        synth: list[tuple[str, Path]] = []
        for zipf in (1.05, 1.2):
            for drift in (0.0, *(float(d) for d in args.drifts.split(","))):
                name = f"synth_z{zipf}_d{drift:g}"
                run(["synth", "--out", str(work / name), "--rows", str(args.rows), "--scale",
                     str(args.scale), "--zipf", str(zipf), "--drift", str(drift), "--seed", "0",
                     "--no-progress"], log)
                synth.append((name, work / name))
        phases["synthesize"] = time.perf_counter() - t

        cfgs = []
        t = time.perf_counter()
        for name, path in real:
            batches = [args.real_batch]
            small = small_batch_for_1pct(path, 1, args.real_batch)
            if small != args.real_batch:
                batches.append(small)
            for b in batches:
                cfgs.append(bench_config(name, path, work, b, log, args.wide_window))
                print(f"  {name} batch {b}: {cfgs[-1]['seconds']:.1f} s", flush=True)
        phases["simulate real"] = time.perf_counter() - t
        t = time.perf_counter()
        for name, path in synth:
            cfgs.append(bench_config(name, path, work, args.batch, log, args.wide_window))
            print(f"  {name}: {cfgs[-1]['seconds']:.1f} s (load {cfgs[-1]['load_after']})",
                  flush=True)
        phases["simulate synthetic"] = time.perf_counter() - t

        t = time.perf_counter()
        checks: list[str] = []
        if real:
            checks += check_min_is_belady(real[0][1], args.real_batch, (0.1, 0.25))
        if any(n == "talkingdata" for n, _ in real):
            checks += check_window_independent(work / "talkingdata", args.real_batch,
                                               args.wide_window)
        phases["checks"] = time.perf_counter() - t
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    table, misses = summarize(cfgs, args.wide_window)
    total = time.perf_counter() - t_start
    print()
    print(f"Rows fetched, ratios to LRU at the same capacity (depth 1; LFU, static, LA64: window "
          f"64; LA{args.wide_window}: lookahead window {args.wide_window}; MIN: lookahead with "
          f"the whole trace in view = Belady; uniq: distinct rows touched)")
    print(table)
    print()
    print("goal misses:" if misses else "goal met everywhere")
    for m in misses:
        print("  " + m)
    print()
    print("checks:")
    for c in checks:
        print("  " + c)
    print()
    print("runtimes: " + ", ".join(f"{k} {v:.0f} s" for k, v in phases.items())
          + f"; total {total:.0f} s")
    print(f"load average: start {load0}, end {loadavg()} (2-core machine shared with others)")
    if args.json:
        args.json.write_text(json.dumps(
            {"configs": [{**c, "results": {p: {str(k): v for k, v in r.items()}
                                          for p, r in c["results"].items()}} for c in cfgs],
             "checks": checks, "phases": phases, "total_seconds": total, "load_start": load0,
             "load_end": loadavg(), "commands": log, "args": {k: str(v) for k, v in
                                                              vars(args).items()}}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
