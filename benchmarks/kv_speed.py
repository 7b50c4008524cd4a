"""Decode speed and KV memory of each policy vs the full cache, batch 1 (offline SmolLM2-135M).

    python benchmarks/kv_speed.py --out runs/kv/speed.json

One long prompt (pydoc topics joined in sorted order, first ``--prompt-len``
tokens), greedy decode of ``--new`` tokens; each configuration runs
``--repeats`` times in rotating order and the median decode tokens/s is
reported with the ratio to the full cache of the same run. Baselines:
transformers' own ``DynamicCache`` under ``sdpa`` (the library default) and
under ``eager`` (the same arithmetic as hotpipe_kv). Prompt states are prefilled
once and copied (``KVCache.fork``), so only the decode is timed.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--prompt-len", type=int, default=1024)
    p.add_argument("--new", type=int, default=32)
    p.add_argument("--kv", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/kv/speed.json")
    a = p.parse_args()

    from pydoc_data.topics import topics

    import torch
    from transformers import DynamicCache

    from hotpipe.kv import KVCache, KVConfig, models

    torch.set_num_threads(a.threads)
    model, tok = models.load(a.model)
    text = "\n\n".join(topics[k] for k in sorted(topics))
    ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids[:, :a.prompt_len]

    # one prefill per kind of prompt state, copied for every timed decode: the prompt
    # is not what is measured, and a 1,024-token prefill per run would dominate the budget
    model.set_attn_implementation("eager")
    with torch.no_grad():
        dyn = DynamicCache()
        first = model(input_ids=ids, cache=dyn, use_cache=True, logits_to_keep=1).logits[:, -1]
    model.set_attn_implementation("hotpipe_kv")
    bases = {}
    for scorer in ("h2o", "keyformer"):
        bases[scorer] = KVCache(KVConfig(policy=scorer, kv=1.0, tau_steps=a.new))
        with torch.no_grad():
            model(input_ids=ids, cache=bases[scorer], use_cache=True, logits_to_keep=1)

    def run(name: str) -> tuple[float, int]:
        impl = {"dynamic-sdpa": "sdpa", "dynamic-eager": "eager"}.get(name, "hotpipe_kv")
        model.set_attn_implementation(impl)
        if name.startswith("dynamic"):
            cache = copy.deepcopy(dyn)
        else:
            base = bases["keyformer" if name == "keyformer" else "h2o"]
            cache = base.fork(1.0 if name == "full" else a.kv, policy=name)
        tok_ = first.argmax(-1, keepdim=True)
        with torch.no_grad():
            t0 = time.perf_counter()
            for _ in range(a.new):
                tok_ = model(input_ids=tok_, cache=cache, use_cache=True).logits[:, -1].argmax(-1, keepdim=True)
            spent = time.perf_counter() - t0
        held = (cache.held_bytes()[0] if isinstance(cache, KVCache)
                else sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers))
        return a.new / spent, held

    names = ["dynamic-sdpa", "dynamic-eager", "full", "keyformer", "h2o", "streaming", "window"]
    speeds: dict[str, list[float]] = {n: [] for n in names}
    held: dict[str, int] = {}
    for r in range(a.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate: drift hits all alike
            s, held[name] = run(name)
            speeds[name].append(s)
            print(f"repeat {r} {name}: {s:.2f} tok/s", flush=True)
    base = statistics.median(speeds["full"])
    lines = [f"| cache | tokens held / layer | KV MiB | decode tok/s (median of {a.repeats}) | vs hotpipe full |",
             "|---|---|---|---|---|"]
    per_token = held["full"] / (a.prompt_len + a.new)
    for n in names:
        med = statistics.median(speeds[n])
        lines.append(f"| {n} | {held[n] / per_token:.0f} | {held[n] / 2**20:.1f} | {med:.2f} | {med / base:.2f}x |")
    table = "\n".join(lines)
    print(table)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(a), "speeds": speeds, "held_bytes": held, "table": table}, indent=1))


if __name__ == "__main__":
    main()
