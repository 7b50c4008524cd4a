"""The passes of ``hotpipe prepare``: read -> (count, spill) -> encode -> write, train then val.

Data flow, per input file, in bounded-memory chunks::

    file --reader--> RawChunk (label, raw dense, 64-bit keys, missing)
         --dense transform + categorical encoder--> ColumnarWriter (atomic)

With ``encoding="hash"`` this is one pass. With ``"vocab"`` the vocabulary
must be complete before the first row is encoded, so the first pass parses,
counts, and parks the parsed (still unencoded) chunks in a spill file inside
the writer's temporary directory; the second pass encodes from the spill. The
text is therefore parsed once, and the spill disappears with the temporary
directory whatever happens. The price is disk: the spill takes ~290 bytes per
Criteo row (the dataset itself 160), only while the run lasts.

Validation files (``--val``) are read after the training files, encoded with
the vocabulary fitted on the training files only (an unseen value -> the OOV
row, counted per table), and written as the sub-dataset ``DIR/val/``.

``sort_by`` keeps one float64 key per row in memory (8 bytes/row) and
permutes the written column files at the end (``ColumnarWriter.finish``).

List columns (multi-hot tables, ``Job.lists``) travel beside the one-hot keys
(``RawChunk.lists``): counted per item for the vocabulary, spilled as
lengths + keys, encoded item by item with their table's encoder, and written
as the table's bag (``ColumnarWriter.append(..., bags=)``). Lists over the
cap were already cut by the reader; the counts of cut and empty lists go to
the summary and the manifest.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from tqdm import tqdm

from hotpipe.data import writer
from hotpipe.data.columnar import ColumnarWriter, TableSpec
from hotpipe.data.encoding import (
    OOV_ROW,
    BadLine,
    EncodingSpec,
    HashEncoder,
    RawChunk,
    VocabBuilder,
    Vocabulary,
)
from hotpipe.data.manifest import VAL_DIR
from hotpipe.errors import DataFormatError

_MAX_EXAMPLES = 10
Tick = Callable[[int], Any]  # advances the progress bar by n bytes
Sources = list[dict[str, Any]]
ReadFn = Callable[[Sequence[Path], Tick, Sources], Iterator[RawChunk]]


@dataclass
class PrepareSummary:
    """What ``prepare_*`` did; :meth:`format` is what the CLI prints."""

    out: Path
    rows: int
    bad_lines: int
    bad_examples: list[BadLine]
    tables: list[str]
    cardinalities: list[int]
    missing: list[int]  # missing values per table (list tables: empty lists)
    encoding: dict[str, Any]
    source_bytes: int
    seconds: float
    val_rows: int = 0
    val_oov: list[int] | None = None  # per table: non-missing val values mapped to the OOV row
    val_values: int = 0  # non-missing val values (the OOV denominator)
    notes: list[str] = field(default_factory=list)
    truncated: dict[str, int] = field(default_factory=dict)  # list tables: lists cut at max_len

    @property
    def lines_per_s(self) -> float:
        return (self.rows + self.bad_lines + self.val_rows) / max(self.seconds, 1e-9)

    def format(self) -> str:
        enc = self.encoding
        lines = [
            f"prepared {self.out}: {self.rows:,} rows from {self.source_bytes / 1e6:,.1f} MB "
            f"in {self.seconds:.2f} s ({self.lines_per_s:,.0f} lines/s)",
            f"encoding: {enc['kind']} "
            + (f"(min_count={enc['min_count']})" if enc["kind"] == "vocab"
               else f"(buckets={enc['buckets'][0] if len(set(enc['buckets'])) == 1 else 'per table'})"),
            f"bad lines skipped: {self.bad_lines:,}",
        ]
        lines += [f"  {b.path}:{b.line or '?'}: {b.reason()}" for b in self.bad_examples]
        lines.append(f"tables ({len(self.tables)}, rows incl. OOV/missing; total {sum(self.cardinalities):,}):")
        lines.append("  " + " ".join(f"{n}={c:,}" for n, c in zip(self.tables, self.cardinalities, strict=True)))
        for name, cut in self.truncated.items():
            empty = self.missing[self.tables.index(name)]
            lines.append(f"list table {name}: {cut:,} lists truncated to max_len, {empty:,} empty")
        if self.val_rows:
            line = f"validation split: {self.val_rows:,} rows in {self.out / VAL_DIR}"
            if self.val_oov is not None:
                total = sum(self.val_oov)
                line += (f"; values unseen in training (-> OOV row): {total:,} of {self.val_values:,} "
                         f"({total / max(self.val_values, 1):.1%})")
            lines.append(line)
            if self.val_oov is not None and any(self.val_oov):
                lines.append("  OOV per table: " + " ".join(
                    f"{n}={c:,}" for n, c in zip(self.tables, self.val_oov, strict=True) if c))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


class _Tally:
    """Counts skipped lines (keeping the first few reasons), missing values per table, sort keys."""

    def __init__(self, num_tables: int, lists: Sequence[int] = ()) -> None:
        self.count = 0
        self.examples: list[BadLine] = []
        self.missing = np.zeros(num_tables, np.int64)
        self.lists = list(lists)
        self.one_hot = [t for t in range(num_tables) if t not in self.lists]
        self.truncated = np.zeros(len(self.lists), np.int64)
        self.order_keys: list[np.ndarray] = []

    def watch(self, chunks: Iterator[RawChunk]) -> Iterator[RawChunk]:
        for c in chunks:
            self.count += c.bad_count
            self.examples.extend(c.bad[: _MAX_EXAMPLES - len(self.examples)])
            self.missing[self.one_hot] += c.missing.sum(axis=0)
            for k, lc in enumerate(c.lists):
                self.missing[self.lists[k]] += int((lc.lengths == 0).sum())
                self.truncated[k] += lc.truncated
            if c.order_key is not None:
                self.order_keys.append(c.order_key)
            yield c

    def order(self) -> np.ndarray | None:
        """The stable permutation that sorts the rows by ``sort_by`` (None without one)."""
        if not self.order_keys:
            return None
        return np.argsort(np.concatenate(self.order_keys), kind="stable")

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "first": [b.to_json() for b in self.examples]}

    def check_not_all_bad(self, rows: int) -> None:
        if rows == 0 and self.count:  # skipping everything is a wrong schema/format, not data
            b = self.examples[0]
            raise DataFormatError(f"all {self.count:,} lines are malformed, nothing to write; the first",
                                  path=b.path, line=b.line, field=b.field, expected=b.expected, found=b.found)


Lists = list[tuple[np.ndarray, np.ndarray]]  # per list table: (lengths (n,), keys (V,))


class _Spill:
    """Parsed, unencoded chunks parked on disk between the two vocab passes."""

    def __init__(self, path: Path, num_dense: int, num_tables: int, num_lists: int = 0) -> None:
        self.path, self.d, self.t, self.k = path, num_dense, num_tables, num_lists
        self.sizes: list[int] = []
        self._f: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed by read() or close()

    def write(self, label: np.ndarray, dense: np.ndarray, keys: np.ndarray, missing: np.ndarray,
              lists: Lists = ()) -> None:  # type: ignore[assignment]
        for a in (label, dense, keys, missing, *(x for pair in lists for x in pair)):
            writer._write_all(self._f, np.ascontiguousarray(a).tobytes())
        self.sizes.append(label.shape[0])

    def close(self) -> None:
        self._f.close()

    def read(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Lists]]:
        """Yield (label (n,) f32, dense (n, D) f32, keys (n, T) u64, missing (n, T) bool, lists)."""
        self._f.close()
        with open(self.path, "rb") as f:
            for n in self.sizes:
                label = np.frombuffer(f.read(4 * n), np.float32)
                dense = np.frombuffer(f.read(4 * n * self.d), np.float32).reshape(n, self.d)
                keys = np.frombuffer(f.read(8 * n * self.t), np.uint64).reshape(n, self.t)
                missing = np.frombuffer(f.read(n * self.t), np.bool_).reshape(n, self.t)
                lists = []
                for _ in range(self.k):
                    lengths = np.frombuffer(f.read(8 * n), np.int64)
                    lists.append((lengths, np.frombuffer(f.read(8 * int(lengths.sum())), np.uint64)))
                yield label, dense, keys, missing, lists
        self.path.unlink()


@dataclass
class Job:
    """Everything :func:`run` needs that differs between input formats."""

    read: ReadFn
    inputs: Sequence[Path]
    tables: Sequence[str]
    dense: Sequence[str]
    dense_fn: Callable[[np.ndarray], np.ndarray]  # (n, D) f64 raw -> (n, D) f32
    total_bytes: int
    val_inputs: Sequence[Path] = ()
    extras: dict[str, Any] = field(default_factory=dict)
    strings: bool = False  # keys are fingerprints of strings (keep them for the vocab)
    notes: Callable[[], list[str]] = list  # format-specific notes, asked once everything is read
    lists: dict[int, int] = field(default_factory=dict)  # list (multi-hot) table index -> max_len

    @property
    def one_hot(self) -> list[int]:
        return [t for t in range(len(self.tables)) if t not in self.lists]


Encode = Callable[[np.ndarray, np.ndarray, Sequence[int]], np.ndarray]  # keys, missing, tables -> rows


def _bags(encode: Encode, lists: Sequence[int], raw: Lists) -> Lists:
    """Encode each list table's items with its table's encoder: [(lengths, rows (V,))]."""
    out = []
    for t, (lengths, keys) in zip(lists, raw, strict=True):
        col = keys.reshape(-1, 1)
        out.append((lengths, encode(col, np.zeros(col.shape, bool), [t])[:, 0]))
    return out


def _raw_lists(c: RawChunk) -> Lists:
    return [(lc.lengths, lc.keys) for lc in c.lists]


def _bar(total: int, unit: str, desc: str, progress: bool) -> tqdm:
    return tqdm(total=total, unit=unit, unit_scale=True, desc=desc, leave=False,
                disable=not (progress and sys.stderr.isatty()))


def run(job: Job, out: str | os.PathLike[str], spec: EncodingSpec, *, progress: bool, overwrite: bool) -> PrepareSummary:
    """Read, encode and write ``job`` to ``out`` (with ``out/val`` when it has val inputs)."""
    buckets = spec.validate(len(job.tables))
    t0 = time.perf_counter()
    lists, one_hot = sorted(job.lists), job.one_hot
    tally = _Tally(len(job.tables), lists)
    sources: Sources = []
    val: dict[str, Any] = {}
    with ColumnarWriter(out, tables=None, num_dense=len(job.dense), overwrite=overwrite,
                        bags=len(lists)) as w, _bar(job.total_bytes, "B", "read", progress) as bar:
        chunks = tally.watch(job.read(job.inputs, bar.update, sources))
        encode: Encode
        if buckets is not None:
            hasher = HashEncoder(buckets)
            for c in chunks:
                w.append(c.label, job.dense_fn(c.dense), hasher.encode(c.keys, c.missing, one_hot),
                         bags=_bags(hasher.encode, lists, _raw_lists(c)))
            cards, encode = hasher.cardinalities, hasher.encode
        else:
            vocab = _vocab_passes(chunks, w, job, spec.min_count, progress)
            vocab.save(w.tmp / "vocab")
            cards, encode = vocab.cardinalities, vocab.encode
        tally.check_not_all_bad(w.rows)
        specs = [TableSpec(n, c, job.lists.get(t, 0)) for t, (n, c) in enumerate(zip(job.tables, cards, strict=True))]
        enc_json = spec.to_manifest(len(job.tables))
        if job.val_inputs:
            val = _val_pass(job, w.tmp / VAL_DIR, specs, encode, enc_json, bar.update,
                            oov=buckets is None)
        missing = dict(zip(job.tables, tally.missing.tolist(), strict=True))
        notes = job.notes()
        extra: dict[str, Any] = {**({"val": val["manifest"]} if val else {}),
                                 **({"notes": notes} if notes else {}), **job.extras}
        w.finish(tables=specs, order=tally.order(), encoding=enc_json, sources=sources,
                 bad_lines=tally.to_json(), dense_columns=list(job.dense), missing_values=missing,
                 truncated=tally.truncated.tolist(), **extra)
    return PrepareSummary(
        out=Path(out), rows=w.rows, bad_lines=tally.count + val.get("bad", 0),
        bad_examples=(tally.examples + val.get("examples", []))[:_MAX_EXAMPLES],
        tables=list(job.tables), cardinalities=list(cards), missing=tally.missing.tolist(), encoding=enc_json,
        source_bytes=sum(int(s["bytes"]) for s in sources + val.get("sources", [])),
        seconds=time.perf_counter() - t0, val_rows=val.get("rows", 0), val_oov=val.get("oov"),
        val_values=val.get("values", 0), notes=w.notes + notes,
        truncated={job.tables[t]: int(n) for t, n in zip(lists, tally.truncated.tolist(), strict=True)})


def _val_pass(job: Job, out: Path, specs: list[TableSpec], encode: Encode,
              enc_json: dict[str, Any], tick: Tick, *, oov: bool) -> dict[str, Any]:
    """Encode the validation files with the training encoder into the sub-dataset ``out``."""
    lists, one_hot = sorted(job.lists), job.one_hot
    tally = _Tally(len(specs), lists)
    sources: Sources = []
    oov_counts = np.zeros(len(specs), np.int64)
    values = 0
    with ColumnarWriter(out, tables=specs, num_dense=len(job.dense), nested=True) as vw:
        for c in tally.watch(job.read(job.val_inputs, tick, sources)):
            sparse = encode(c.keys, c.missing, one_hot)
            bags = _bags(encode, lists, _raw_lists(c))
            if oov:
                oov_counts[one_hot] += ((sparse == OOV_ROW) & ~c.missing).sum(axis=0)
                for t, (_, rows) in zip(lists, bags, strict=True):
                    oov_counts[t] += int((rows == OOV_ROW).sum())
            values += int((~c.missing).sum()) + sum(int(rows.shape[0]) for _, rows in bags)
            vw.append(c.label, job.dense_fn(c.dense), sparse, bags=bags)
        tally.check_not_all_bad(vw.rows)
        oov_json = dict(zip([s.name for s in specs], oov_counts.tolist(), strict=True)) if oov else None
        vw.finish(order=tally.order(), encoding={**enc_json, "dir": f"../{enc_json['dir']}"}
                  if "dir" in enc_json else enc_json, sources=sources, bad_lines=tally.to_json(),
                  dense_columns=list(job.dense), split="val", oov_values=oov_json,
                  truncated=tally.truncated.tolist(), **job.extras)
    manifest = {"dir": VAL_DIR, "rows": vw.rows, "fingerprint": vw.manifest["fingerprint"], "oov": oov_json,
                "values": values, "sources": [s["path"] for s in sources]}
    return {"manifest": manifest, "rows": vw.rows, "oov": oov_counts.tolist() if oov else None,
            "values": values, "bad": tally.count, "examples": tally.examples, "sources": sources}


def _vocab_passes(chunks: Iterator[RawChunk], w: ColumnarWriter, job: Job, min_count: int,
                  progress: bool) -> Vocabulary:
    """Pass 1: count + spill; build the vocabulary; pass 2: encode the spill into ``w``."""
    lists, one_hot = sorted(job.lists), job.one_hot
    builder = VocabBuilder(job.tables)
    spill = _Spill(w.tmp / "_spill.bin", len(job.dense), len(one_hot), len(lists))
    try:
        for c in chunks:
            builder.update(c.keys, c.missing, c.names if job.strings else None, tables=one_hot)
            for t, lc in zip(lists, c.lists, strict=True):  # every item counts
                col = lc.keys.reshape(-1, 1)
                names = (lc.names,) if job.strings and lc.names is not None else None
                builder.update(col, np.zeros(col.shape, bool), names, tables=[t])  # type: ignore[arg-type]
            spill.write(c.label, job.dense_fn(c.dense), c.keys, c.missing, _raw_lists(c))
    finally:
        spill.close()
    vocab = builder.build(min_count)
    with _bar(sum(spill.sizes), "rows", "encode", progress) as bar:
        for label, dense, keys, missing, raw in spill.read():
            w.append(label, dense, vocab.encode(keys, missing, one_hot), bags=_bags(vocab.encode, lists, raw))
            bar.update(label.shape[0])
    return vocab
