"""Coalescing a batch's row gradients in one pass (numba), instead of sort + index_add_.

``SparseEmbedding.apply_gradients`` needs each distinct slot once with the sum
of its lookups' gradients, added in lookup order (so the sum is the one a
dense gradient would hold, and tiered == untiered bit for bit). The torch
path sorts the slots (``torch.unique``) and then scatters every lookup's row
(``index_add_``). Here a small open-addressing table (2-4x the lookups, so it
stays in cache) maps each slot to its position in first-occurrence order and
the rows are summed in the same pass order: the sums are the same float32
additions in the same order, so the result equals the torch path exactly
(tests/test_sparse_optim.py checks it); only the order of the distinct slots
differs, and rows are updated independently.

Used on CPU float32 when numba is installed; otherwise the torch path runs.
"""

from __future__ import annotations

import numpy as np

from hotpipe._jit import AVAILABLE as AVAILABLE  # re-exported: runs compiled
from hotpipe._jit import jit as _jit


@_jit
def coalesce(slots: np.ndarray, grad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """slots (L,) int64, grad (L, D) float32 -> (uniq (U,) int64, sums (U, D) float32).

    ``uniq`` in first-occurrence order; ``sums[i]`` is ``0 + g_a + g_b + ...``
    over the lookups of ``uniq[i]`` in lookup order.
    """
    L = slots.shape[0]
    D = grad.shape[1]
    bits = 4
    while (1 << bits) < 2 * L:
        bits += 1
    size = 1 << bits
    mask = size - 1
    keys = np.full(size, -1, np.int64)
    where = np.empty(size, np.int64)
    inv = np.empty(L, np.int64)
    uniq = np.empty(L, np.int64)
    n = 0
    shift = np.uint64(64 - bits)
    mult = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: spreads nearby slots
    for p in range(L):
        x = slots[p]
        h = np.int64((np.uint64(x) * mult) >> shift)
        while True:
            k = keys[h]
            if k == x:
                inv[p] = where[h]
                break
            if k < 0:
                keys[h] = x
                where[h] = n
                uniq[n] = x
                inv[p] = n
                n += 1
                break
            h = (h + 1) & mask
    sums = np.zeros((n, D), np.float32)
    for p in range(L):
        u = inv[p]
        for j in range(D):
            sums[u, j] += grad[p, j]
    return uniq[:n].copy(), sums


# The updates below do, per distinct row, the float32 operations of
# RowSGD / RowwiseAdagrad.delta followed by ``weights.index_add_`` in the same
# order, so they too equal the torch path bit for bit; they save the (U, D)
# temporaries and one gather/scatter pass per op. Row-wise Adagrad's (U, 1)
# state math stays in torch (its mean's summation order and its sqrt are torch's).


@_jit
def sgd_update(weights: np.ndarray, dirty: np.ndarray, uniq: np.ndarray, sums: np.ndarray,
               neg_lr: np.float32) -> None:
    """w[u] = w[u] + sums[i] * -lr for each distinct slot u = uniq[i]."""
    D = sums.shape[1]
    for i in range(uniq.shape[0]):
        u = uniq[i]
        for j in range(D):
            weights[u, j] = weights[u, j] + sums[i, j] * neg_lr
        dirty[u] = True


@_jit
def rowwise_adagrad_update(weights: np.ndarray, state: np.ndarray, dirty: np.ndarray,
                           uniq: np.ndarray, sums: np.ndarray, new_state: np.ndarray,
                           denom: np.ndarray, neg_lr: np.float32) -> None:
    """s[u] = new_state[i]; w[u] = w[u] + (sums[i] / denom[i]) * -lr for u = uniq[i].

    ``new_state`` and ``denom = sqrt(new_state) + eps`` come from torch: its
    sqrt differed from numba's in the last bit (measured), the rest agrees.
    """
    D = sums.shape[1]
    for i in range(uniq.shape[0]):
        u = uniq[i]
        state[u, 0] = new_state[i]
        d = denom[i]
        for j in range(D):
            weights[u, j] = weights[u, j] + (sums[i, j] / d) * neg_lr
        dirty[u] = True


def warm() -> None:
    """Load the three kernels now, on scratch arrays.

    A compiled function's first call in a process reads numba's on-disk cache
    (0.4-0.7 s measured here, BENCHMARKS.md; ~10 s when it must compile), which would otherwise
    land in the first training step's time (a quarter of a 60-step run's).
    """
    if not AVAILABLE:
        return
    w = np.zeros((2, 1), np.float32)
    state, dirty = np.zeros((2, 1), np.float32), np.zeros(2, np.bool_)
    u, g = coalesce(np.array([1, 1], np.int64), np.ones((2, 1), np.float32))
    sgd_update(w, dirty, u, g, np.float32(-0.1))
    one = np.ones(len(u), np.float32)
    rowwise_adagrad_update(w, state, dirty, u, g, one, one, np.float32(-0.1))
