"""Obviously correct, slow references for plans: a checker and Belady's MIN.

Plain Python sets and dicts, one row at a time: these are what the
vectorized planner is tested against, and what storage/ tests can use to
check that applying a plan keeps every lookup pointing at the right row.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from hotpipe.plan.types import StepPlan


class InvalidPlanError(Exception):
    """A plan breaks an invariant of :class:`~hotpipe.plan.types.StepPlan`."""


def check_plans(steps: Sequence[np.ndarray], plans: Iterable[StepPlan], *, capacity: int,
                depth: int, demand: bool = True) -> dict[str, int]:
    """Replay ``plans`` on a dict model of the fast tier and check each step.

    Checks, per step ``s``: evictions leave the slot the row is in and never
    touch a row used by steps ``s-depth .. s``; fetches bring non-resident
    rows into free slots in ``[0, capacity)``; with ``demand``, every evicted
    slot is reused by a fetch of the same step; after the fetches every
    lookup's slot holds that lookup's id and ``unique_*`` agree; the first
    ``num_misses`` fetches are exactly the step's ids that were not resident.

    Args:
        steps: each step's ids, as given to the planner.
        plans: the planner's output for ``steps``.
        capacity: slots in the fast tier.
        depth: prefetch depth the plans were made for.
        demand: also require evictions to feed the same step's fetches
            (true for every policy but ``static``).

    Returns:
        totals ``{"fetched", "evicted", "misses", "lookups"}``.

    Raises:
        InvalidPlanError: the first violation, naming the step and the row.
    """
    slot_to_id: dict[int, int] = {}
    id_to_slot: dict[int, int] = {}
    recent: deque[set[int]] = deque(maxlen=depth + 1)
    totals = {"fetched": 0, "evicted": 0, "misses": 0, "lookups": 0}
    plans = list(plans)
    if len(plans) != len(steps):
        raise InvalidPlanError(f"{len(plans)} plans for {len(steps)} steps")
    for s, (ids, plan) in enumerate(zip(steps, plans, strict=True)):
        ids = np.asarray(ids)
        flat = ids.ravel().tolist()
        recent.append(set(flat))
        pinned = set().union(*recent)

        def fail(msg: str, s: int = s) -> InvalidPlanError:
            return InvalidPlanError(f"step {s}: {msg}")

        if plan.step != s:
            raise fail(f"plan is numbered {plan.step}")
        missing = {i for i in flat if i not in id_to_slot}
        for i, slot in zip(plan.evict_ids.tolist(), plan.evict_slots.tolist(), strict=True):
            if id_to_slot.get(i) != slot:
                raise fail(f"evicts row {i} from slot {slot}, but it is in {id_to_slot.get(i)}")
            if i in pinned:
                raise fail(f"evicts row {i}, pinned by a step in flight")
            del id_to_slot[i], slot_to_id[slot]
        for i, slot in zip(plan.fetch_ids.tolist(), plan.fetch_slots.tolist(), strict=True):
            if i in id_to_slot:
                raise fail(f"fetches row {i}, already resident in slot {id_to_slot[i]}")
            if not 0 <= slot < capacity or slot in slot_to_id:
                raise fail(f"fetches row {i} into slot {slot}, not a free slot")
            id_to_slot[i], slot_to_id[slot] = slot, i
        if demand and not set(plan.evict_slots.tolist()) <= set(plan.fetch_slots.tolist()):
            raise fail("an evicted slot is not reused by this step's fetches")
        if len(id_to_slot) > capacity:
            raise fail(f"{len(id_to_slot)} rows resident, capacity {capacity}")
        if set(plan.fetch_ids[: plan.num_misses].tolist()) != missing:
            raise fail(f"misses {sorted(missing)} but the plan's misses are "
                       f"{sorted(plan.fetch_ids[: plan.num_misses].tolist())}")
        _check_lookups(plan, ids, slot_to_id, fail)
        totals["fetched"] += plan.fetch_ids.shape[0]
        totals["evicted"] += plan.evict_ids.shape[0]
        totals["misses"] += len(missing)
        totals["lookups"] += len(flat)
    return totals


def _check_lookups(plan: StepPlan, ids: np.ndarray, slot_to_id: dict[int, int],
                   fail: Callable[[str], InvalidPlanError]) -> None:
    if plan.lookup_slots.shape != ids.shape:
        raise fail(f"lookup_slots has shape {plan.lookup_slots.shape}, ids {ids.shape}")
    for i, slot in zip(ids.ravel().tolist(), plan.lookup_slots.ravel().tolist(), strict=True):
        if slot_to_id.get(slot) != i:
            raise fail(f"looks row {i} up in slot {slot}, which holds {slot_to_id.get(slot)}")
    uniq = plan.unique_ids.tolist()
    if len(uniq) != len(set(uniq)) or set(uniq) != set(ids.ravel().tolist()):
        raise fail("unique_ids are not the step's distinct ids")
    for i, slot in zip(uniq, plan.unique_slots.tolist(), strict=True):
        if slot_to_id.get(slot) != i:
            raise fail(f"unique_slots puts row {i} in slot {slot}")


def belady_fetches(steps: Sequence[np.ndarray], *, capacity: int, depth: int) -> int:
    """Rows fetched by Belady's MIN with full foresight, for steps of simultaneous requests.

    The model is the planner's: step ``s`` needs all its distinct ids resident
    at once (its lookups happen together, so they are one batch of
    simultaneous requests rather than a sequence), and rows used by steps
    ``s-depth .. s`` are pinned. A step's misses are fetched together; when
    free slots run short, the unpinned resident rows evicted are those whose
    next use (the first later step using them) is farthest, rows never used
    again first. Ties do not change the count.

    This greedy is optimal for the model: Belady's exchange argument carries
    over (a row kept instead of one used sooner is unpinned until its next
    use, so the swap stays legal). The tests check it against an exhaustive
    search on tiny traces.

    Raises:
        ValueError: the pinned rows of some step outnumber ``capacity``.
    """
    sets = [set(np.asarray(x).ravel().tolist()) for x in steps]
    cache: set[int] = set()
    fetched = 0
    for s, need in enumerate(sets):
        pinned = set().union(*sets[max(0, s - depth) : s + 1])
        if len(pinned) > capacity:
            raise ValueError(f"step {s}: {len(pinned)} rows pinned, capacity {capacity}")
        miss = need - cache
        over = len(cache) + len(miss) - capacity
        if over > 0:

            def next_use(x: int, s: int = s) -> float:
                return next((t for t in range(s + 1, len(sets)) if x in sets[t]), float("inf"))

            cands = sorted(cache - pinned, key=next_use, reverse=True)
            cache -= set(cands[:over])
        cache |= miss
        fetched += len(miss)
    return fetched
