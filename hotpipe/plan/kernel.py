"""The lookahead planner compiled with numba: the same plans as the numpy path, ~5-10x faster.

:class:`~hotpipe.plan.planner.Planner` with ``policy="lookahead"`` runs this
when numba is installed; :class:`~hotpipe.plan.lookahead.LookaheadPolicy`
driven by the planner's numpy code stays the reference, and
``tests/test_plan_kernel.py`` checks that both give identical plans (every
array of every :class:`~hotpipe.plan.types.StepPlan`) on random traces.

Why it is faster, besides running one compiled loop per step instead of
~100 numpy calls:

* Per-row state lives in one ``(num_rows, 8)`` int32 record (32 bytes, half
  a cache line): a step touches each distinct row's fields with one cache
  miss, not seven.
* Distinct ids come from one backward pass over the step's lookups (the row
  record remembers the last step that read it), which also links the row's
  previous occurrence, so reading a step is a single pass.
* Aging halves counts lazily: a row stores the aging epoch of its count and
  is shifted when next touched (``floor(floor(x/2)/2) == x >> 2``), instead of
  a pass over every row each ``age_every`` steps.
* Rows with a use in the window sit in one bucket per next-use step (a ring
  of ``window`` buckets); a row's finite next use changes only when it is
  used, after which its bucket is dropped whole, so entries are removed only
  when taken and need no validity check.

Queues are lists of fixed-size chunks of ``(id, stamp)`` entries taken from
one pool with a free stack; Python grows the pool (and the occurrence ring)
between kernel calls, so kernels never reallocate state. Kernels release the GIL, so
a mover thread can plan while the training thread runs Python.

The rules the kernels implement (what the reference does):

* victims: first rows with no use in the window, from FIFOs bucketed by
  ``floor(log2(aged count))``, lowest bucket first, oldest release first;
  then rows by next use, farthest first, ties by fewer lookups then smaller id;
* aging every ``age_every`` steps (default: the window): counts halve and the
  no-use FIFOs are rebuilt in release order with the new buckets.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from hotpipe._jit import AVAILABLE as AVAILABLE  # re-exported: compiled planner can run
from hotpipe._jit import inline as _inline
from hotpipe._jit import jit as _jit
from hotpipe.errors import CapacityError
from hotpipe.plan.state import FREQ_CAP, NO_USE, checked_ids
from hotpipe.plan.types import NEVER, StepPlan

if TYPE_CHECKING:
    from hotpipe.plan.planner import Planner


# Fields of the per-row record R[row] (int32).
SLOT, LAST, FREQ, NEXT, LSTEP, LOCC, HEAT, HEPOCH = range(8)
_ROW_INIT = np.array([-1, NO_USE, 0, NEVER, -1, 0, 0, 0], dtype=np.int32)
# Scalars S[...] (int64).
(CTOP, NQ_COUNT, NFREE, BASE, END, EPOCH, PINNED, PEAK, CAP, DEPTH, WINDOW, AGE, FRING, NROWS,
 COMPACTIONS) = range(15)
_NB = 32  # no-use FIFO buckets: floor(log2(count)) of an int32 count
_HEAT_CAP = np.iinfo(np.int32).max >> 1  # as LookaheadPolicy
_COMPACT_SLACK = 4096
_OCC_BITS = 0x7FFFFFFF  # LOCC keeps the low 31 bits of an occurrence index (ring <= 2**30)
# Queues are lists of chunks of K (id, stamp) entries: walking one reads
# memory in order, where a linked list of single entries chased a cache miss
# per entry (measured: that made queue work most of the step).
K = 64
# A list's descriptor Q[l]: head chunk, head position, tail chunk, tail fill, entries.
HC, HP, TC, TL, CNT = range(5)
# Lists 0 .. 31 are the no-use FIFOs by bucket; 32 + (t % FRING) holds rows next used at t.


@_inline
def _bucket(h: int) -> int:
    """floor(log2(max(h, 1)))."""
    b = 0
    h >>= 1
    while h > 0:
        b += 1
        h >>= 1
    return b


@_inline
def _aged(h: int, lag: int) -> int:
    """A count after ``lag`` halvings it has not seen yet."""
    return h >> lag if lag < 31 else 0


# Helpers called once per entry take scalars only: a call that passes arrays
# costs ~100 ns (reference counting of each array, measured), 10-20x the
# work of a push; so pushes come in batches.


@_jit
def _push_each(C: np.ndarray, Cn: np.ndarray, FS: np.ndarray, S: np.ndarray, Q: np.ndarray,
               lists: np.ndarray, ids: np.ndarray, stamps: np.ndarray, n: int) -> None:
    """Append (ids[i], stamps[i]) to list lists[i], i < n, in order.

    Python keeps enough chunks free before every kernel call.
    """
    for i in range(n):
        li = lists[i]
        tc = Q[li, TC]
        if tc < 0 or Q[li, TL] == K:
            S[CTOP] -= 1
            c = FS[S[CTOP]]
            Cn[c] = -1
            if tc < 0:
                Q[li, HC] = c
                Q[li, HP] = 0
            else:
                Cn[tc] = c
            Q[li, TC] = c
            Q[li, TL] = 0
            tc = c
        t = Q[li, TL]
        C[tc, 2 * t] = ids[i]
        C[tc, 2 * t + 1] = stamps[i]
        Q[li, TL] = t + 1
        Q[li, CNT] += 1
        if li < _NB:
            S[NQ_COUNT] += 1


@_jit
def _clear(Cn: np.ndarray, FS: np.ndarray, S: np.ndarray, Q: np.ndarray, li: int) -> None:
    """Empty list li, its chunks back to the free stack."""
    c = Q[li, HC]
    while c >= 0:
        nxt = Cn[c]
        FS[S[CTOP]] = c
        S[CTOP] += 1
        c = nxt
    if li < _NB:
        S[NQ_COUNT] -= Q[li, CNT]
    Q[li, HC] = -1
    Q[li, HP] = 0
    Q[li, TC] = -1
    Q[li, TL] = 0
    Q[li, CNT] = 0


@_jit
def _read(C: np.ndarray, Cn: np.ndarray, Q: np.ndarray, li: int) -> tuple[np.ndarray, np.ndarray]:
    """All (ids, stamps) of list li, in order."""
    n = Q[li, CNT]
    ids = np.empty(n, np.int64)
    stamps = np.empty(n, np.int64)
    c, i = Q[li, HC], Q[li, HP]
    for m in range(n):
        if i == K:
            c = Cn[c]
            i = 0
        ids[m] = C[c, 2 * i]
        stamps[m] = C[c, 2 * i + 1]
        i += 1
    return ids, stamps


@_jit
def _never_drain(R: np.ndarray, C: np.ndarray, Cn: np.ndarray, FS: np.ndarray, S: np.ndarray,
                 Q: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Empty no-use bucket b; return its valid (ids, stamps), oldest first.

    Valid: resident, unused since it was queued, and no use in the window.
    """
    ids, stamps = _read(C, Cn, Q, b)
    _clear(Cn, FS, S, Q, b)
    keep = np.empty(ids.shape[0], np.bool_)
    for i in range(ids.shape[0]):
        x = ids[i]
        keep[i] = R[x, SLOT] >= 0 and R[x, LAST] == stamps[i] and R[x, NEXT] == NEVER
    return ids[keep], stamps[keep]


@_jit
def _never_pop(R: np.ndarray, C: np.ndarray, Cn: np.ndarray, FS: np.ndarray, S: np.ndarray,
               Q: np.ndarray, k: int, out: np.ndarray, pos: int) -> int:
    """Take up to k valid rows, lowest bucket first, oldest first; stale entries met are dropped."""
    for b in range(_NB):
        if k == 0:
            break
        while k > 0 and Q[b, CNT] > 0:
            hc, hp = Q[b, HC], Q[b, HP]
            x, stamp = C[hc, 2 * hp], C[hc, 2 * hp + 1]
            Q[b, CNT] -= 1
            S[NQ_COUNT] -= 1
            if Q[b, CNT] == 0 or hp + 1 == K:  # the head chunk is used up
                Q[b, HC] = Cn[hc]
                Q[b, HP] = 0
                FS[S[CTOP]] = hc
                S[CTOP] += 1
                if Q[b, CNT] == 0:
                    Q[b, HC] = -1
                    Q[b, TC] = -1
                    Q[b, TL] = 0
            else:
                Q[b, HP] = hp + 1
            if R[x, SLOT] >= 0 and R[x, LAST] == stamp and R[x, NEXT] == NEVER:
                out[pos] = x
                pos += 1
                k -= 1
    return pos


@_jit
def _never_compact(R: np.ndarray, C: np.ndarray, Cn: np.ndarray, FS: np.ndarray,
                   S: np.ndarray, Q: np.ndarray) -> None:
    """Drop stale entries, keeping each bucket's order (changes no plan: stale stays stale)."""
    S[COMPACTIONS] += 1
    for b in range(_NB):
        ids, stamps = _never_drain(R, C, Cn, FS, S, Q, b)
        lists = np.full(ids.shape[0], b, np.int64)
        _push_each(C, Cn, FS, S, Q, lists, ids, stamps, ids.shape[0])


@_jit
def _far_take(R: np.ndarray, C: np.ndarray, Cn: np.ndarray, FS: np.ndarray, S: np.ndarray,
              Q: np.ndarray, k: int, out: np.ndarray, pos: int, s: int) -> int:
    """Take k rows farthest next use first (ties: fewer lookups, smaller id)."""
    fr = S[FRING]
    for t in range(s + S[WINDOW] - 1, s, -1):
        if k == 0:
            break
        li = _NB + (t & (fr - 1))
        n = Q[li, CNT]
        if n == 0:
            continue
        ids, stamps = _read(C, Cn, Q, li)
        keys = np.empty(n, np.int64)
        for i in range(n):
            keys[i] = (np.int64(R[ids[i], FREQ]) << 31) | ids[i]  # distinct: ids are
        order = np.argsort(keys)
        m = min(k, n)
        for i in range(m):
            out[pos] = ids[order[i]]
            pos += 1
        k -= m
        # Entries here are removed only when taken, so the rest stay valid.
        _clear(Cn, FS, S, Q, li)
        rest = ids[order[m:]]
        _push_each(C, Cn, FS, S, Q, np.full(n - m, li, np.int64), rest, stamps[: n - m],
                   n - m)
    return pos


@_jit
def _age(R: np.ndarray, C: np.ndarray, Cn: np.ndarray, FS: np.ndarray, S: np.ndarray,
         Q: np.ndarray) -> None:
    """Halve every count (lazily: a new epoch) and rebuild the no-use FIFOs with new buckets."""
    S[EPOCH] += 1
    ep = S[EPOCH]
    n = 0
    for b in range(_NB):
        n += Q[b, CNT]
    ids = np.empty(n, np.int64)
    stamps = np.empty(n, np.int64)
    m = 0
    for b in range(_NB):
        bi, bs = _never_drain(R, C, Cn, FS, S, Q, b)
        ids[m : m + bi.shape[0]] = bi
        stamps[m : m + bi.shape[0]] = bs
        m += bi.shape[0]
    order = np.argsort(stamps[:m], kind="mergesort")  # stable: release order within a stamp
    ids, stamps = ids[order], stamps[order]
    lists = np.empty(m, np.int64)
    for i in range(m):
        x = ids[i]
        h = _aged(np.int64(R[x, HEAT]), ep - R[x, HEPOCH])
        R[x, HEAT] = h
        R[x, HEPOCH] = ep
        lists[i] = _bucket(h)
    _push_each(C, Cn, FS, S, Q, lists, ids, stamps, m)


@_jit
def release_step(R: np.ndarray, S: np.ndarray, C: np.ndarray, Cn: np.ndarray, FS: np.ndarray,
                 Q: np.ndarray, uniq: np.ndarray, r: int) -> None:
    """Unpin the rows step ``r`` was the last to use; queue them as eviction candidates."""
    ep = S[EPOCH]
    fr = S[FRING]
    u = uniq.shape[0]
    lists = np.empty(u, np.int64)
    ids = np.empty(u, np.int64)
    n = 0
    for i in range(u):
        x = uniq[i]
        if R[x, LAST] != r:
            continue
        nu = R[x, NEXT]
        if nu == NEVER:
            h = _aged(np.int64(R[x, HEAT]), ep - R[x, HEPOCH])
            R[x, HEAT] = h
            R[x, HEPOCH] = ep
            lists[n] = _bucket(h)
        else:
            lists[n] = _NB + (nu & (fr - 1))
        ids[n] = x
        n += 1
    _push_each(C, Cn, FS, S, Q, lists, ids, np.full(n, r, np.int64), n)
    S[PINNED] -= n
    if S[NQ_COUNT] > 2 * S[CAP] + _COMPACT_SLACK:
        _never_compact(R, C, Cn, FS, S, Q)


@_jit
def load_step(R: np.ndarray, S: np.ndarray, C: np.ndarray, Cn: np.ndarray, FS: np.ndarray,
              Q: np.ndarray, ring: np.ndarray, ids: np.ndarray, j: int, s: int,
              scratch: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Read step ``j`` into the window while step ``s`` is next to plan.

    Returns ``(bad, uniq, inverse, counts)``: ``bad`` is the position of the
    first id out of range (then nothing changed) or -1; ``uniq`` (U,) int64
    are the distinct ids ordered by last occurrence (as ``CacheState.record``),
    ``inverse`` (L,) int32 maps each lookup to its position in ``uniq`` and
    ``counts`` (U,) int64 are lookups per distinct id. ``scratch`` is (3, >= L) int64.
    """
    L = ids.shape[0]
    nrows = S[NROWS]
    for p in range(L):
        if ids[p] < 0 or ids[p] >= nrows:
            return p, np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0, np.int64)
    mask = ring.shape[0] - 1
    below = s - S[DEPTH]
    found = scratch[0]
    idle = scratch[1]  # rows to add to step j's bucket
    cnt = scratch[2]  # lookups per discovered row
    inv = np.empty(L, np.int32)
    nidle = 0
    n = 0
    # Backward, so a row is found at its last occurrence; LOCC holds the
    # discovery index while LSTEP == j.
    for p in range(L - 1, -1, -1):
        x = ids[p]
        if R[x, LSTEP] == j:
            inv[p] = R[x, LOCC]
            cnt[R[x, LOCC]] += 1
            continue
        if R[x, LSTEP] >= s:  # its latest occurrence is in a step not yet planned
            ring[R[x, LOCC] & mask] = j
        else:  # j is its first use in the window
            R[x, NEXT] = j
            if R[x, SLOT] >= 0 and R[x, LAST] < below:
                idle[nidle] = x
                nidle += 1
        R[x, LSTEP] = j
        R[x, LOCC] = n
        found[n] = x
        cnt[n] = 1
        inv[p] = n
        n += 1
    uniq = np.empty(n, np.int64)
    counts = np.empty(n, np.int64)
    end = S[END]
    for k in range(n):
        x = found[n - 1 - k]
        uniq[k] = x
        counts[k] = cnt[n - 1 - k]
        occ = end + k
        R[x, LOCC] = occ & _OCC_BITS
        ring[occ & mask] = NEVER
    for p in range(L):
        inv[p] = n - 1 - inv[p]
    S[END] = end + n
    li = _NB + (j & (S[FRING] - 1))
    _push_each(C, Cn, FS, S, Q, np.full(nidle, li, np.int64), idle, idle, nidle)
    return -1, uniq, inv, counts


@_jit
def plan_step(R: np.ndarray, S: np.ndarray, C: np.ndarray, Cn: np.ndarray, FS: np.ndarray,
              Q: np.ndarray, ring: np.ndarray, free_slots: np.ndarray, uniq: np.ndarray,
              inv: np.ndarray, counts: np.ndarray, s: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                               np.ndarray, np.ndarray]:
    """Plan step ``s``: status (0 ok, 1 over capacity, 2 too few victims) and the plan arrays
    (lookup_slots, unique_slots, fetch_ids, fetch_slots, evict_ids, evict_slots)."""
    n = uniq.shape[0]
    L = inv.shape[0]
    z = np.empty(0, np.int64)
    below = s - S[DEPTH]
    # One pass over the (mostly cold) row records: pinning, slots, last use.
    # On a capacity error the state is left half-updated; the run is over then.
    newly = 0
    slots = np.empty(n, np.int64)
    fetch = np.empty(n, np.int64)
    nm = 0
    for k in range(n):
        x = uniq[k]
        if R[x, LAST] < below:
            newly += 1
        sl = R[x, SLOT]
        slots[k] = sl
        if sl < 0:
            fetch[nm] = x
            nm += 1
        R[x, LAST] = s  # pinned before any victim is chosen
    S[PINNED] += newly
    if S[PINNED] > S[PEAK]:
        S[PEAK] = S[PINNED]
    if S[PINNED] > S[CAP]:
        return 1, z, z, z, z, z, z
    nfree = S[NFREE]
    nv = max(nm - nfree, 0)
    victims = np.empty(nv, np.int64)
    if nv > 0:
        got = _never_pop(R, C, Cn, FS, S, Q, nv, victims, 0)
        if got < nv:
            got = _far_take(R, C, Cn, FS, S, Q, nv - got, victims, got, s)
        if got != nv:
            return 2, z, z, z, z, z, z
    vslots = np.empty(nv, np.int64)
    for i in range(nv):
        x = victims[i]
        sl = R[x, SLOT]
        vslots[i] = sl
        R[x, SLOT] = -1
        free_slots[nfree] = sl
        nfree += 1
    fslots = np.empty(nm, np.int64)
    for i in range(nm):  # slots freed last are reused first
        sl = free_slots[nfree - 1 - i]
        fslots[i] = sl
        R[fetch[i], SLOT] = sl
    S[NFREE] = nfree - nm
    i = 0
    for k in range(n):
        if slots[k] < 0:
            slots[k] = fslots[i]
            i += 1
    ep = S[EPOCH]
    mask = ring.shape[0] - 1
    base = S[BASE]
    for k in range(n):
        x = uniq[k]
        R[x, FREQ] = min(np.int64(R[x, FREQ]) + counts[k], FREQ_CAP)
        h = _aged(np.int64(R[x, HEAT]), ep - R[x, HEPOCH])
        R[x, HEAT] = min(h + counts[k], _HEAT_CAP)
        R[x, HEPOCH] = ep
        R[x, NEXT] = ring[(base + k) & mask]
    S[BASE] = base + n
    # Aging after the next uses are set is the same: this step's rows are
    # pinned (last use s), so none of them is a valid no-use entry either way.
    if (s + 1) % S[AGE] == 0:
        _age(R, C, Cn, FS, S, Q)
    # Every row whose next use was s has just been used: drop s's bucket whole.
    _clear(Cn, FS, S, Q, _NB + (s & (S[FRING] - 1)))  # every row next used at s was used
    lookup = np.empty(L, np.int64)
    for p in range(L):
        lookup[p] = slots[inv[p]]
    return 0, lookup, slots, fetch[:nm].copy(), fslots, victims, vslots


class CompiledLookahead:
    """Runs :class:`~hotpipe.plan.planner.Planner`'s loop for the lookahead policy in kernels.

    Same hooks in the same order as the reference (release step ``s-d-1``,
    read up to step ``s+window-1``, plan ``s``), so the plans are identical.
    """

    def __init__(self, planner: Planner, age_every: int | None = None) -> None:
        if not AVAILABLE:
            raise RuntimeError("the compiled planner needs numba")
        self.planner = planner
        n, cap, w = planner.num_rows, planner.capacity, planner.window
        self.R = np.empty((n, 8), dtype=np.int32)
        self.R[:] = _ROW_INIT
        fring = 1 << max(w, 1).bit_length()  # a power of two > window: one bucket per step
        self.S = np.zeros(15, dtype=np.int64)
        self.S[[CAP, DEPTH, WINDOW, AGE, FRING, NROWS, NFREE, BASE, END]] = (
            cap, planner.depth, w, age_every or w, fring, n, cap, 1, 1)
        self.Q = np.zeros((_NB + fring, 5), dtype=np.int64)
        self.Q[:, [HC, TC]] = -1
        self.C = np.empty((0, 2 * K), dtype=np.int32)  # chunks of K (id, stamp) pairs
        self.Cn = np.empty(0, dtype=np.int32)  # next chunk of a list, -1 at its tail
        self.FS = np.empty(0, dtype=np.int32)  # stack of free chunks, S[CTOP] of them
        self._lists = _NB + fring
        self._reserve_chunks(max(4096, 2 * cap))
        self.ring = np.empty(1 << 12, dtype=np.int32)
        # A stack of free slots; the top is the end. Initially 0 is on top.
        self.free_slots = np.arange(cap - 1, -1, -1, dtype=np.int32)

    def _reserve_chunks(self, entries: int) -> None:
        """Keep enough chunks free for ``entries`` pushes spread over every list.

        Kernels that rebuild a list (aging, compaction, taking) free its
        chunks before pushing, so they need at most one partial chunk per list more.
        """
        need = -(-entries // K) + 2 * self._lists + 8
        S = self.S
        if S[CTOP] >= need:
            return
        old = self.C.shape[0]
        size = max(2 * old, old + 2 * need)
        C = np.empty((size, 2 * K), dtype=np.int32)
        C[:old] = self.C
        Cn = np.full(size, -1, dtype=np.int32)
        Cn[:old] = self.Cn
        FS = np.empty(size, dtype=np.int32)
        top = int(S[CTOP])
        FS[:top] = self.FS[:top]
        FS[top : top + size - old] = np.arange(size - 1, old - 1, -1, dtype=np.int32)
        S[CTOP] = top + size - old
        self.C, self.Cn, self.FS = C, Cn, FS

    def _reserve_ring(self, n: int) -> None:
        size = self.ring.shape[0]
        base, end = int(self.S[BASE]), int(self.S[END])
        need = end + n - base
        if need <= size:
            return
        new_size = 1 << (2 * need - 1).bit_length()
        if new_size > 1 << 30:
            raise ValueError(f"the lookahead window holds {need} occurrences; at most 2**29")
        ring = np.empty(new_size, dtype=np.int32)
        live = np.arange(base, end, dtype=np.int64)
        ring[live & (new_size - 1)] = self.ring[live & (size - 1)]
        self.ring = ring

    def run(self, it: Iterator[np.ndarray]) -> Iterator[StepPlan]:
        R, S, Q, p = self.R, self.S, self.Q, self.planner
        depth, window = p.depth, p.window
        records: deque[tuple[int, tuple[int, ...], np.ndarray, np.ndarray, np.ndarray]] = deque()
        scratch = np.empty((3, 0), dtype=np.int64)
        loaded = 0
        s = 0
        while True:
            if records and records[0][0] == s - depth - 1:
                uniq = records.popleft()[2]
                self._reserve_chunks(uniq.shape[0])
                release_step(R, S, self.C, self.Cn, self.FS, Q, uniq, s - depth - 1)
            while loaded < s + window:
                ids = next(it, None)
                if ids is None:
                    break
                ids = np.asarray(ids)
                if ids.dtype.kind not in "iu":
                    checked_ids(loaded, ids, p.num_rows)  # raises, naming the step
                flat = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
                self._reserve_ring(flat.shape[0])
                self._reserve_chunks(flat.shape[0])
                if scratch.shape[1] < flat.shape[0]:
                    scratch = np.empty((3, 2 * flat.shape[0]), dtype=np.int64)
                bad, uniq, inv, counts = load_step(R, S, self.C, self.Cn, self.FS, Q, self.ring,
                                                   flat, loaded, s, scratch)
                if bad >= 0:
                    checked_ids(loaded, ids, p.num_rows)  # raises, naming the step
                records.append((loaded, ids.shape, uniq, inv, counts))
                loaded += 1
            if not records or records[-1][0] < s:
                return
            step, shape, uniq, inv, counts = records[s - records[0][0]]
            self._reserve_chunks(0)
            status, lookup, uslots, fetch, fslots, ev, evslots = plan_step(
                R, S, self.C, self.Cn, self.FS, Q, self.ring, self.free_slots, uniq, inv, counts, s)
            p.pinned_peak = int(S[PEAK])
            if status == 1:
                first = max(0, s - depth)
                raise CapacityError(
                    f"step {s}: steps {first}..{s} are in flight together "
                    f"(prefetch depth {depth}) and use {int(S[PINNED])} distinct rows",
                    needed=p.pinned_peak, capacity=p.capacity)
            if status != 0:
                raise RuntimeError(f"planner bug: the compiled lookahead found too few victims "
                                   f"at step {s}")
            yield StepPlan(step=s, lookup_slots=lookup.reshape(shape), unique_ids=uniq,
                           unique_slots=uslots, fetch_ids=fetch, fetch_slots=fslots,
                           evict_ids=ev, evict_slots=evslots)
            s += 1


_noted = False


def note_fallback() -> None:
    """Say once per process that the numpy reference plans instead of the kernel."""
    global _noted
    if not _noted:
        _noted = True
        print("hotpipe: note: numba is not installed, so the lookahead planner runs its "
              "numpy reference (several times slower); `pip install numba` to speed it up",
              file=sys.stderr)
