"""Seeded synthetic user-behaviour logs: a multi-hot history whose content and order decide the label.

Each sample is a user scoring a target item after a list of past items
(oldest first). Items fall into ``clusters`` interest groups (item ``i``
is in cluster ``perm(i) % clusters``, a seeded permutation so clusters are not
id ranges); popularity within a cluster is Zipf(``zipf``). A user has two
interests, an *old* one and a *current* one (derived from the user id)::

    history  n ~ uniform{0 .. max_len} items (n = 0: an empty bag), item j of n
             from the current interest when j >= n - recent (the last ``recent``),
             from the old interest before that, and uniformly at random with
             probability ``noise``
    target   from the current interest, the old one or anywhere (1/3 each)
    logit    = 3 * share of the last ``recent`` items in the target's cluster
             + 1 * share of the older items in the target's cluster - 1.5
    label    ~ Bernoulli(sigmoid(logit))

so the label depends on the history, and more on its recent end than on its
length or sum (what attention with recency can use and plain sum pooling
partly cannot). Tables, in this order (``model.history_table=0``,
``model.target_table=1`` are the defaults of ``arch=tbsm``)::

    history   multi-hot, cardinality items, max_len
    item      the target item, cardinality items
    category  the target's cluster, cardinality clusters
    user      cardinality users

and ``num_dense`` dense features of pure noise. The true logit's AUC on the
labels is stored as ``teacher_auc``. Every random number comes from a Philox
stream keyed by ``(seed, block)`` over fixed blocks of 65,536 rows, so the
output depends on the seed and the sizes only.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from hotpipe.data.columnar import ColumnarWriter, TableSpec
from hotpipe.errors import ConfigError

_BLOCK = 1 << 16


@dataclass(frozen=True)
class BehaviourConfig:
    """Parameters of :func:`synthesize_behaviour` (stored in the manifest as ``synth``)."""

    rows: int
    items: int = 5000
    users: int = 2000
    clusters: int = 20
    max_len: int = 20
    recent: int = 3  # the last items, drawn from the current interest
    noise: float = 0.2  # share of history items drawn at random
    zipf: float = 1.05
    num_dense: int = 2
    seed: int = 0

    def validate(self) -> None:
        checks = [("rows", self.rows >= 1, "an integer >= 1"),
                  ("items", self.items >= self.clusters >= 2, "items >= clusters >= 2"),
                  ("users", self.users >= 1, "an integer >= 1"),
                  ("max_len", self.max_len >= 1, "an integer >= 1"),
                  ("recent", 1 <= self.recent <= self.max_len, "1 <= recent <= max_len"),
                  ("noise", 0 <= self.noise <= 1, "a number in [0, 1]"),
                  ("zipf", self.zipf >= 0, "a number >= 0"),
                  ("num_dense", self.num_dense >= 0, "an integer >= 0")]
        for key, ok, want in checks:
            if not ok:
                raise ConfigError(key, f"expected {want}, found {getattr(self, key)!r}")


class _Items:
    """Items by cluster: cluster ``c``'s k-th most popular item, and each item's cluster."""

    def __init__(self, cfg: BehaviourConfig) -> None:
        perm = np.random.Generator(np.random.Philox(key=[cfg.seed, 1 << 40])).permutation(cfg.items)
        self.cluster_of = (perm % cfg.clusters).astype(np.int64)  # (I,)
        order = np.argsort(self.cluster_of, kind="stable")
        self.sizes = np.bincount(self.cluster_of, minlength=cfg.clusters)  # (K,)
        self.first = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.members = order  # members[first[c] + k] is item k of cluster c
        ranks = np.arange(1, self.sizes.max() + 1, dtype=np.float64) ** -cfg.zipf
        self.cdf = [np.cumsum(ranks[:s]) / ranks[:s].sum() for s in self.sizes]

    def draw(self, clusters: np.ndarray, u: np.ndarray) -> np.ndarray:
        """An item of each given cluster, Zipf-popular within it: (n,) -> (n,) int64."""
        out = np.empty(clusters.shape[0], np.int64)
        for c in np.unique(clusters):
            at = clusters == c
            k = np.minimum(np.searchsorted(self.cdf[c], u[at]), self.sizes[c] - 1)
            out[at] = self.members[self.first[c] + k]
        return out


def _user_interests(cfg: BehaviourConfig) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.Generator(np.random.Philox(key=[cfg.seed, 2 << 40]))
    old = rng.integers(0, cfg.clusters, cfg.users)
    current = (old + rng.integers(1, cfg.clusters, cfg.users)) % cfg.clusters  # never the old one
    return old, current


def _block(cfg: BehaviourConfig, items: _Items, interests: tuple[np.ndarray, np.ndarray], b: int, n: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows [b * _BLOCK, b * _BLOCK + n): label, dense, one-hot (n, 3), lengths, history values, logit."""
    rng = np.random.Generator(np.random.Philox(key=[cfg.seed, b]))
    user = rng.integers(0, cfg.users, n)
    old, current = interests[0][user], interests[1][user]
    lengths = rng.integers(0, cfg.max_len + 1, n)  # (n,)
    total = int(lengths.sum())
    row = np.repeat(np.arange(n), lengths)  # (V,) the sample of each history item
    pos = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # index in its list
    recent = pos >= (lengths[row] - cfg.recent)
    cluster = np.where(recent, current[row], old[row])
    randomly = rng.random(total) < cfg.noise
    cluster = np.where(randomly, rng.integers(0, cfg.clusters, total), cluster)
    hist = items.draw(cluster, rng.random(total))
    pick = rng.integers(0, 3, n)
    t_cluster = np.where(pick == 0, current, np.where(pick == 1, old, rng.integers(0, cfg.clusters, n)))
    target = items.draw(t_cluster, rng.random(n))
    t_cluster = items.cluster_of[target]
    match = items.cluster_of[hist] == t_cluster[row]  # (V,)
    n_recent = np.bincount(row, weights=recent, minlength=n)
    n_old = lengths - n_recent
    m_recent = np.bincount(row, weights=match & recent, minlength=n)
    m_old = np.bincount(row, weights=match & ~recent, minlength=n)
    logit = (3.0 * m_recent / np.maximum(n_recent, 1) + 1.0 * m_old / np.maximum(n_old, 1) - 1.5)
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    dense = rng.standard_normal((n, cfg.num_dense)).astype(np.float32)
    one_hot = np.stack([target, t_cluster, user], axis=1)  # (n, 3): item, category, user
    return label, dense, one_hot, lengths, hist, logit


@dataclass(frozen=True)
class BehaviourSummary:
    out: Path
    cfg: BehaviourConfig
    teacher_auc: float
    positive_rate: float
    mean_length: float
    seconds: float

    def format(self) -> str:
        return (f"wrote {self.out}: {self.cfg.rows:,} behaviour samples, history of 0..{self.cfg.max_len} "
                f"items (mean {self.mean_length:.1f}), {self.cfg.items:,} items in {self.cfg.clusters} "
                f"clusters, {self.cfg.users:,} users; positive rate {self.positive_rate:.3f}, teacher AUC "
                f"{self.teacher_auc:.4f} ({self.seconds:.1f} s)")


def synthesize_behaviour(out: str | os.PathLike[str], *, overwrite: bool = False,
                         **params: int | float) -> BehaviourSummary:
    """Write a synthetic behaviour dataset (see the module docstring).

    Args:
        out: dataset directory, written atomically.
        params: :class:`BehaviourConfig` fields (``rows`` required).

    Example:
        >>> synthesize_behaviour("data/ub", rows=100_000, max_len=20).teacher_auc  # doctest: +SKIP
        0.7...
    """
    cfg = BehaviourConfig(**params)  # type: ignore[arg-type]
    cfg.validate()
    t0 = time.perf_counter()
    items, interests = _Items(cfg), _user_interests(cfg)
    specs = [TableSpec("history", cfg.items, cfg.max_len), TableSpec("item", cfg.items),
             TableSpec("category", cfg.clusters), TableSpec("user", cfg.users)]
    labels, logits, values = [], [], 0
    with ColumnarWriter(out, tables=specs, num_dense=cfg.num_dense, overwrite=overwrite) as w:
        for b, start in enumerate(range(0, cfg.rows, _BLOCK)):
            label, dense, one_hot, lengths, hist, logit = _block(cfg, items, interests, b,
                                                                 min(_BLOCK, cfg.rows - start))
            w.append(label, dense, one_hot, bags=[(lengths, hist)])
            labels.append(label)
            logits.append(logit)
            values += hist.shape[0]
        y, z = np.concatenate(labels), np.concatenate(logits)
        auc = float(roc_auc_score(y, z)) if 0 < y.sum() < y.shape[0] else float("nan")
        w.finish(source_format="synthetic-behaviour", synth=asdict(cfg), teacher_auc=auc,
                 positive_rate=float(y.mean()), sources=[], bad_lines={"count": 0, "first": []},
                 dense_columns=[f"I{j + 1}" for j in range(cfg.num_dense)],
                 encoding={"kind": "synthetic-behaviour"})
    return BehaviourSummary(Path(out), cfg, auc, float(y.mean()), values / cfg.rows, time.perf_counter() - t0)
