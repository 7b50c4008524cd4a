"""Merge `kv_quality.py` outputs run in parallel processes into one table.

    python benchmarks/kv_table.py runs/kv/q_keyformer.json runs/kv/q_h2o.json runs/kv/q_sw.json

Each input ran the full cache on the same prompts; the merge refuses inputs
whose settings or full-cache rows differ, so every ratio is against the same
baseline (the full rows must agree exactly: CPU, one thread, same seeds).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SAME = ("model", "prompts", "prompt_len", "cont", "gen", "seed", "threads")


def main(paths: list[str]) -> None:
    runs = [json.loads(Path(p).read_text()) for p in paths]
    first = runs[0]
    fulls = []
    for path, run in zip(paths, runs, strict=True):
        diff = {k: (first["args"][k], run["args"][k]) for k in SAME if first["args"][k] != run["args"][k]}
        if diff:
            raise SystemExit(f"{path}: settings differ from {paths[0]}: {diff}")
        fulls.append(next(r for r in run["rows"] if r["policy"] == "full"))
    keys = ("ppl", "rouge_rougeL", "kv_bytes")
    if any(tuple(f[k] for k in keys) != tuple(fulls[0][k] for k in keys) for f in fulls):
        raise SystemExit(f"full-cache rows differ between runs: {[tuple(f[k] for k in keys) for f in fulls]}")
    full = fulls[0]
    rows = [full] + [r for run in runs for r in run["rows"] if r["policy"] != "full"]
    order = {"full": 0, "keyformer": 1, "h2o": 2, "streaming": 3, "window": 4}
    rows.sort(key=lambda r: (-r["kv"], order[r["policy"]]) if r["policy"] != "full" else (-2.0, 0))
    print("| policy | KV | tokens kept | PPL | ΔPPL vs full | per-prompt PPL min / median / max | "
          "ROUGE-1 | ROUGE-2 | ROUGE-L | KV MiB | KV / full | decode tok/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['policy']} | {r['kv']:.0%} | {r['budget']} | {r['ppl']:.3f} | "
              f"{100 * (r['ppl'] / full['ppl'] - 1):+.2f}% | "
              f"{r['ppl_min']:.2f} / {r['ppl_median']:.2f} / {r['ppl_max']:.2f} | "
              f"{r['rouge_rouge1']:.3f} | {r['rouge_rouge2']:.3f} | {r['rouge_rougeL']:.3f} | "
              f"{r['kv_bytes'] / 2**20:.1f} | {r['kv_bytes'] / full['kv_bytes']:.3f} | {r['decode_tok_s']:.1f} |")
    print(f"\ntopics: {', '.join(first['topics'])}")
    print(f"seconds per run: {[round(run['seconds']) for run in runs]}")


if __name__ == "__main__":
    main(sys.argv[1:])
