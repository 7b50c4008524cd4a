"""Keyformer and baselines: an LLM KV cache that keeps only key tokens plus a recent window.

A separate part of hotpipe (optional extra ``llm``): it shares nothing with the
recommendation path but :mod:`hotpipe.errors`. Import cost is low; torch and
transformers load with :mod:`hotpipe.kv.cache`.

Usage::

    from hotpipe.kv import KVCache, KVConfig, register
    register()                                   # attn_implementation="hotpipe_kv"
    model.set_attn_implementation("hotpipe_kv")
    cache = KVCache(KVConfig(policy="keyformer", kv=0.5, tau_steps=64, seed=0))
    out = model.generate(ids, past_key_values=cache, max_new_tokens=64)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hotpipe.kv.config import POLICIES, KVAttentionError, KVConfig

if TYPE_CHECKING:
    from hotpipe.kv.cache import KVCache, KVLayer

__all__ = ["POLICIES", "KVAttentionError", "KVCache", "KVConfig", "KVLayer", "register", "require"]


def __getattr__(name: str) -> Any:
    # torch/transformers load only when the cache is used, keeping `import hotpipe.kv` light
    if name in ("KVCache", "KVLayer"):
        from hotpipe.kv import cache

        return getattr(cache, name)
    if name in ("register", "require"):
        from hotpipe.kv import attention

        return getattr(attention, name)
    raise AttributeError(name)
