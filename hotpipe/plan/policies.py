"""History-only eviction policies (what caches without foresight do) and the name registry.

Both keep the unpinned resident rows in FIFOs with lazy deletion, stamped
with the row's ``last_use`` when it was unpinned: an entry is valid while the
row is resident and has not been used since.
"""

from __future__ import annotations

import numpy as np

from hotpipe.errors import ConfigError
from hotpipe.plan.lookahead import LookaheadPolicy
from hotpipe.plan.queues import BucketedFifo, RowFifo, Validator, compact_if_bloated, log2_bucket
from hotpipe.plan.state import CacheState
from hotpipe.plan.static import StaticPolicy
from hotpipe.plan.types import EvictionPolicy

# LFU keeps exact counts 1..16 apart, then one bucket per power of two: the
# order that matters is among rarely used rows; hot rows are rarely victims.
_LFU_EXACT = 16
_LFU_BUCKETS = _LFU_EXACT + 31 - 4


class LRUPolicy(EvictionPolicy):
    """Evict the row used longest ago (at step granularity; ties in no set order)."""

    name = "lru"

    def start(self, state: CacheState, sample: list[np.ndarray]) -> None:
        super().start(state, sample)
        self._fifo = RowFifo()
        self._valid = _unused_since(state)

    def on_release(self, ids: np.ndarray) -> np.ndarray:
        # Rows are unpinned in the order of their last use, so FIFO order is LRU order.
        self._fifo.push(ids, self.state.last_use.take(ids))
        compact_if_bloated(self._fifo, self._valid, self.state.capacity)
        return np.empty(0, dtype=np.int64)

    def victims(self, k: int) -> np.ndarray:
        return self._fifo.pop(k, self._valid)


class LFUPolicy(EvictionPolicy):
    """Evict the row with the fewest lookups so far; ties by LRU.

    Counts 1..16 are told apart exactly; above, rows with counts in the same
    power-of-two range ``[2**b, 2**(b+1))`` share a bucket and leave in LRU
    order. Exact order among frequent rows buys little (they are rarely the
    victims) and would need a heap instead of a few FIFOs.
    """

    name = "lfu"

    def start(self, state: CacheState, sample: list[np.ndarray]) -> None:
        super().start(state, sample)
        self._buckets = BucketedFifo(_LFU_BUCKETS)
        self._valid = _unused_since(state)

    def on_release(self, ids: np.ndarray) -> np.ndarray:
        st = self.state
        freq = st.freq.take(ids)
        bucket = np.where(freq <= _LFU_EXACT, freq - 1, _LFU_EXACT - 4 + log2_bucket(freq))
        self._buckets.push(ids, st.last_use.take(ids), bucket)
        compact_if_bloated(self._buckets, self._valid, st.capacity)
        return np.empty(0, dtype=np.int64)

    def victims(self, k: int) -> np.ndarray:
        return self._buckets.pop(k, self._valid)


def _unused_since(st: CacheState) -> Validator:
    """Entries stay valid while the row is resident and unused since it was pushed."""

    def valid(ids: np.ndarray, stamps: np.ndarray) -> np.ndarray:
        return (st.slot_of.take(ids) >= 0) & (st.last_use.take(ids) == stamps)

    return valid


POLICIES: dict[str, type[EvictionPolicy]] = {
    p.name: p for p in (LookaheadPolicy, LRUPolicy, LFUPolicy, StaticPolicy)
}


def make_policy(policy: str | EvictionPolicy) -> EvictionPolicy:
    """A fresh policy from a name in ``POLICIES``, or the given instance."""
    if isinstance(policy, EvictionPolicy):
        return policy
    cls = POLICIES.get(policy)
    if cls is None:
        raise ConfigError("policy", f"expected one of {sorted(POLICIES)}, found {policy!r}")
    return cls()
