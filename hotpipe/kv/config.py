"""What a budgeted KV cache keeps: one frozen dataclass, validated at the boundary.

The budget is a fraction of the *prompt* length, fixed when the prompt is
prefilled (the Keyformer rule): a 1,000-token prompt at ``kv=0.5`` keeps 500
tokens per layer and per KV head for the whole generation, whatever its length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hotpipe.errors import ConfigError, HotpipeError

POLICIES = ("keyformer", "h2o", "streaming", "window", "full")
# Policies whose eviction needs the attention logits of every step.
SCORED_POLICIES = ("keyformer", "h2o")


class KVAttentionError(HotpipeError):
    """The model's attention implementation does not hand its logits to the cache.

    Raised when a scored cache sees a second forward pass before the first one
    reported its attention logits, i.e. the model runs ``sdpa``/``eager`` instead
    of the ``hotpipe_kv`` attention function (see :mod:`hotpipe.kv.attention`).
    """


@dataclass(frozen=True)
class KVConfig:
    """Settings of a :class:`~hotpipe.kv.cache.KVCache`.

    Args:
        policy: ``keyformer`` (Gumbel-noised logits, rising temperature),
            ``h2o`` (accumulated softmax), ``streaming`` (sinks + recent),
            ``window`` (recent only) or ``full`` (never evict).
        kv: budget as a fraction of the prompt length, in (0, 1]. ``1.0`` never
            evicts (the full-cache baseline); ``full`` ignores it.
        recent: share of the budget kept as the most recent tokens by the scored
            policies; the rest goes to the top-scored older tokens.
        sinks: first tokens that ``streaming`` always keeps.
        noise: add Gumbel noise to the logits before scoring (``keyformer``).
        tau_start, tau_end: softmax temperature of the score at the first and
            the last generation step; it rises linearly in between.
        tau_steps: generation steps over which the temperature rises (set it to
            ``max_new_tokens``); later steps stay at ``tau_end``.
        seed: seeds the Gumbel noise, so a run is reproducible.

    Example:
        >>> KVConfig(policy="keyformer", kv=0.5).budget(1000)
        500
    """

    policy: str = "keyformer"
    kv: float = 0.5
    recent: float = 0.3    # the paper's split: 30% of the budget is the recent window
    sinks: int = 4         # StreamingLLM keeps 4 initial tokens as attention sinks
    noise: bool = True
    tau_start: float = 1.0  # Keyformer's schedule: tau rises from 1 to 2 over generation
    tau_end: float = 2.0
    tau_steps: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError("kv.policy", f"expected one of {', '.join(POLICIES)}; found {self.policy!r}")
        if not (isinstance(self.kv, (int, float)) and 0.0 < self.kv <= 1.0):
            raise ConfigError("kv.kv", f"budget must be a fraction in (0, 1]; found {self.kv!r}")
        if not (isinstance(self.recent, (int, float)) and 0.0 <= self.recent < 1.0):
            raise ConfigError("kv.recent", "recent share must be in [0, 1) so that some budget is left "
                                           f"for key tokens; found {self.recent!r}")
        if not (isinstance(self.sinks, int) and self.sinks >= 0):
            raise ConfigError("kv.sinks", f"expected an int >= 0; found {self.sinks!r}")
        for key in ("tau_start", "tau_end"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ConfigError(f"kv.{key}", f"temperature must be > 0; found {value!r}")
        if not (isinstance(self.tau_steps, int) and self.tau_steps >= 1):
            raise ConfigError("kv.tau_steps", f"expected an int >= 1; found {self.tau_steps!r}")

    @property
    def evicts(self) -> bool:
        """Whether this cache ever drops a token."""
        return self.policy != "full" and self.kv < 1.0

    def budget(self, prompt_len: int) -> int:
        """Tokens kept per layer and KV head for a prompt of ``prompt_len`` tokens."""
        if not self.evicts:
            return prompt_len
        # ceil: a budget never rounds down to zero tokens
        return max(1, min(prompt_len, math.ceil(self.kv * prompt_len)))

    def split(self, budget: int) -> tuple[int, int]:
        """``(protected, scored)`` slots of a budget: recent (or sink) slots, and the rest.

        For the scored policies ``recent < 1`` (checked above) leaves at least
        one key slot, because ``floor(recent * budget) < budget``.

        Raises:
            ConfigError: the budget cannot hold the sinks plus one recent token
                (``streaming``).
        """
        if self.policy in SCORED_POLICIES:
            recent = math.floor(self.recent * budget)
            return recent, budget - recent
        if self.policy == "streaming" and budget <= self.sinks:
            raise ConfigError("kv.kv", f"a budget of {budget} tokens cannot hold {self.sinks} sinks "
                                       "plus a recent token; raise kv or lower sinks")
        return (self.sinks if self.policy == "streaming" else 0), 0

    def tau(self, step: int) -> float:
        """Score temperature at decode step ``step`` (0 = the prompt)."""
        frac = min(step, self.tau_steps) / self.tau_steps
        return self.tau_start + (self.tau_end - self.tau_start) * frac
