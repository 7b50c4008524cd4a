"""Profile a dataset's embedding accesses before training on it.

One pass over the memory-mapped sparse column (chunks of rows, in the data's
order) feeds three things:

- per-table frequency counters (:mod:`hotpipe.profile.counters`) over a
  Bernoulli sample of the rows (``sample``; all rows with ``exact``), as
  FAE's profiler does with 5 %;
- per-part counters (the data cut into ``drift_parts`` consecutive pieces)
  whose top sets show whether the hot rows drift over time;
- a :class:`~hotpipe.profile.reuse.ReuseTracker` over *all* rows, following a
  hash sample of the ids.

A second pass measures the hot sets chosen from those counts on held-out
rows (rows not counted, a bounded number of them; all rows with ``exact``):
lookup shares of the top rows per table and pooled, and FAE's "hot samples"
(every lookup hot), for every hot-set size at once
(:mod:`hotpipe.profile.hotset`).

The result is a plain JSON-ready dict; :mod:`hotpipe.profile.report` renders it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.layout import TableLayout
from hotpipe.errors import ConfigError
from hotpipe.profile.counters import ExactCounter, SketchSettings, TableCounter, make_counter
from hotpipe.profile.hotset import HotSetEvaluator, Ranker
from hotpipe.profile.reuse import ReuseTracker, summarize
from hotpipe.profile.sketch import MisraGries, _top

TOP_FRACTIONS = (0.001, 0.01, 0.1)
def row_bytes(optimizer: str, dim: int) -> int:
    """A fast-tier row's bytes, asked of the optimizer and storage stages that own them."""
    from hotpipe.model.sparse_optim import make_row_optimizer
    from hotpipe.storage.slots import record_bytes

    try:
        opt = make_row_optimizer(optimizer, lr=1.0, dim=dim)
    except ValueError as e:
        raise ConfigError("optimizer", str(e)) from None
    return record_bytes(dim, opt)


@dataclass(frozen=True)
class ProfileSettings:
    """What to measure and how hard to try.

    Attributes:
        exact: count every row exactly (``np.bincount`` per table).
        sample: fraction of rows counted when not exact (FAE uses 5 %).
        batch_size: rows per training step, for reuse distances in steps.
        dim, optimizer: size a fast-tier row (weights + optimizer state), as
            training does; the defaults are the run config's.
        budgets: fast-tier byte budgets to report the hot set for.
        sketch: per-table sketch sizes (tables with fewer rows than the
            sketch has counters are counted exactly anyway).
        reuse_ids: distinct ids followed per table for reuse distances.
        drift_parts: consecutive pieces of the data compared for drift.
        drift_top: the top set compared is ``min(1 % of rows, drift_top)``
            rows per table: bounded so per-part summaries stay small.
        hot_rows: held-out rows the hot sets are measured on when sampling.
        chunk_rows: rows read per chunk (bounds memory).
        seed: row sampling and sketch hashing.
    """

    exact: bool = False
    sample: float = 0.05
    batch_size: int = 2048
    dim: int = 16  # = ModelConfig.embedding_dim's default: "64 KiB" means what training means
    optimizer: str = "rowwise_adagrad"
    budgets: tuple[int, ...] = (64 << 20, 1 << 30)
    sketch: SketchSettings = field(default_factory=SketchSettings)
    reuse_ids: int = 4096
    drift_parts: int = 10
    drift_top: int = 10_000
    hot_rows: int = 1 << 18
    chunk_rows: int = 1 << 16
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.sample <= 1.0:
            raise ConfigError("sample", f"expected a fraction in (0, 1], found {self.sample}")
        for key in ("batch_size", "dim", "drift_parts", "drift_top", "hot_rows", "chunk_rows", "reuse_ids"):
            if getattr(self, key) < 1:
                raise ConfigError(key, f"expected a positive integer, found {getattr(self, key)}")
        if any(b <= 0 for b in self.budgets):
            raise ConfigError("budget", f"expected positive byte sizes, found {list(self.budgets)}")
        row_bytes(self.optimizer, self.dim)

    @property
    def bytes_per_row(self) -> int:
        return row_bytes(self.optimizer, self.dim)


def _drift_counter(card: int, top: int) -> ExactCounter | MisraGries:
    # Small tables exactly; big ones with a summary 4x the compared top set.
    return ExactCounter(card) if card <= 1 << 16 else MisraGries(4 * top)


def _top_of(counter: ExactCounter | MisraGries, k: int) -> np.ndarray:
    ids, counts = counter.top(k)
    return ids[counts > 0]


def _jaccard(a: np.ndarray, b: np.ndarray) -> float | None:
    union = np.union1d(a, b).shape[0]
    return float(np.intersect1d(a, b).shape[0] / union) if union else None


class _Pass:
    """State of the counting pass (the mutable part of :func:`profile_dataset`)."""

    def __init__(self, ds: ColumnarDataset, s: ProfileSettings) -> None:
        self.ds, self.s = ds, s
        cards = ds.cardinalities
        self.counters: list[TableCounter] = [
            make_counter(c, exact=s.exact, settings=s.sketch, seed=s.seed + t) for t, c in enumerate(cards)]
        self.drift_k = [max(1, min(math.ceil(0.01 * c), s.drift_top)) for c in cards]
        self.parts = [[_drift_counter(c, k) for _ in range(s.drift_parts)]
                      for c, k in zip(cards, self.drift_k, strict=True)]
        self.reuse = ReuseTracker(cards, batch_size=s.batch_size, ids_per_table=s.reuse_ids)
        self.rng = np.random.default_rng(s.seed)
        # Held-out rows for the hot-set pass: their indices (bounded by hot_rows),
        # or None when every row is counted (then every row is measured too).
        self.held: list[np.ndarray] | None = None if s.exact or s.sample >= 1.0 else []
        rest = max(1.0, (1.0 - s.sample) * ds.rows)
        self.held_p = min(1.0, s.hot_rows / rest)

    def run(self) -> None:
        n, step = self.ds.rows, self.s.chunk_rows
        for r0 in range(0, n, step):
            chunk = np.asarray(self.ds.sparse[r0:r0 + step])  # (c, T) int32
            self.reuse.update(chunk, r0)
            mask: np.ndarray | None = None
            if not self.s.exact:
                mask = np.asarray(self.rng.random(chunk.shape[0]) < self.s.sample)
            rows = chunk if mask is None else chunk[mask]
            for t, counter in enumerate(self.counters):
                counter.update(rows[:, t])
            self._parts(chunk, r0, mask)
            if mask is not None and self.held is not None:  # rows not counted, about hot_rows in all
                keep = ~mask & (self.rng.random(chunk.shape[0]) < self.held_p)
                self.held.append(r0 + np.flatnonzero(keep))

    def _parts(self, chunk: np.ndarray, r0: int, mask: np.ndarray | None) -> None:
        rows = r0 + np.arange(chunk.shape[0], dtype=np.int64)
        part = rows * self.s.drift_parts // max(self.ds.rows, 1)  # (c,)
        if mask is not None:
            chunk, part = chunk[mask], part[mask]
        for p in np.unique(part):
            sel = chunk[part == p]
            for t in range(chunk.shape[1]):
                self.parts[t][int(p)].update(sel[:, t])

    def evaluate(self, ev: HotSetEvaluator) -> None:
        step = self.s.chunk_rows
        if self.held is None:
            for r0 in range(0, self.ds.rows, step):
                ev.update(np.asarray(self.ds.sparse[r0:r0 + step]))
            return
        rows = np.concatenate(self.held) if self.held else np.empty(0, np.int64)
        for i in range(0, rows.shape[0], step):
            ev.update(np.asarray(self.ds.sparse[rows[i:i + step]]))  # reads only those rows' pages


def _seen_order(counter: TableCounter, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A table's top ``k`` rows that were counted at least once, descending."""
    ids, counts = counter.top(k)
    keep = counts > 0
    return ids[keep], counts[keep]


def _log_points(n: int, points: int) -> np.ndarray:
    return np.unique(np.geomspace(1, max(n, 1), points).astype(np.int64))


def _table_stats(name: str, card: int, counter: TableCounter, ev: HotSetEvaluator, t: int,
                 cdf_rows: np.ndarray, reuse: tuple[np.ndarray, float],
                 drift: list[float | None]) -> dict[str, Any]:
    top_rows = {f"{f:.1%}": math.ceil(f * card) for f in TOP_FRACTIONS}
    out: dict[str, Any] = {
        "name": name,
        "cardinality": card,
        "lookups_counted": counter.total,
        "lookups_evaluated": int(ev.table_lookups[t]),
        "counting": "exact" if isinstance(counter, ExactCounter) else "sketch",
        "top_rows": top_rows,
        "top_share": {p: ev.table_share(t, k) for p, k in top_rows.items()},
        # False where the sketch cannot name that many rows with certainty.
        "top_share_certain": {p: k <= counter.known() for p, k in top_rows.items()},
        "cdf": {"rows": cdf_rows.tolist(), "share": [ev.table_share(t, int(k)) for k in cdf_rows]},
        "reuse": summarize(*reuse),
        "drift_jaccard": drift,
    }
    if isinstance(counter, ExactCounter):
        out["rows_seen"] = int(np.count_nonzero(counter.counts))
        out["rows_seen_once"] = int(np.count_nonzero(counter.counts == 1))
    return out


def profile_dataset(path: str | os.PathLike[str], settings: ProfileSettings | None = None) -> dict[str, Any]:
    """Profile the embedding accesses of a columnar dataset.

    Args:
        path: a dataset directory (``hotpipe prepare`` / ``ColumnarWriter``).
        settings: what to measure; defaults to :class:`ProfileSettings`.

    Returns:
        A JSON-ready dict: ``dataset``, ``settings``, ``tables`` (one dict per
        table) and ``overall`` (pooled shares, hot set per budget, hot-set
        curve, reuse, drift). Shares are measured on held-out rows (all rows
        when exact); counts are of the counted rows.
    """
    s = settings or ProfileSettings()
    t0 = time.perf_counter()
    ds = ColumnarDataset.open(path)
    if ds.multi_hot:  # the pass counts a (N, T) id matrix; bags are not read yet
        bags = ", ".join(t.name for t in ds.tables if t.multi_hot)
        raise ConfigError("data.path", f"hotpipe profile reads one-hot tables only; {path} has "
                                       f"list (multi-hot) tables ({bags})")
    cards = ds.cardinalities
    offsets = TableLayout(cards).offsets
    total_rows = int(sum(cards))
    state = _Pass(ds, s)
    state.run()

    # Rank rows by their counts, per table and pooled, then measure on held-out rows.
    orders = [_seen_order(c, card) for c, card in zip(state.counters, cards, strict=True)]
    pooled_ids, _ = _top(np.concatenate([o[0] + offsets[t] for t, o in enumerate(orders)]),
                         np.concatenate([o[1] for o in orders]), total_rows)
    top_k = {f"{f:.1%}": math.ceil(f * total_rows) for f in TOP_FRACTIONS}
    budget_rows = [b // s.bytes_per_row for b in s.budgets]
    curve = _log_points(total_rows, 48)
    cdf_rows = [_log_points(c, 64) for c in cards]
    ev = HotSetEvaluator(
        [Ranker(o[0], c) for o, c in zip(orders, cards, strict=True)],
        [np.unique(np.concatenate([r, [math.ceil(f * c) for f in TOP_FRACTIONS]])).astype(np.int64)
         for r, c in zip(cdf_rows, cards, strict=True)],
        Ranker(pooled_ids, total_rows),
        np.unique(np.concatenate([curve, list(top_k.values()), budget_rows])).astype(np.int64),
        offsets)
    state.evaluate(ev)

    hist, cold = state.reuse.estimated()  # (T, bins), (T,)
    drift = [[_jaccard(_top_of(parts[0], k), _top_of(p, k)) for p in parts]
             for parts, k in zip(state.parts, state.drift_k, strict=True)]
    tables = [_table_stats(t.name, t.cardinality, c, ev, i, cdf_rows[i], (hist[i], float(cold[i])), drift[i])
              for i, (t, c) in enumerate(zip(ds.tables, state.counters, strict=True))]
    known = sum(c.known() for c in state.counters)

    def hot(rows: int) -> dict[str, Any]:
        look, samples = ev.pooled_share(rows)
        return {"rows": int(rows), "bytes": int(rows) * s.bytes_per_row, "lookup_share": look,
                "hot_samples": samples, "certain": min(rows, total_rows) <= known}

    weights = np.array([c.total for c in state.counters], dtype=np.float64)
    mean_drift = [None if any(d[p] is None for d in drift) else
                  float(np.average([d[p] for d in drift], weights=weights if weights.sum() else None))
                  for p in range(s.drift_parts)]
    overall = {
        "rows": total_rows,
        "lookups_counted": int(weights.sum()),
        "samples_evaluated": ev.samples,
        "top_rows": top_k,
        "top_share_pooled": {p: ev.pooled_share(k)[0] for p, k in top_k.items()},
        "top_share_mean_over_tables": {p: float(np.mean([t["top_share"][p] for t in tables]))
                                       for p in top_k} if tables else {},
        "budgets": [{"budget_bytes": b, **hot(k)} for b, k in zip(s.budgets, budget_rows, strict=True)],
        "hot_curve": [hot(int(k)) for k in curve],
        "reuse": summarize(hist.sum(axis=0), float(cold.sum())),
        "drift_jaccard_mean": mean_drift,
    }
    settings_out = asdict(s)
    settings_out["bytes_per_row"] = s.bytes_per_row
    return {
        "dataset": {"path": str(ds.path), "rows": ds.rows, "tables": len(cards)},
        "settings": settings_out,
        "tables": tables,
        "overall": overall,
        "seconds": time.perf_counter() - t0,
    }
