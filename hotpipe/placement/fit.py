"""Small least-squares helpers for the calibration fits."""

from __future__ import annotations

from itertools import combinations

import numpy as np


def nonneg_lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares ``x @ c ~ y`` with ``c >= 0``, by trying every column subset.

    Why not plain least squares: timings are noisy and a negative cost per
    row would make the model predict that moving more rows is faster. The
    fits here have at most 4 columns, so the 2**k subsets are cheap.

    Args:
        x: (n, k) regressors; y: (n,) observations.
    Returns:
        (k,) non-negative coefficients.
    """
    n, k = x.shape
    best, best_err = np.zeros(k), float(np.sum(y ** 2))
    for size in range(1, k + 1):
        for cols in combinations(range(k), size):
            c, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
            if np.any(c < 0):
                continue
            err = float(np.sum((x[:, cols] @ c - y) ** 2))
            if err < best_err:
                best, best_err = np.zeros(k), err
                best[list(cols)] = c
    return best
