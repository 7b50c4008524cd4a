"""DLRM (sum/mean pooling) vs the TBSM-style sequence model on synthetic multi-hot behaviour data.

Same data, same steps, same seeds for every arm; arms interleaved within each
seed so machine load hits them alike. Reports validation AUC / log-loss (median
and spread over seeds), samples/s (median) with the ratio to DLRM-sum, the
teacher's AUC (the ceiling), and the load average before and after.

    python benchmarks/bench_multihot.py --rows 60000 --seeds 3 --out runs/bench_multihot.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from hotpipe.config import load_config
from hotpipe.data.synth_behaviour import synthesize_behaviour
from hotpipe.train.run import train

COMMON = ["train.progress=false", "train.threads=1", "data.val_fraction=0.2", "model.embedding_dim=16",
          "model.bottom=[16]", "model.top=[32,1]", "optim.embedding=rowwise_adagrad"]
ARMS = {
    "dlrm-sum": ["model.arch=dlrm", "model.pooling=sum"],
    "dlrm-mean": ["model.arch=dlrm", "model.pooling=mean"],
    "tbsm": ["model.arch=tbsm", "model.history_table=0", "model.target_table=1"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=60000)
    ap.add_argument("--max-len", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default="runs/bench_multihot.json")
    args = ap.parse_args()
    load_before = os.getloadavg()
    results: dict[str, list[dict[str, float]]] = {a: [] for a in ARMS}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "ub"
        s = synthesize_behaviour(data, rows=args.rows, max_len=args.max_len, items=2000, users=1000,
                                 clusters=20, seed=0)
        print(s.format())
        for seed in range(args.seeds):
            for arch, extra in ARMS.items():
                hl = [f"model.history_len={args.max_len}"] if arch == "tbsm" else []
                m = train(load_config(overrides=[
                    *COMMON, *extra, *hl, f"data.path={data}", f"data.batch_size={args.batch}",
                    f"train.epochs={args.epochs}", f"train.seed={seed}"]), Path(tmp) / f"{arch}-{seed}")
                results[arch].append({k: m[k] for k in ("val_auc", "val_logloss", "samples_per_s")})
                print(f"seed {seed} {arch:9s} auc {m['val_auc']:.4f} logloss {m['val_logloss']:.4f} "
                      f"{m['samples_per_s']:,.0f} samples/s", flush=True)
    load_after = os.getloadavg()
    base = statistics.median(r["samples_per_s"] for r in results["dlrm-sum"])
    summary = {}
    print(f"\nteacher AUC {s.teacher_auc:.4f}; load {load_before[0]:.1f} -> {load_after[0]:.1f}")
    print("| model | val AUC (median, min..max) | val log-loss (median) | samples/s (median) | vs dlrm-sum |")
    print("|---|---|---|---|---|")
    for arch, rs in results.items():
        aucs = [r["val_auc"] for r in rs]
        sps = statistics.median(r["samples_per_s"] for r in rs)
        summary[arch] = {"val_auc": aucs, "val_logloss": [r["val_logloss"] for r in rs],
                         "samples_per_s": [r["samples_per_s"] for r in rs]}
        print(f"| {arch} | {statistics.median(aucs):.4f} ({min(aucs):.4f}..{max(aucs):.4f}) | "
              f"{statistics.median(r['val_logloss'] for r in rs):.4f} | {sps:,.0f} | {sps / base:.2f}x |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "teacher_auc": s.teacher_auc,
                                          "load": [load_before, load_after], "arms": summary}, indent=1))


if __name__ == "__main__":
    main()
