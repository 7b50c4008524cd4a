"""Quality, memory and speed of the KV policies on one model, from one prefill per scorer.

Every policy and budget starts from the same prompt states: the prompt is
prefilled once per score kind (``h2o`` scores serve ``full``, ``window``,
``streaming`` and ``h2o``; ``keyformer`` needs its own noisy scores) at
``kv=1`` and :meth:`KVCache.fork` cuts each copy to its budget. That equals
prefilling each configuration separately and costs a fraction of the time.

Measured per configuration (batch of equal-length prompts, no padding):

* teacher-forced next-token NLL of the continuation, one token per step with
  eviction after every step (the cache never exceeds its budget);
* greedy continuation, ROUGE-1/2/L against the full cache's continuation;
* KV bytes held (and the bookkeeping bytes) and decode tokens/s.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from hotpipe.errors import ConfigError
from hotpipe.kv.cache import KVCache
from hotpipe.kv.config import KVConfig


@dataclass
class Row:
    """One policy at one budget."""

    policy: str
    kv: float
    budget: int
    nll: float                      # mean over all continuation tokens of all prompts
    ppl: float                      # exp(nll)
    ppl_prompts: list[float]        # per-prompt perplexity (spread across prompts)
    rouge: dict[str, float] = field(default_factory=dict)   # F1 vs the full cache's greedy text
    kv_bytes: int = 0               # K and V tensors held after the last step
    state_bytes: int = 0            # positions / validity / scores held beside them
    decode_tok_s: float = 0.0       # greedy decode tokens per second (whole batch)

    def summary(self) -> dict[str, Any]:
        spread = self.ppl_prompts
        return {"policy": self.policy, "kv": self.kv, "budget": self.budget, "nll": self.nll,
                "ppl": self.ppl, "ppl_min": min(spread), "ppl_median": statistics.median(spread),
                "ppl_max": max(spread), **{f"rouge_{k}": v for k, v in self.rouge.items()},
                "kv_bytes": self.kv_bytes, "state_bytes": self.state_bytes,
                "decode_tok_s": self.decode_tok_s}


def prefill(model: Any, ids: torch.Tensor, config: KVConfig) -> tuple[KVCache, torch.Tensor]:
    """Run the prompt ``(B, P)`` into a new cache; return it and the last logits ``(B, V)``."""
    cache = KVCache(config)
    with torch.no_grad():
        # logits_to_keep=1: the prompt's other logits would be B * P * vocab floats
        out = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
    return cache, out.logits[:, -1].float()


def teacher_forced_nll(model: Any, cache: KVCache, first: torch.Tensor, cont: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` NLL of ``cont`` fed one token per step, so eviction runs after each.

    Args:
        first: ``(B, V)`` logits that predict ``cont[:, 0]``.
        cont: ``(B, T)`` continuation token ids.
    """
    logits, nll = first, []
    with torch.no_grad():
        for t in range(cont.shape[1]):
            nll.append(torch.nn.functional.cross_entropy(logits, cont[:, t], reduction="none"))
            if t + 1 < cont.shape[1]:
                out = model(input_ids=cont[:, t:t + 1], cache=cache, use_cache=True)
                logits = out.logits[:, -1].float()
    return torch.stack(nll, dim=1)


def greedy(model: Any, cache: KVCache, first: torch.Tensor, steps: int) -> tuple[torch.Tensor, float]:
    """Greedy ``(B, steps)`` tokens and the seconds the decode forwards took."""
    tok = first.argmax(-1, keepdim=True)
    toks, spent = [tok], 0.0
    with torch.no_grad():
        for _ in range(steps - 1):
            t0 = time.perf_counter()
            out = model(input_ids=tok, cache=cache, use_cache=True)
            spent += time.perf_counter() - t0
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
            toks.append(tok)
    return torch.cat(toks, dim=1), spent


def rouge(reference: list[str], candidate: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 of ``candidate`` against ``reference`` (``rouge-score``)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    scores = [scorer.score(r, c) for r, c in zip(reference, candidate, strict=True)]
    return {k: statistics.fmean(s[k].fmeasure for s in scores) for k in ("rouge1", "rouge2", "rougeL")}


def evaluate(model: Any, tokenizer: Any, prompts: torch.Tensor, cont: torch.Tensor, *,
             policies: list[str], budgets: list[float], gen_tokens: int, seed: int = 0,
             log: Any = None) -> list[Row]:
    """Every policy at every budget plus the full cache, from shared prefills.

    Args:
        prompts: ``(B, P)`` prompt ids (equal lengths: no padding).
        cont: ``(B, T)`` the true continuation, scored teacher-forced.
        policies: any of keyformer, h2o, streaming, window (``full`` always runs first).
        budgets: fractions in (0, 1).
        gen_tokens: greedy tokens compared by ROUGE.
    """
    for kv in budgets:
        KVConfig(kv=kv)  # validate before any long work
    steps = max(cont.shape[1], gen_tokens)
    say = log or (lambda msg: None)
    bases: dict[str, tuple[KVCache, torch.Tensor]] = {}

    def base(scorer: str) -> tuple[KVCache, torch.Tensor]:
        if scorer not in bases:
            t0 = time.perf_counter()
            bases[scorer] = prefill(model, prompts, KVConfig(policy=scorer, kv=1.0, tau_steps=steps, seed=seed))
            say(f"prefill ({scorer} scores): {time.perf_counter() - t0:.1f}s")
        return bases[scorer]

    # window/streaming/full need no prompt scores: they fork from whichever prefill exists
    scorers = [p for p in ("keyformer", "h2o") if p in policies] or ["h2o"]
    plan = [("full", 1.0)] + [(p, kv) for p in policies for kv in budgets]
    rows: list[Row] = []
    full_text: list[str] = []
    for policy, kv in plan:
        if policy not in ("keyformer", "h2o", "streaming", "window", "full"):
            raise ConfigError("kv.policy", f"unknown policy {policy!r}")
        cache0, first = base(policy if policy in scorers else scorers[0])
        t0 = time.perf_counter()
        nll = teacher_forced_nll(model, cache0.fork(kv, policy=policy, tau_steps=cont.shape[1]), first, cont)
        gcache = cache0.fork(kv, policy=policy, tau_steps=gen_tokens)
        toks, spent = greedy(model, gcache, first, gen_tokens)
        text = tokenizer.batch_decode(toks, skip_special_tokens=True)
        if policy == "full":
            full_text = text
        kv_bytes, state_bytes = gcache.held_bytes()
        budget = gcache.kv_layers[0].budget or 0
        held = set(gcache.kept_lengths())
        if policy != "full" and held != {budget}:  # the claim "KV bytes = budget" checked, not assumed
            raise AssertionError(f"{policy} kv={kv}: layers hold {sorted(held)} tokens, budget {budget}")
        per_prompt = [math.exp(v) for v in nll.mean(dim=1).tolist()]
        row = Row(policy=policy, kv=kv, budget=budget,
                  nll=nll.mean().item(), ppl=math.exp(nll.mean().item()), ppl_prompts=per_prompt,
                  rouge=rouge(full_text, text), kv_bytes=kv_bytes, state_bytes=state_bytes,
                  decode_tok_s=toks.shape[0] * (gen_tokens - 1) / spent if spent else 0.0)
        rows.append(row)
        say(f"{policy:9s} kv={kv:.2f}: ppl {row.ppl:.3f} rougeL {row.rouge['rougeL']:.3f} "
            f"({time.perf_counter() - t0:.0f}s)")
    return rows


def topic_prompts(tokenizer: Any, *, n: int, prompt_len: int, cont_len: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Prompts from CPython's ``pydoc_data.topics`` (real technical prose, offline).

    Selection: topics in sorted name order, the first ``n`` whose text has at
    least ``prompt_len + cont_len`` tokens; each gives its first ``prompt_len``
    tokens as the prompt and the next ``cont_len`` as the continuation.

    Returns:
        ``(names, prompts (n, prompt_len), continuations (n, cont_len))``.
    """
    from pydoc_data.topics import topics

    names, rows = [], []
    need = prompt_len + cont_len
    for name in sorted(topics):
        ids = tokenizer(topics[name], add_special_tokens=False)["input_ids"]
        if len(ids) >= need:
            names.append(name)
            rows.append(ids[:need])
        if len(rows) == n:
            break
    if len(rows) < n:
        raise ConfigError("prompts", f"only {len(rows)} pydoc topics have {need} tokens; asked for {n}")
    ids = torch.tensor(rows, dtype=torch.long)
    return names, ids[:, :prompt_len], ids[:, prompt_len:]


def markdown(rows: list[Row]) -> str:
    """The quality/memory/speed table, ratios against the full-cache row."""
    full = next(r for r in rows if r.policy == "full")
    lines = ["| policy | KV | tokens kept | PPL | ΔPPL vs full | per-prompt PPL min/median/max | "
             "ROUGE-1 | ROUGE-2 | ROUGE-L | KV MiB | KV / full | decode tok/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r.summary()
        lines.append(
            f"| {r.policy} | {r.kv:.0%} | {r.budget} | {r.ppl:.3f} | {100 * (r.ppl / full.ppl - 1):+.2f}% | "
            f"{s['ppl_min']:.2f} / {s['ppl_median']:.2f} / {s['ppl_max']:.2f} | "
            f"{r.rouge['rouge1']:.3f} | {r.rouge['rouge2']:.3f} | {r.rouge['rougeL']:.3f} | "
            f"{r.kv_bytes / 2**20:.2f} | {r.kv_bytes / full.kv_bytes:.3f} | {r.decode_tok_s:.1f} |")
    return "\n".join(lines)
