"""numba, when installed: the one place the compiled paths get their decorators.

The planner kernel (``plan/kernel.py``) and the embedding update
(``model/coalesce.py``) compile with numba and keep a pure numpy/torch
reference; without numba the decorators return the Python function unchanged
and :data:`AVAILABLE` tells the callers to take their reference path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

numba: Any
try:
    import numba  # type: ignore[import-untyped,import-not-found,no-redef,unused-ignore]
except ImportError:  # callers run their reference paths instead
    numba = None

#: Whether numba can compile in this process.
AVAILABLE = numba is not None


def jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Compile ``fn`` in nopython mode, GIL released; cache=True: compiled once per
    machine (~10 s), then loaded from ``__pycache__``."""
    if numba is None:
        return fn
    return numba.njit(cache=True, nogil=True)(fn)  # type: ignore[no-any-return]


def inline(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A helper inlined into its compiled callers' IR: a plain compiled call passes
    every array with an atomic reference-count increment and decrement, which
    measured ~100 ns per call, 20x the work of a queue push."""
    if numba is None:
        return fn
    return numba.njit(nogil=True, inline="always")(fn)  # type: ignore[no-any-return]
