"""Vectorized tokenizer for libSVM-family text: the fast path of ``LibsvmReader``.

It handles the regular case with numpy over a block's bytes, with no Python
per line or per token::

    1 12:1 407:1\\n-1 3:1 407:0.5\\n ...
    ^label ^index:value, single spaces, '\\n' line ends

Conditions: single spaces between tokens, ``\\n`` line ends (no tabs, ``\\r``,
blank lines or trailing spaces), every feature token with exactly the
expected number of colons, integers of at most 18 digits, labels of at most 8
bytes. Anything else returns ``None`` and the block goes to the per-line
parser in ``libsvm.py``, which is also the reference the tests compare this
path against, and the one that explains bad lines.

Integers are decoded from a right-aligned window of bytes ending at each
token's end (as Criteo's parser does): ``(m, W)`` digits times powers of ten.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_MAX_DIGITS = 18  # exact in int64
_LABEL_BYTES = 8  # a label packs into one uint64
_POW10 = 10 ** np.arange(_MAX_DIGITS, dtype=np.int64)  # (18,)
_IRREGULAR = (b"\t", b"\r", b"  ", b" \n", b"\n ", b"\n\n")


@dataclass(frozen=True)
class Tokens:
    """A tokenized block.

    Attributes:
        n: lines (samples).
        label_texts: the distinct label texts of the block.
        label_inv: (n,) index of each line's label in ``label_texts``.
        row_of: (m,) line of each feature token, non-decreasing.
        nums: (m, parts - 1) int64: the field (ffm) and the index.
        value: (m,) float64.
    """

    n: int
    label_texts: list[bytes]
    label_inv: np.ndarray
    row_of: np.ndarray
    nums: np.ndarray
    value: np.ndarray


def _windows(padded: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` bytes before each end (``padded`` has ``width`` zero bytes in front): (m, width)."""
    return np.lib.stride_tricks.sliding_window_view(padded, width)[ends]


def _ints(padded: np.ndarray, pad: int, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decimal integers in ``[starts, ends)`` of the block -> (values (m,) int64, ok (m,) bool)."""
    lens = ends - starts
    ok = (lens >= 1) & (lens <= _MAX_DIGITS)
    width = int(min(lens.max(initial=1), _MAX_DIGITS))
    digits = _windows(padded, ends + pad - width, width) - np.uint8(48)  # (m, W); non-digits wrap to > 9
    inside = np.arange(width) >= (width - np.minimum(lens, width))[:, None]  # (m, W)
    digits = np.where(inside, digits, np.uint8(0))
    ok &= (digits <= 9).all(axis=1)
    if width <= 15:  # float64 is exact below 2^53: one BLAS product instead of an int64 reduction
        value = (digits.astype(np.float64) @ _POW10[width - 1::-1].astype(np.float64)).astype(np.int64)
    else:
        value = (digits.astype(np.int64) * _POW10[width - 1::-1]).sum(axis=1)
    return value, ok


def tokenize(block: bytes, parts: int) -> Tokens | None:
    """Tokenize a block of whole lines (ending in ``\\n``); None when it is not regular.

    Args:
        block: the lines' bytes.
        parts: numbers per feature token: 2 (``index:value``) or 3 (``field:index:value``).
    """
    if not block.endswith(b"\n") or block.startswith((b" ", b"\n")) or any(s in block for s in _IRREGULAR):
        return None
    buf = np.frombuffer(block, np.uint8)
    sep = np.flatnonzero((buf == 32) | (buf == 10))  # token ends, exclusive
    starts = np.r_[0, sep[:-1] + 1]
    line_end = buf[sep] == 10  # (tokens,) the token ends its line
    is_label = np.r_[True, line_end[:-1]]
    colons = buf == 58
    per_token = np.add.reduceat(colons.astype(np.int64), starts)  # tokens are never empty here
    if (per_token[is_label] != 0).any() or (per_token[~is_label] != parts - 1).any():
        return None
    pad = max(_MAX_DIGITS, _LABEL_BYTES)
    padded = np.r_[np.zeros(pad, np.uint8), buf]
    # Labels: up to 8 bytes packed into one uint64, so distinct labels are one np.unique.
    ls, le = starts[is_label], sep[is_label]
    if (le - ls > _LABEL_BYTES).any():
        return None
    win = _windows(padded, le + pad - _LABEL_BYTES, _LABEL_BYTES)  # (n, 8)
    keep = np.arange(_LABEL_BYTES) >= (_LABEL_BYTES - (le - ls))[:, None]
    codes = np.ascontiguousarray(np.where(keep, win, 0)).view(np.uint64)[:, 0]
    uniq, first, inv = np.unique(codes, return_index=True, return_inverse=True)
    label_texts = [block[ls[i]:le[i]] for i in first.tolist()]  # per distinct label
    # Feature tokens: sub-ranges between their colons.
    fs, fe = starts[~is_label], sep[~is_label]
    cpos = np.flatnonzero(colons).reshape(-1, parts - 1)  # (m, parts - 1)
    row_of = (np.cumsum(line_end) - line_end)[~is_label]
    bounds = [fs, *(cpos[:, k] + 1 for k in range(parts - 1))]  # starts of each number
    ends = [*(cpos[:, k] for k in range(parts - 1)), fe]
    nums = np.empty((fs.shape[0], parts - 1), np.int64)
    for k in range(parts - 1):
        nums[:, k], ok = _ints(padded, pad, bounds[k], ends[k])
        if not ok.all():
            return None
    vs, ve = bounds[-1], ends[-1]
    value = np.ones(fs.shape[0], np.float64)
    not_one = ((ve - vs) != 1) | (buf[np.minimum(vs, buf.shape[0] - 1)] != 49)
    if not_one.any():  # real-valued tokens: plain ints vectorized, the rest one by one
        idx = np.flatnonzero(not_one)
        ints, ok = _ints(padded, pad, vs[idx], ve[idx])
        value[idx] = ints
        for j in idx[~ok].tolist():
            try:
                value[j] = float(block[vs[j]:ve[j]])
            except ValueError:
                return None
    return Tokens(int(is_label.sum()), label_texts, inv.reshape(-1), row_of, nums, value)
