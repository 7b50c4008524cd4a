"""plan/: read the trace ahead and decide, per step, which rows to fetch and evict.

The exact lookahead cacher (Belady's MIN inside a window of future steps)
plus LRU, LFU and FAE's static hot set for comparison, all behind one
:class:`Planner` that emits a :class:`StepPlan` per step.
"""

from hotpipe.plan.lookahead import LookaheadPolicy
from hotpipe.plan.planner import Planner, min_capacity
from hotpipe.plan.policies import POLICIES, LFUPolicy, LRUPolicy, make_policy
from hotpipe.plan.static import StaticPolicy
from hotpipe.plan.types import EvictionPolicy, StepPlan

__all__ = [
    "POLICIES",
    "EvictionPolicy",
    "LFUPolicy",
    "LRUPolicy",
    "LookaheadPolicy",
    "Planner",
    "StaticPolicy",
    "StepPlan",
    "make_policy",
    "min_capacity",
]
