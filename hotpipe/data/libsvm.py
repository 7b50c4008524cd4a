"""libSVM / libFM / FFM text input: ``label token token ...`` per line.

Formats (``hotpipe prepare --format libsvm|libfm|ffm``)::

    libsvm, libfm:  1 12:1 407:1 9031:1          label, then index:value
    ffm:            1 0:12:1 1:407:1 2:9031:1    label, then field:index:value

Labels: ``1``/``+1`` -> 1, ``0``/``-1`` -> 0 (also ``1.0``...), or the schema's
label rule (``--schema`` with only a ``label:`` rule, no column). Anything else
is a bad line.

Each *field* becomes one embedding table and a token's *index* is the
categorical value (the vocabulary or hash maps it to a row), so a line must
hold at most one token per field (one-hot, as DLRM expects); a field absent
from a line is missing. Where the field of a token comes from:

* ``ffm``: written in the token. Tables ``f<field>`` for every field number
  up to the largest in the input (found by a quick regex pre-scan).
* ``libsvm``/``libfm`` with a feature-index file (``--feature-map``): the
  index's field from the file; an index not in it is a bad line.
* ``libsvm``/``libfm`` without one: the token's position (token k of every
  line is field ``f<k>``; the libFM CTR sets, e.g. Frappe, MovieLens, write
  one token per field in a fixed order), so every line must have as many
  tokens as the first.

Values: a value must be a number; embedding lookups have no weight, so values
other than 1 are dropped and *counted* (``PrepareSummary`` and the manifest
report ``values_not_one``), never silently.

Feature-index file: one feature per line, ``INDEX FIELD [anything else]``
(whitespace separated, ``#`` starts a comment), e.g. ``407 user 1432``.

Regular blocks (single spaces, well-formed tokens) are tokenized with numpy
over their bytes (``svm_fast.py``); a block with anything irregular or a bad
line goes through the per-line parser here, which names the line and is the
reference the fast path is tested against. Lines/s: ``prepare``'s docstring.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hotpipe.data import svm_fast
from hotpipe.data.criteo import SourceStream, open_source
from hotpipe.data.encoding import BadLine, RawChunk
from hotpipe.data.schema import LabelRule
from hotpipe.errors import ConfigError, DataFormatError

FORMATS = ("libsvm", "libfm", "ffm")
_MAX_EXAMPLES = 10
_BYTES_PER_LINE = 128
_FFM_FIELD = re.compile(rb"(?:^|[ \t])(\d+):[^ \t\n:]*:")


@dataclass(frozen=True)
class FeatureMap:
    """A feature-index file: each index's field.

    Attributes:
        fields: field names in order of first appearance (one table each).
        indices: (K,) int64 sorted indices; ``field_of[i]`` is the field number of ``indices[i]``.
    """

    fields: tuple[str, ...]
    indices: np.ndarray
    field_of: np.ndarray

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FeatureMap:
        p = Path(path)
        try:
            text = p.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError("feature_map", f"cannot read {p}: {e}") from e
        names: dict[str, int] = {}
        idx, fid = [], []
        seen: dict[int, int] = {}
        for no, line in enumerate(text.splitlines(), start=1):
            parts = line.split("#", 1)[0].split()
            if not parts:
                continue
            if len(parts) < 2 or not parts[0].lstrip("-").isdigit():
                raise DataFormatError("malformed feature-index line", path=str(p), line=no, field="line",
                                      expected="INDEX FIELD [...]", found=line[:40])
            i = int(parts[0])
            if i in seen:
                raise DataFormatError("index listed twice", path=str(p), line=no, field="index",
                                      expected="each index once", found=f"{i} (also line {seen[i]})")
            seen[i] = no
            idx.append(i)
            fid.append(names.setdefault(parts[1], len(names)))
        if not idx:
            raise DataFormatError("feature-index file lists no features", path=str(p),
                                  expected="lines INDEX FIELD", found="nothing")
        order = np.argsort(np.array(idx, np.int64))
        return cls(tuple(names), np.array(idx, np.int64)[order], np.array(fid, np.int64)[order])

    def lookup(self, index: np.ndarray) -> np.ndarray:
        """(m,) indices -> (m,) field numbers, -1 where the index is not in the map."""
        pos = np.minimum(np.searchsorted(self.indices, index), self.indices.shape[0] - 1)
        return np.where(self.indices[pos] == index, self.field_of[pos], -1)


def default_label(text: str) -> int | None:
    """libSVM's labels: 1/+1 -> 1, 0/-1 -> 0 (as numbers, so 1.0 works); else None."""
    try:
        v = float(text)
    except ValueError:
        return None
    return 1 if v == 1 else 0 if v in (0, -1) else None


def rule_label(rule: LabelRule) -> Callable[[str], int | None]:
    """A schema label rule applied to one label's text (the column is ignored here)."""
    def apply(text: str) -> int | None:
        if rule.kind == "threshold":
            try:
                return int(float(text) >= rule.threshold)
            except ValueError:
                return None
        if rule.kind == "positive":
            if text in rule.positive:
                return 1
            return 0 if rule.negative is None or text in rule.negative else None
        if rule.kind == "map":
            return dict(rule.mapping).get(text)
        return default_label(text)
    return apply


def _has_repeats(lin: np.ndarray, size: int) -> bool:
    """Whether a (row, field) cell index repeats: one scatter, no sort or hash."""
    seen = np.zeros(size, bool)
    seen[lin] = True
    return int(seen.sum()) != lin.shape[0]


def _or_minus1(v: int | None) -> int:
    return -1 if v is None else v


def scan_ffm_fields(path: Path) -> int:
    """Number of fields (largest field number + 1) of an FFM file: a regex pre-scan."""
    top = -1
    with open_source(path) as s:
        carry = b""
        while data := s.read(1 << 23):
            buf = carry + data
            cut = buf.rfind(b"\n") + 1
            for m in _FFM_FIELD.findall(buf, 0, cut if cut else len(buf)):
                top = max(top, int(m))
            carry = buf[cut:] if cut else b""
        for m in _FFM_FIELD.findall(carry):
            top = max(top, int(m))
    return top + 1


@dataclass
class LibsvmStats:
    """What the reader dropped on purpose (reported, never silent)."""

    values_not_one: int = 0
    tokens: int = 0
    fields: list[str] = field(default_factory=list)


class LibsvmReader:
    """Reads one format; :meth:`tables` are known before the first chunk.

    Args:
        fmt: ``libsvm``, ``libfm`` or ``ffm``.
        num_fields: fields of the input: from :func:`scan_ffm_fields` (ffm),
            the feature map, or the first line (positional; ``None`` here).
        feature_map: libsvm/libfm only.
        label: text -> 0/1 or None (bad).
    """

    def __init__(self, fmt: str, *, num_fields: int | None = None, feature_map: FeatureMap | None = None,
                 label: Callable[[str], int | None] = default_label) -> None:
        if fmt not in FORMATS:
            raise ConfigError("format", f"expected one of {', '.join(FORMATS)}, found {fmt!r}")
        if feature_map is not None and fmt == "ffm":
            raise ConfigError("feature_map", "ffm tokens carry their field; a feature map applies to libsvm/libfm")
        self.fmt, self.map, self.label = fmt, feature_map, label
        self.num_fields = len(feature_map.fields) if feature_map is not None else num_fields
        self.stats = LibsvmStats()

    @property
    def tables(self) -> list[str]:
        if self.map is not None:
            return list(self.map.fields)
        return [f"f{k}" for k in range(self.num_fields or 0)]

    def positional_width(self, path: Path) -> int:
        """Tokens on the first non-empty line (positional libsvm/libfm)."""
        with open_source(path) as s:
            head = s.read(1 << 20)
        for line in head.split(b"\n"):
            if line.strip():
                return len(line.split()) - 1
        return 0

    def read(self, stream: SourceStream, *, chunk_rows: int = 65536, on_bad_line: str = "error") -> Iterator[RawChunk]:
        """Stream one file as :class:`RawChunk` s: label (n,), no dense, keys/missing (n, T)."""
        path = str(stream.path)
        carry, line_no = b"", 1
        while True:
            data = stream.read(chunk_rows * _BYTES_PER_LINE)
            if not data and not carry:
                return
            buf = carry + data if data else carry + b"\n"
            cut = buf.rfind(b"\n") + 1
            carry = buf[cut:]
            if not cut:
                continue
            block = buf[:cut]
            yield self._fast_chunk(block) or self._chunk(block.split(b"\n")[:-1], path, line_no,
                                                         on_bad_line == "skip")
            line_no += block.count(b"\n")

    def _fast_chunk(self, block: bytes) -> RawChunk | None:
        """The vectorized path (``svm_fast.py``); None when the block is irregular or has a bad line."""
        tok = svm_fast.tokenize(block, 3 if self.fmt == "ffm" else 2)
        if tok is None:
            return None
        t = self.num_fields or 0
        mapped = np.array([_or_minus1(self.label(u.decode("utf-8", "replace"))) for u in tok.label_texts])
        label = mapped[tok.label_inv] if tok.n else np.zeros(0, np.int64)
        index = tok.nums[:, -1]
        if self.fmt == "ffm":
            field = tok.nums[:, 0]
        elif self.map is not None:
            field = self.map.lookup(index)
        else:
            if tok.row_of.shape[0] != tok.n * t or (np.bincount(tok.row_of, minlength=tok.n) != t).any():
                return None
            field = np.tile(np.arange(t), tok.n)  # every line has exactly t tokens, in order
        if (label < 0).any() or (field < 0).any() or (field >= t).any() or not np.isfinite(tok.value).all():
            return None  # the per-line parser names the line
        lin = tok.row_of * t + field
        # Positional fields cannot repeat; a field twice on a line goes to the per-line parser.
        if (self.fmt == "ffm" or self.map is not None) and _has_repeats(lin, tok.n * t):
            return None
        keys = np.zeros((tok.n, t), np.uint64)
        missing = np.ones((tok.n, t), bool)
        keys.ravel()[lin] = index.astype(np.uint64)
        missing.ravel()[lin] = False
        self.stats.tokens += int(lin.shape[0])
        self.stats.values_not_one += int((tok.value != 1).sum())
        return RawChunk(label=label.astype(np.float32), dense=np.zeros((tok.n, 0)), keys=keys, missing=missing)

    def _chunk(self, lines: list[bytes], path: str, first_line: int, skip: bool) -> RawChunk:
        t = self.num_fields or 0
        labels: list[bytes] = []
        rows: list[int] = []
        toks: list[bytes] = []
        nos: list[int] = []
        bad: dict[int, tuple[str, str, str]] = {}
        r = 0
        for i, line in enumerate(lines):
            parts = line.split()
            if not parts:
                continue  # blank lines are not samples
            labels.append(parts[0])
            nos.append(first_line + i)
            toks.extend(parts[1:])
            rows.extend([r] * (len(parts) - 1))
            if self.map is None and self.fmt != "ffm" and len(parts) - 1 != t:
                bad.setdefault(r, ("line", f"{t} index:value tokens (one per field, by position; "
                                   "pass --feature-map when lines differ)", f"{len(parts) - 1} tokens"))
            r += 1
        n = r
        row_of = np.array(rows, np.int64)
        field, index, value, tok_bad = self._tokens(toks, row_of, path, nos)
        for rr, why in tok_bad.items():
            bad.setdefault(rr, why)
        label = np.zeros(n, np.float32)
        if n:
            uniq, inv = np.unique(np.array(labels), return_inverse=True)  # per distinct label text
            mapped = np.array([_or_minus1(self.label(u.decode("utf-8", "replace"))) for u in uniq.tolist()])
            label = np.maximum(mapped[inv], 0).astype(np.float32)
            for k in np.flatnonzero(mapped[inv] < 0)[:_MAX_EXAMPLES * 4]:
                bad.setdefault(int(k), ("label", "1/+1 or 0/-1 (or the schema's rule)",
                                        labels[k].decode("utf-8", "replace")))
        keys = np.zeros((n, t), np.uint64)
        missing = np.ones((n, t), bool)
        ok = field >= 0
        lin = row_of[ok] * t + field[ok]
        uniq, counts = np.unique(lin, return_counts=True) if _has_repeats(lin, n * t) else (lin[:0], lin[:0])
        for dup in uniq[counts > 1][:_MAX_EXAMPLES * 4]:
            bad.setdefault(int(dup // t), (self.tables[int(dup % t)], "one token per field (one-hot)",
                                           "the field appears twice on the line"))
        keys.ravel()[lin] = index[ok].astype(np.uint64)
        missing.ravel()[lin] = False
        examples: tuple[BadLine, ...] = ()
        row_bad = np.zeros(n, bool)
        if bad:
            row_bad[list(bad)] = True
            shown = sorted(bad)[: _MAX_EXAMPLES if skip else 1]
            examples = tuple(self._explain(k, bad[k], nos, path) for k in shown)
            if not skip:
                raise examples[0].to_error()
        good = ~row_bad
        counted = ok & good[row_of] if row_of.size else ok
        self.stats.tokens += int(counted.sum())
        self.stats.values_not_one += int((value[counted] != 1).sum())
        return RawChunk(label=label[good], dense=np.zeros((int(good.sum()), 0)), keys=keys[good],
                        missing=missing[good], bad_count=int(row_bad.sum()), bad=examples)

    @staticmethod
    def _explain(k: int, why: tuple[str, str, str], nos: list[int], path: str) -> BadLine:
        fld, expected, found = why
        return BadLine(path, nos[k], fld, expected, found[:40])

    def _tokens(self, toks: list[bytes], row_of: np.ndarray, path: str,
                nos: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, tuple[str, str, str]]]:
        """Tokens -> (field (m,) int64, -1 where unknown/bad; index (m,) int64; value (m,) f64; bad rows)."""
        m = len(toks)
        parts_per = 3 if self.fmt == "ffm" else 2
        bad: dict[int, tuple[str, str, str]] = {}
        flat = b" ".join(toks).replace(b":", b" ").split()
        field = np.full(m, -1, np.int64)
        index = np.zeros(m, np.int64)
        value = np.ones(m, np.float64)
        if m == 0:
            return field, index, value, bad
        try:
            if len(flat) != m * parts_per:
                raise ValueError("token shape")
            arr = np.array(flat).reshape(m, parts_per)
            nums = arr[:, :-1].astype(np.int64)  # (m, 1 or 2): [field,] index
            value = arr[:, -1].astype(np.float64)
            good = np.ones(m, bool)
        except (ValueError, OverflowError):
            nums, value, good = self._tokens_slowly(toks, parts_per, row_of, bad)
        index = nums[:, -1]
        good &= np.isfinite(value)
        if self.fmt == "ffm":
            beyond = good & ((nums[:, 0] < 0) | (nums[:, 0] >= (self.num_fields or 0)))
            for j in np.flatnonzero(beyond)[:_MAX_EXAMPLES * 4]:
                bad.setdefault(int(row_of[j]), ("field", f"a field number in [0, {self.num_fields}) (the "
                                                "fields of the training input)", toks[j].decode("utf-8", "replace")))
            field = np.where(good & ~beyond, nums[:, 0], -1)
        elif self.map is not None:
            field = np.where(good, self.map.lookup(index), -1)
            for j in np.flatnonzero(good & (field < 0))[:_MAX_EXAMPLES * 4]:
                bad.setdefault(int(row_of[j]), ("index", "an index listed in the feature map",
                                                toks[j].decode("utf-8", "replace")))
        else:
            pos = np.arange(m) - np.searchsorted(row_of, row_of)  # token position within its line
            field = np.where(good & (pos < (self.num_fields or 0)), pos, -1)
        for j in np.flatnonzero(good & (index < 0))[:_MAX_EXAMPLES * 4]:
            bad.setdefault(int(row_of[j]), ("index", "an index >= 0", toks[j].decode("utf-8", "replace")))
        field = np.where(index < 0, -1, field)
        return field, index, value, bad

    def _tokens_slowly(self, toks: list[bytes], parts_per: int, row_of: np.ndarray,
                       bad: dict[int, tuple[str, str, str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Error path: token by token, naming the first bad one of each line."""
        m = len(toks)
        nums = np.zeros((m, parts_per - 1), np.int64)
        value = np.ones(m, np.float64)
        good = np.ones(m, bool)
        shape = "field:index:value" if parts_per == 3 else "index:value"
        for j, tok in enumerate(toks):
            parts = tok.split(b":")
            try:
                if len(parts) != parts_per:
                    raise ValueError
                nums[j] = [int(x) for x in parts[:-1]]
                value[j] = float(parts[-1])
            except ValueError:
                good[j] = False
                bad.setdefault(int(row_of[j]), ("token", f"{shape} with integer indices and a numeric value",
                                                tok.decode("utf-8", "replace")[:40]))
        return nums, value, good
