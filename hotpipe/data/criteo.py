"""Reader for Criteo click logs (Kaggle ``train.txt``, Terabyte ``day_N``).

One sample per line, 40 tab-separated fields, empty field = missing::

    label \\t I1 .. I13 \\t C1 .. C26 \\n
    0|1     integers       hex, <= 8 digits (32-bit hashes)
            (may be < 0)

Input may be plain or gzip (detected by magic bytes, not by name), read in
blocks of about ``chunk_rows`` lines so memory stays bounded. Parsing is
vectorized over a whole block with numpy: field boundaries come from one scan
for tabs/newlines, and every integer/hex field is decoded from a fixed-width
window of bytes ending at its tab, so no Python code runs per field. A plain
per-line parser, :func:`parse_line`, is the reference the tests compare
against and explains rejected lines.

Throughput (this shared 2-core box, one thread, best of 2; the 8k-line Kaggle
sample repeated to 1.6M lines): parse only ~430k lines/s; ``prepare`` end to
end ~200k lines/s with vocab encoding, ~330k with hash, ~115k from gzip
(zlib dominates). Benchmark: the ``prepare`` module docstring.

Also here: :func:`open_source`, the byte stream every reader uses (gzip
sniffing, sha256 and byte count computed while streaming).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from hotpipe.data.encoding import BadLine, RawChunk
from hotpipe.errors import ConfigError, DataFormatError, ResourceError

NUM_DENSE = 13
NUM_CATEGORICAL = 26
DENSE_NAMES = tuple(f"I{i}" for i in range(1, NUM_DENSE + 1))
CATEGORICAL_NAMES = tuple(f"C{i}" for i in range(1, NUM_CATEGORICAL + 1))
FIELD_NAMES = ("label", *DENSE_NAMES, *CATEGORICAL_NAMES)
NUM_FIELDS = len(FIELD_NAMES)  # 40

_BYTES_PER_LINE = 256  # Kaggle lines average ~242 bytes; sizes the read blocks
_MAX_LINE_BYTES = 1 << 20  # a "line" this long means the file is not Criteo text
_MAX_DIGITS = 18  # keeps every accepted integer exact in int64
_HEX_DIGITS = 8
_PAD = 32  # zero bytes before a block so every field has a full window behind it
_MAX_EXAMPLES = 10
_TAB, _NL, _CR, _MINUS = 9, 10, 13, 45
_CORRUPT_GZIP = "gzip stream is truncated or corrupt (this cannot be skipped)"

_DIGIT = np.full(256, 255, np.uint8)
_DIGIT[48:58] = np.arange(10)
_HEX = _DIGIT.copy()
_HEX[97:103] = np.arange(10, 16)  # a-f
_HEX[65:71] = np.arange(10, 16)  # A-F

_INT_RE = re.compile(rb"-?[0-9]{1,%d}" % _MAX_DIGITS)
_HEX_RE = re.compile(rb"[0-9a-fA-F]{1,%d}" % _HEX_DIGITS)


# --------------------------------------------------------------------------- sources


class SourceStream:
    """A readable byte stream over a file that may be gzip-compressed.

    Hashes (sha256) and counts the *file's* bytes as they are read, so the
    dataset manifest can record them without a second pass.

    Attributes:
        path: the file.
        compressed: whether it is gzip.
        size: the file size in bytes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.delimiter: str | None = None  # set by the CSV reader once resolved
        raw: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed in close()
        magic = raw.read(4)
        self.compressed = magic[:2] == b"\x1f\x8b"
        raw.seek(0)
        if magic == b"PAR1":
            raw.close()
            raise DataFormatError("this is a Parquet file, not text", path=str(path), line=1,
                                  expected="text (Criteo TSV, CSV, libSVM)",
                                  found="Parquet magic bytes PAR1; use --format parquet with --schema")
        self._hashing = _HashingReader(raw)
        self._stream: io.RawIOBase | gzip.GzipFile = (
            gzip.GzipFile(fileobj=self._hashing, mode="rb") if self.compressed else self._hashing)

    @property
    def bytes_read(self) -> int:
        """File (compressed) bytes consumed so far; drives the progress bar."""
        return self._hashing.count

    def read(self, n: int) -> bytes:
        """Up to ``n`` decompressed bytes; b"" at the end."""
        try:
            return self._stream.read(n) or b""
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise DataFormatError(_CORRUPT_GZIP, path=str(self.path), expected="a complete gzip stream",
                                  found=str(e)) from e

    def readable(self) -> bool:  # lets pyarrow treat this as a file object
        return True

    @property
    def closed(self) -> bool:
        return self._hashing.closed

    def sha256(self) -> str:
        """Digest of the whole file; reads whatever the decoder left unread."""
        while self._hashing.read(1 << 20):
            pass
        return self._hashing.sha.hexdigest()

    def record(self) -> dict[str, object]:
        """The manifest's ``sources`` entry."""
        rec: dict[str, object] = {"path": str(self.path.resolve()), "bytes": self.size,
                                  "sha256": self.sha256(), "compression": "gzip" if self.compressed else "none"}
        if self.delimiter is not None:
            rec["delimiter"] = self.delimiter
        return rec

    def close(self) -> None:
        self._stream.close()
        self._hashing.close()


class _HashingReader(io.RawIOBase):
    """Passes a file's bytes through, hashing and counting them."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self._raw.readinto(b)  # type: ignore[attr-defined]
        if n:
            self.sha.update(memoryview(b)[:n])
            self.count += n
        return n or 0

    def close(self) -> None:
        self._raw.close()
        super().close()


@contextmanager
def open_source(path: str | os.PathLike[str]) -> Iterator[SourceStream]:
    """Open a (possibly gzip) input file as a hashing :class:`SourceStream`."""
    p = Path(path)
    if not p.is_file():
        raise DataFormatError("input file not found", path=str(p), expected="a readable file",
                              found="nothing" if not p.exists() else "not a regular file")
    try:
        stream = SourceStream(p)
    except PermissionError as e:
        raise ResourceError(f"{p}: permission denied (cannot read the input file)") from e
    try:
        yield stream
    finally:
        stream.close()


# ----------------------------------------------------------------- reference parser


def parse_line(line: bytes) -> tuple[int, list[int | None], list[int | None]]:
    """Parse one line the slow, obvious way (the reference for the fast path).

    Args:
        line: one line without its trailing newline.
    Returns:
        (label, 13 dense ints or None, 26 categorical uint32 values or None).
    Raises:
        DataFormatError: naming the field, what was expected and what was found
            (no path/line: the caller adds them).
    """
    line = line[:-1] if line.endswith(b"\r") else line
    fields = line.split(b"\t")
    if len(fields) != NUM_FIELDS:
        raise DataFormatError("malformed line", field="line",
                              expected=f"{NUM_FIELDS} tab-separated fields", found=f"{len(fields)} fields")
    if fields[0] not in (b"0", b"1"):
        raise _field_error("label", "0 or 1", fields[0])
    dense: list[int | None] = []
    for name, f in zip(DENSE_NAMES, fields[1:14], strict=True):
        if f and not _INT_RE.fullmatch(f):
            raise _field_error(name, f"an integer of at most {_MAX_DIGITS} digits or empty", f)
        dense.append(int(f) if f else None)
    cats: list[int | None] = []
    for name, f in zip(CATEGORICAL_NAMES, fields[14:], strict=True):
        if f and not _HEX_RE.fullmatch(f):
            raise _field_error(name, f"hex of at most {_HEX_DIGITS} digits or empty", f)
        cats.append(int(f, 16) if f else None)
    return int(fields[0]), dense, cats


def _field_error(name: str, expected: str, found: bytes) -> DataFormatError:
    shown = found[:40].decode("utf-8", "replace") + ("..." if len(found) > 40 else "")
    return DataFormatError("malformed line", field=name, expected=expected, found=shown)


def _explain(line: bytes, path: str, line_no: int) -> BadLine:
    try:
        parse_line(line)
    except DataFormatError as e:
        expected = e.expected or ""
        if line_no == 1 and e.field == "line" and b"," in line:
            expected += " (this looks like CSV: describe it with a schema, `hotpipe prepare --schema`)"
        return BadLine(path, line_no, e.field or "line", expected, e.found or "")
    # Only reachable if the fast parser and the reference disagree (a bug).
    return BadLine(path, line_no, "line", "a line the vectorized parser accepts", "rejected")


# ---------------------------------------------------------------- vectorized parser


def _windows(buf: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` bytes before each field end: ends (m,) -> (m, width) uint8."""
    return np.lib.stride_tricks.sliding_window_view(buf, width)[ends - width]


def _words(buf: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The 8 bytes before each field end as one little-endian word: (m,) -> (m,) uint64.

    Byte i of the word is character i of the right-aligned window, so the
    field's own characters are the high bytes (see ``_HIGH_BYTES``).
    """
    unaligned = np.ndarray((buf.shape[0] - 7,), dtype="<u8", buffer=buf, strides=(1,))
    return unaligned[ends - 8]


def _u64(x: int) -> np.uint64:
    return np.uint64(x & 0xFFFFFFFFFFFFFFFF)


# _HIGH_BYTES[k]: the top k bytes of a word set, i.e. the last k characters of a window.
_HIGH_BYTES = np.array([_u64(~((1 << (8 * (8 - k))) - 1)) if k else 0 for k in range(9)], np.uint64)
_ONES = {c: _u64(int.from_bytes(bytes([c]) * 8, "little")) for c in (0x30, 0x06, 0x80, 0xF0, 0x33)}


def _parse_ints(buf: np.ndarray, ends: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode optional-minus decimal fields, 8 characters at a time (SWAR).

    Args:
        buf: the padded block; ends, lens: (m,) field end offsets and lengths.
    Returns:
        (values (m,) float64 with NaN for empty, bad (m,) bool).
    """
    short = np.minimum(lens, 8)
    x = _words(buf, ends)  # (m,)
    lead = (x >> (np.uint64(8) * (8 - short).astype(np.uint64))) & np.uint64(0xFF)  # first char
    minus = (lens >= 2) & (lead == _MINUS)
    digits = _HIGH_BYTES[short - minus]
    x = (x & digits) | (_ONES[0x30] & ~digits)  # everything that is not a digit becomes '0'
    # A byte is an ASCII digit iff its high nibble is 3 and adding 6 does not carry out of it.
    hi = _ONES[0xF0]
    bad = ((x & hi) | (((x + _ONES[0x06]) & hi) >> np.uint64(4))) != _ONES[0x33]
    x -= _ONES[0x30]
    x = (x * np.uint64(10) + (x >> np.uint64(8))) & _u64(0x00FF00FF00FF00FF)
    x = (x * np.uint64(100) + (x >> np.uint64(16))) & _u64(0x0000FFFF0000FFFF)
    value = ((x * np.uint64(10000) + (x >> np.uint64(32))) & _u64(0xFFFFFFFF)).astype(np.float64)
    long = np.flatnonzero(lens > 8)
    if long.size:  # rare in Criteo: decode the few longer fields the plain way
        value[long], bad[long] = _parse_long_ints(buf, ends[long], lens[long])
        minus[long] = False  # the long path returns signed values
    value[minus] = -value[minus]
    value[lens == 0] = np.nan
    return value, bad


def _parse_long_ints(buf: np.ndarray, ends: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fields with more than 8 digits: (m,) -> (signed float64 values, bad)."""
    width = int(min(lens.max(), _MAX_DIGITS + 1))
    win = _windows(buf, ends, width)  # (m, W), right-aligned
    col = np.arange(width)
    first = width - np.minimum(lens, width)  # column of the leftmost character
    minus = win[np.arange(len(ends)), first] == _MINUS
    is_digit_pos = (col >= first[:, None]) & ~((col == first[:, None]) & minus[:, None])
    digit = _DIGIT[win]  # 255 where not a digit
    bad = (is_digit_pos & (digit == 255)).any(axis=1) | (lens - minus > _MAX_DIGITS)
    pow10 = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)  # (W,)
    value = (np.where(is_digit_pos, digit, 0).astype(np.int64) * pow10).sum(axis=1)
    return np.where(minus, -value, value).astype(np.float64), bad


def _pair_table() -> np.ndarray:
    """(65536,) uint16: two hex characters (first in the low byte) -> their byte, or 0x100 if invalid."""
    pair = np.arange(1 << 16)
    hi, lo = _HEX[pair & 0xFF].astype(np.uint16), _HEX[pair >> 8].astype(np.uint16)
    return np.where((hi == 255) | (lo == 255), 0x100, (hi << 4) | lo).astype(np.uint16)


_HEX_PAIR = _pair_table()


def _parse_hex(buf: np.ndarray, ends: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode hex fields of up to 8 digits, two characters per table lookup.

    Returns:
        (values (m,) uint64, bad (m,) bool); empty fields give 0 and not bad.
    """
    in_field = _HIGH_BYTES[np.minimum(lens, 8)]
    x = (_words(buf, ends) & in_field) | (_ONES[0x30] & ~in_field)  # pad on the left with '0'
    # 16-bit lane j now holds the byte of characters 2j, 2j+1 (most significant first).
    x = _HEX_PAIR[x.view(np.uint16)].view(np.uint64)
    bad = ((x & _u64(0x0100010001000100)) != 0) | (lens > _HEX_DIGITS)
    x = ((x << np.uint64(8)) | (x >> np.uint64(16))) & _u64(0x0000FFFF0000FFFF)
    return ((x << np.uint64(16)) | (x >> np.uint64(32))) & _u64(0xFFFFFFFF), bad


def _split_fields(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Field boundaries of a block of whole lines.

    Returns:
        (starts (S,), ends (S,) with a trailing '\\r' excluded, line index of
        each field (S,), newline offsets (n_lines,)).
    """
    is_nl = buf == _NL
    ends = np.flatnonzero(is_nl | (buf == _TAB))
    at_nl = is_nl[ends]
    line_of = np.cumsum(at_nl) - at_nl
    starts = np.empty_like(ends)
    starts[0] = _PAD
    starts[1:] = ends[:-1] + 1
    nl_pos = ends[at_nl]
    cr = at_nl & (ends > starts) & (buf[ends - 1] == _CR)
    return starts, ends - cr, line_of, nl_pos


def _parse_block(buf: np.ndarray, path: str, first_line: int, skip: bool) -> RawChunk:
    """Parse a padded block of whole lines into a chunk (see module docstring)."""
    starts, ends, line_of, nl_pos = _split_fields(buf)
    n_lines = nl_pos.shape[0]
    count_ok = np.bincount(line_of, minlength=n_lines) == NUM_FIELDS
    if not count_ok.all():
        keep = count_ok[line_of]
        starts, ends = starts[keep], ends[keep]
    ends = ends.reshape(-1, NUM_FIELDS)  # (n, 40)
    lens = ends - starts.reshape(-1, NUM_FIELDS)
    label_byte = buf[ends[:, 0] - 1]
    label_bad = (lens[:, 0] != 1) | ((label_byte != 48) & (label_byte != 49))
    dense, dense_bad = _parse_ints(buf, ends[:, 1:14].ravel(), lens[:, 1:14].ravel())
    keys, cat_bad = _parse_hex(buf, ends[:, 14:].ravel(), lens[:, 14:].ravel())
    row_bad = label_bad | dense_bad.reshape(-1, NUM_DENSE).any(1) | cat_bad.reshape(-1, NUM_CATEGORICAL).any(1)
    line_bad = ~count_ok
    line_bad[np.flatnonzero(count_ok)[row_bad]] = True
    examples: tuple[BadLine, ...] = ()
    if line_bad.any():
        bad_idx = np.flatnonzero(line_bad)
        shown = bad_idx[:1] if not skip else bad_idx[:_MAX_EXAMPLES]
        line_starts = np.r_[_PAD, nl_pos[:-1] + 1]
        examples = tuple(_explain(buf[line_starts[i]:nl_pos[i]].tobytes(), path, first_line + int(i))
                         for i in shown)
        if not skip:
            raise examples[0].to_error()
    good = ~row_bad
    return RawChunk(
        label=(label_byte[good] - 48).astype(np.float32),
        dense=dense.reshape(-1, NUM_DENSE)[good],
        keys=keys.reshape(-1, NUM_CATEGORICAL)[good],
        missing=lens[good, 14:] == 0,
        bad_count=int(line_bad.sum()),
        bad=examples,
    )


def _iter_blocks(stream: SourceStream, path: str, block_bytes: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first line number, padded uint8 block of whole lines)."""
    carry, line_no = b"", 1
    while True:
        try:
            data = stream.read(block_bytes)
        except DataFormatError as e:
            raise DataFormatError(_CORRUPT_GZIP, path=path, line=line_no + carry.count(b"\n"),
                                  expected=e.expected, found=e.found) from e
        if not data and not carry:
            return
        buf = carry + data if data else carry + b"\n"  # the last line may lack its newline
        cut = buf.rfind(b"\n") + 1
        lines = buf.count(b"\n", 0, cut)
        carry = buf[cut:]
        if len(carry) > _MAX_LINE_BYTES:
            raise DataFormatError("line too long; is this a Criteo text file?", path=path,
                                  line=line_no + lines, expected=f"lines under {_MAX_LINE_BYTES} bytes",
                                  found=f"{len(carry)}+ bytes without a newline")
        if cut:
            block = np.empty(_PAD + cut, np.uint8)
            block[:_PAD] = 0
            block[_PAD:] = np.frombuffer(buf, np.uint8, count=cut)
            yield line_no, block
            line_no += lines


def read_criteo(stream: SourceStream, *, chunk_rows: int = 65536,
                on_bad_line: str = "error") -> Iterator[RawChunk]:
    """Stream a Criteo file as :class:`RawChunk` s (keys = the hex values).

    Args:
        stream: from :func:`open_source`.
        chunk_rows: about this many lines per chunk (read as chunk_rows * 256 bytes).
        on_bad_line: ``"error"`` raises DataFormatError at the first bad line;
            ``"skip"`` drops bad lines and reports them in the chunks. A
            corrupt gzip stream is an error either way.
    Yields:
        chunks with label (n,), dense (n, 13) raw, keys (n, 26), missing (n, 26).
    """
    if on_bad_line not in ("error", "skip"):
        raise ConfigError("on_bad_line", f"expected 'error' or 'skip', found {on_bad_line!r}")
    if chunk_rows < 1:
        raise ConfigError("chunk_rows", f"expected a positive integer, found {chunk_rows}")
    path = str(stream.path)
    for first_line, block in _iter_blocks(stream, path, chunk_rows * _BYTES_PER_LINE):
        yield _parse_block(block, path, first_line, skip=on_bad_line == "skip")


def format_hex(keys: np.ndarray) -> list[str]:
    """Keys back to Criteo's 8-digit lowercase hex (for decoding vocabularies)."""
    return [f"{k:08x}" for k in np.asarray(keys, np.uint64).tolist()]
