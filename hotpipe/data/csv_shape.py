"""The shape of a CSV file before pyarrow reads it, and the error-path rescan after.

* :func:`layout`: the delimiter (named, or sniffed from the first lines), the
  column names (the header line, or the schema's ``columns``) and the line
  number of the first data row; a line that splits into one column gets a
  hint naming the delimiter it does contain.
* :class:`LineCounter`: counts non-empty lines as pyarrow reads them, because
  an unclosed quote makes pyarrow swallow line ends silently (fewer rows
  than lines is the symptom).
* :func:`diagnose`: re-reads the file line by line to name the first line
  that does not decode, opens a quote it never closes, or has the wrong
  number of columns. Only run when something is already wrong.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from hotpipe.data.schema import AUTO_CANDIDATES, NAMED_DELIMITERS, TabularSchema
from hotpipe.errors import DataFormatError

_SNIFF_LINES = 20
_DELIM_NAMES = {v: k for k, v in NAMED_DELIMITERS.items()}


def _open_bytes(path: Path) -> BinaryIO:
    with open(path, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if compressed else open(path, "rb")  # type: ignore[return-value]  # noqa: SIM115


def ascii_compatible(encoding: str) -> bool:
    return not codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))


def _head_lines(path: Path, schema: TabularSchema) -> list[str]:
    """The first few lines after ``skip_rows``, decoded leniently (for sniffing only)."""
    with _open_bytes(path) as f:
        text = io.TextIOWrapper(f, encoding=schema.encoding, errors="replace", newline="")
        lines = []
        for i, line in enumerate(text):
            if i >= schema.skip_rows:
                lines.append(line.rstrip("\r\n").lstrip("\ufeff"))
            if len(lines) >= _SNIFF_LINES:
                break
    return lines


def sniff_delimiter(lines: list[str]) -> str:
    """The candidate (``, \\t ; |``) splitting the first lines into the same, largest
    number of fields; quotes are respected. ``,`` when nothing splits."""
    best, best_width = ",", 1
    sample = [ln for ln in lines if ln.strip()][:_SNIFF_LINES]
    for c in AUTO_CANDIDATES:
        widths = {len(next(csv.reader([ln], delimiter=c), [])) for ln in sample}
        if len(widths) == 1 and (w := widths.pop()) > best_width:
            best, best_width = c, w
    if best_width == 1 and sample:  # ragged everywhere: the most frequent candidate on line 1
        counts = {c: sample[0].count(c) for c in AUTO_CANDIDATES}
        top = max(counts, key=lambda c: counts[c])
        best = top if counts[top] else ","
    return best


def _shown(d: str) -> str:
    return _DELIM_NAMES.get(d, repr(d))


def _one_column_hint(line: str, delimiter: str) -> str:
    """When a line splits into one column: which other delimiter it contains."""
    others = [c for c in (*AUTO_CANDIDATES, " ") if c != delimiter and c in line]
    if not others:
        return ""
    return (f"; the line splits into one column with delimiter {_shown(delimiter)} but contains "
            f"{_shown(others[0])}: set `delimiter: {_DELIM_NAMES.get(others[0], others[0])}` in the schema")


def layout(path: Path, schema: TabularSchema) -> tuple[str, list[str], int]:
    """(delimiter, the file's column names, line number of the first data row)."""
    head = _head_lines(path, schema)
    delim = sniff_delimiter(head) if schema.delimiter == "auto" else schema.delimiter
    if schema.file_columns is not None:
        return delim, list(schema.file_columns), schema.skip_rows + 1
    if not head:
        raise DataFormatError("input file has no data rows", path=str(path), expected="a header line and samples",
                              found="an empty file" if schema.skip_rows == 0 else f"<= {schema.skip_rows} lines")
    header = next(csv.reader([head[0]], delimiter=delim), [])
    for c in schema.columns:
        if c not in header:
            hint = _one_column_hint(head[0], delim) if len(header) == 1 else ""
            raise DataFormatError(f"schema column {c!r} is not in the file{hint}", path=str(path),
                                  line=schema.skip_rows + 1, field=c, expected="a column of the header line",
                                  found="columns: " + ", ".join(header))
    return delim, header, schema.skip_rows + 2


class LineCounter(io.RawIOBase):
    """Passes the stream to pyarrow, counting non-empty lines (to catch an unclosed quote).

    A line is empty when its newline follows another newline directly, or
    across a ``\r`` (CRLF files); those are the lines pyarrow ignores.
    """

    def __init__(self, stream: Any) -> None:
        self._s = stream
        self.lines = 0
        self._tail = b"\n"  # the last two bytes seen; the stream starts at a line start

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self._s.read(n if n and n > 0 else 1 << 20)
        if data:
            joined = np.frombuffer(self._tail + data, np.uint8)
            nl = joined == 10
            k = len(self._tail)
            prev_nl = np.r_[False, nl[:-1]]  # byte i-1 is a newline
            cr_nl = np.r_[False, False, (joined[1:-1] == 13) & nl[:-2]]  # bytes i-2, i-1 are "\n\r"
            empty = nl & (prev_nl | cr_nl)
            self.lines += int(nl[k:].sum()) - int(empty[k:].sum())
            self._tail = (self._tail + data)[-2:]
        elif self._tail[-1:] not in (b"\n", b""):
            self.lines += 1  # a last line without its newline
            self._tail = b""
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


def diagnose(path: Path, schema: TabularSchema, delim: str, width: int, first_line: int) -> DataFormatError | None:
    """Error-path rescan: the first line that does not decode, has an unclosed quote, or is ragged."""
    if not ascii_compatible(schema.encoding):
        return None
    with _open_bytes(path) as f:
        for no, raw in enumerate(f, start=1):
            if no < first_line:
                continue
            body = raw.rstrip(b"\r\n")
            try:
                text = body.decode(schema.encoding)
            except UnicodeDecodeError as e:
                bad = body[max(e.start - 10, 0):e.end + 10]
                return DataFormatError("line is not valid text in the schema's encoding", path=str(path), line=no,
                                       field="encoding", expected=f"{schema.encoding} text (set `encoding:` in "
                                       "the schema, e.g. latin-1 or cp1252)", found=repr(bad)[:60])
            if not text.strip():
                continue
            try:
                row = next(csv.reader([text], delimiter=delim, strict=True), [])
            except csv.Error:
                return DataFormatError("unclosed quote", path=str(path), line=no, field="line",
                                       expected="quotes closed on the same line (quoted newlines are not "
                                                "supported)", found=text[:40])
            if len(row) != width:
                hint = _one_column_hint(text, delim) if len(row) == 1 else ""
                return DataFormatError("malformed line" + hint, path=str(path), line=no, field="line",
                                       expected=f"{width} columns", found=f"{len(row)} columns")
    return None
