"""Model quality side by side: DLRM vs DCN-v2 vs Ad-Rec on the same synthetic data.

For each dataset (without and with drift, ``hotpipe synth --drift``) and each
seed, trains every arch for the same steps on the same batches (the
validation split is the *last* rows, so under drift it is the shifted
distribution) and prints the median over seeds of validation AUC, log-loss,
the first evaluated step reaching ``--target-auc`` and samples/s, plus each
arch's AUC minus DLRM's measured in the same seed. Writes JSON with every run.

``--data NAME=DIR`` (repeatable) runs on already-prepared datasets instead of
synthesizing (e.g. the real samples in ``../shared/data`` after ``hotpipe
prepare``); they have no teacher and no drift, so those columns say n/a.

    python benchmarks/bench_models.py --rows 200000 --scale 0.002 --epochs 2 --seeds 0 1 2 --threads 1
    python benchmarks/bench_models.py --data criteo_8k=/tmp/c8k --epochs 2 --batch-size 128 \
        --val-fraction 0.2 --dense-lr 0.01 --seeds 0 1 2 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from hotpipe.config import load_config
from hotpipe.data.synth import synthesize
from hotpipe.train.run import train

ARCHS: dict[str, list[str]] = {
    "dlrm": ["model.arch=dlrm"],
    "dcn": ["model.arch=dcn", "model.cross_layers=3", "model.cross_rank=0",
            "model.dcn_structure=stacked"],
    "adrec": ["model.arch=adrec", "model.heads=2", "model.attn_layers=2", "model.ffn_mult=2"],
}


def _evals(run_dir: Path) -> list[tuple[int, float]]:
    """(step, validation AUC) of every periodic evaluation, in order."""
    recs = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return [(int(r["step"]), float(r["val_auc"])) for r in recs if r.get("kind") == "eval"]


def _steps_to(evals: list[tuple[int, float]], target: float) -> int | None:
    """First evaluated step whose validation AUC reaches ``target`` (None = never)."""
    return next((step for step, auc in evals if auc >= target), None)


def _run(data: Path, out: Path, arch: str, seed: int, a: argparse.Namespace) -> dict[str, Any]:
    cfg = load_config(overrides=[
        f"data.path={data}", f"data.batch_size={a.batch_size}", f"data.val_fraction={a.val_fraction}",
        f"data.max_val_rows={a.val_rows}", f"model.embedding_dim={a.dim}",
        f"model.bottom=[64,{a.dim}]", "model.top=[64,1]", "model.deep=[64,32]",
        f"train.seed={seed}", f"train.threads={a.threads}", f"train.max_steps={a.steps}",
        f"train.epochs={a.epochs}", f"optim.dense_lr={a.dense_lr}",
        f"train.eval_every={a.eval_every}", "train.progress=false", *ARCHS[arch]])
    t0 = time.perf_counter()
    m = train(cfg, out)
    evals = _evals(out)
    # The best evaluation too: a second epoch can overfit the rows, and the
    # final AUC alone would hide that an arch was better earlier.
    return {"arch": arch, "seed": seed, "val_auc": m["val_auc"], "val_logloss": m["val_logloss"],
            "best_val_auc": max([m["val_auc"], *(auc for _, auc in evals)]),
            "samples_per_s": m["samples_per_s"], "steps": m["steps"],
            "steps_to_target": _steps_to(evals, a.target_auc), "wall_s": time.perf_counter() - t0,
            "loadavg": os.getloadavg()[0]}


def _find_key(obj: Any, key: str) -> Any:
    """The first value under ``key`` anywhere in a JSON tree (None if absent)."""
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        obj = list(obj.values())
    if isinstance(obj, list):
        for v in obj:
            found = _find_key(v, key)
            if found is not None:
                return found
    return None


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _table(runs: list[dict[str, Any]], target: float) -> str:
    lines = [f"| data | drift | teacher AUC | arch | val AUC | AUC - DLRM | best eval AUC | log-loss "
             f"| steps to AUC {target} | samples/s | load |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for data in dict.fromkeys(r["data"] for r in runs):
        base = {r["seed"]: r["val_auc"] for r in runs if r["data"] == data and r["arch"] == "dlrm"}
        for arch in ARCHS:
            rs = [r for r in runs if r["data"] == data and r["arch"] == arch]
            if not rs:
                continue
            reached = [r["steps_to_target"] for r in rs if r["steps_to_target"] is not None]
            steps = f"{_median(reached):.0f} ({len(reached)}/{len(rs)} seeds)" if reached else "never"
            delta = _median([r["val_auc"] - base[r["seed"]] for r in rs if r["seed"] in base])
            drift, teacher = rs[0]["drift"], rs[0]["teacher_auc"]
            lines.append(f"| {data} | {'n/a' if drift is None else f'{drift:g}'} | "
                         f"{'n/a' if teacher is None else f'{teacher:.4f}'} | {arch} | {_median([r['val_auc'] for r in rs]):.4f} | "
                         f"{delta:+.4f} | {_median([r['best_val_auc'] for r in rs]):.4f} | "
                         f"{_median([r['val_logloss'] for r in rs]):.4f} | {steps} | "
                         f"{_median([r['samples_per_s'] for r in rs]):,.0f} | "
                         f"{_median([r['loadavg'] for r in rs]):.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--scale", type=float, default=0.002, help="Criteo cardinalities x scale")
    ap.add_argument("--zipf", type=float, default=1.05)
    ap.add_argument("--drift", type=float, default=0.5,
                    help="drift of the drifting dataset (0.5: the hot set ends half a table away)")
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=0, help="train.max_steps (0 = all of --epochs)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--val-rows", type=int, default=10_000)
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--dense-lr", type=float, default=0.05, help="optim.dense_lr (all archs)")
    ap.add_argument("--data", action="append", default=[], metavar="NAME=DIR",
                    help="an already-prepared dataset (repeatable); skips synthesis")
    ap.add_argument("--target-auc", type=float, default=0.78)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    ap.add_argument("--threads", type=int, default=1, help="train.threads (0 = torch's default)")
    ap.add_argument("--json", default="bench_models.json")
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()

    work = Path(a.workdir or tempfile.mkdtemp(prefix="hotpipe-models-"))
    # name -> (prepared dir, drift, teacher AUC); None = unknown (real data).
    datasets: dict[str, tuple[Path, float | None, float | None]] = {}
    for spec in a.data:
        name, sep, d = spec.partition("=")
        if not sep or not (Path(d) / "manifest.json").is_file():
            raise SystemExit(f"--data {spec!r}: expected NAME=DIR with DIR a prepared dataset "
                             "(holding manifest.json)")
        datasets[name] = (Path(d), None, None)
    if not a.data:
        for drift in (0.0, a.drift):
            name, data = ("static" if drift == 0 else f"drift={drift:g}"), work / f"data-{drift:g}"
            if not (data / "manifest.json").exists():
                synthesize(data, rows=a.rows, scale=a.scale, zipf=a.zipf, drift=drift, seed=0,
                           progress=False)
            # From the manifest, so a reused --workdir still reports it.
            teacher = _find_key(json.loads((data / "manifest.json").read_text()), "teacher_auc")
            print(f"{name}: teacher AUC {teacher}", flush=True)
            datasets[name] = (data, drift, teacher)
    # A fresh folder for this invocation's runs: a reused --workdir keeps its
    # data but must not resume (or refuse) an earlier invocation's runs.
    run_root = Path(tempfile.mkdtemp(prefix="runs-", dir=work))
    runs: list[dict[str, Any]] = []
    for name, (data, drift, teacher) in datasets.items():
        # Interleave the archs within a seed, so a load spike on the shared
        # machine hits every arch rather than one.
        for seed in a.seeds:
            for arch in a.archs:
                r = _run(data, run_root / f"{name}-{arch}-{seed}", arch, seed, a)
                r.update(data=name, drift=drift, teacher_auc=teacher)
                runs.append(r)
                print(json.dumps(r), flush=True)
    print()
    print(_table(runs, a.target_auc))
    Path(a.json).write_text(json.dumps({"args": vars(a), "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
