"""Client datasets: digits (bundled, Dirichlet label split) and LEAF samples.

Every loader returns one :class:`ClientData` per client with its own train
and test split; evaluation pools the clients' test sets. The LEAF files are
research-use data kept outside the repository (``../shared/data/leaf_samples``);
see its SOURCE.txt.

    digits       sklearn's 1,797 8x8 digits, labels split over clients by a
                 Dirichlet(alpha) draw, each client 80/20 train/test (seeded)
    femnist      one client per LEAF test shard file (5-6 writers each); each
                 writer's samples split 80/20 (seeded) — only test shards
                 exist upstream, so this split is ours
    shakespeare  one client per speaking role; train/test as in LEAF, capped
                 per client (seeded subsample) so a round fits a small CPU
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hotpipe.errors import ConfigError, DataFormatError

# LEAF's Shakespeare vocabulary, index = class id (80 characters)
LEAF_CHARS = ("\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ"
              "[]abcdefghijklmnopqrstuvwxyz}")


@dataclass(frozen=True)
class ClientData:
    """One client's data. Shapes: x_* (N, ...) float32 or int64, y_* (N,) int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def default_data_dir() -> Path:
    """``<repo>/../shared/data``: where the shared LEAF samples live."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _split(n: int, rng: np.random.Generator, test_frac: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    perm = rng.permutation(n)
    n_test = max(1, round(n * test_frac)) if n > 1 else 0
    return perm[n_test:], perm[:n_test]


def load_digits_clients(n_clients: int, seed: int, alpha: float = 0.5) -> list[ClientData]:
    """Digits split over ``n_clients`` by a Dirichlet(``alpha``) label draw (non-IID)."""
    from sklearn.datasets import load_digits  # heavy import, only when used

    if n_clients < 1:
        raise ConfigError("clients", f"expected >= 1, got {n_clients}")
    if not alpha > 0:
        raise ConfigError("alpha", f"expected > 0, got {alpha}")
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)  # (1797, 64) in [0, 1]
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    for _ in range(100):  # redraw until every client has enough to split
        parts: list[list[int]] = [[] for _ in range(n_clients)]
        for c in range(10):
            idx = rng.permutation(np.flatnonzero(y == c))
            cuts = (np.cumsum(rng.dirichlet([alpha] * n_clients)) * len(idx)).astype(int)[:-1]
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= 10:
            break
    else:
        raise ConfigError("clients", f"{n_clients} clients leave some with < 10 digits")
    out = []
    for p in parts:
        idx = np.array(sorted(p))
        tr, te = _split(len(idx), rng)
        out.append(_client(x[idx[tr]], y[idx[tr]], x[idx[te]], y[idx[te]]))
    return out


def _client(xtr: Any, ytr: Any, xte: Any, yte: Any) -> ClientData:
    return ClientData(torch.as_tensor(xtr), torch.as_tensor(ytr, dtype=torch.long),
                      torch.as_tensor(xte), torch.as_tensor(yte, dtype=torch.long))


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataFormatError("file not found (see leaf_samples/SOURCE.txt)", path=str(path))
    try:
        with path.open() as f:
            obj = json.load(f)
    except json.JSONDecodeError as e:
        raise DataFormatError(f"not valid JSON: {e.msg}", path=str(path), line=e.lineno) from e
    if not isinstance(obj, dict):
        raise DataFormatError("expected a JSON object", path=str(path), found=type(obj).__name__)
    return obj


def _field(obj: dict[str, Any], key: str, path: Path) -> Any:
    if key not in obj:
        raise DataFormatError("missing key", path=str(path), field=key,
                              expected="present", found=",".join(sorted(obj))[:80])
    return obj[key]


def load_femnist_clients(n_clients: int, seed: int, data_dir: Path | None = None) -> list[ClientData]:
    """FEMNIST: client k reads ``femnist_test/{k}_test.json``; x (N, 1, 28, 28), ink = 1."""
    root = (data_dir or default_data_dir()) / "leaf_samples" / "femnist_test"
    if not 1 <= n_clients <= 5:
        raise ConfigError("clients", f"femnist has 5 shard files, asked for {n_clients} clients")
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_clients):
        path = root / f"{k}_test.json"
        obj = _read_json(path)
        users = _field(obj, "user_data", path)
        parts: dict[str, list[Any]] = {"xtr": [], "ytr": [], "xte": [], "yte": []}
        for w in sorted(users):
            xs = np.asarray(_field(users[w], "x", path), dtype=np.float32)
            ys = np.asarray(_field(users[w], "y", path), dtype=np.int64)
            if xs.ndim != 2 or xs.shape[1] != 784 or len(xs) != len(ys):
                raise DataFormatError("writer data has the wrong shape", path=str(path),
                                      field=f"user_data.{w}.x", expected="(N, 784) with N labels",
                                      found=f"{xs.shape}, {len(ys)} labels")
            if len(ys) and (ys.min() < 0 or ys.max() > 61):
                raise DataFormatError("label out of range", path=str(path),
                                      field=f"user_data.{w}.y", expected="0..61",
                                      found=f"{ys.min()}..{ys.max()}")
            tr, te = _split(len(ys), rng)  # per writer: every writer is seen in train and test
            parts["xtr"].append(xs[tr])
            parts["ytr"].append(ys[tr])
            parts["xte"].append(xs[te])
            parts["yte"].append(ys[te])
        cat = {k2: np.concatenate(v) for k2, v in parts.items()}
        # files store 1.0 = background; flip so ink is the non-zero signal
        out.append(_client((1.0 - cat["xtr"]).reshape(-1, 1, 28, 28), cat["ytr"],
                           (1.0 - cat["xte"]).reshape(-1, 1, 28, 28), cat["yte"]))
    return out


def _encode(strings: list[str], path: Path, key: str) -> np.ndarray:
    lut = {c: i for i, c in enumerate(LEAF_CHARS)}
    try:
        return np.array([[lut[c] for c in s] for s in strings], dtype=np.int64)
    except KeyError as e:
        raise DataFormatError("character outside the LEAF vocabulary", path=str(path),
                              field=key, expected="one of the 80 LEAF characters",
                              found=str(e.args[0])) from e
    except ValueError as e:  # ragged rows
        raise DataFormatError("sequences of different lengths", path=str(path), field=key) from e


def load_shakespeare_clients(n_clients: int, seed: int, data_dir: Path | None = None,
                             max_train: int | None = 400,
                             max_test: int | None = 200) -> list[ClientData]:
    """Shakespeare: x (N, 80) char ids, y (N,) the next char; capped per client."""
    root = (data_dir or default_data_dir()) / "leaf_samples" / "shakespeare"
    if not 1 <= n_clients <= 5:
        raise ConfigError("clients", f"shakespeare has 5 roles, asked for {n_clients} clients")
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_clients):
        split = []
        for part, cap in (("train", max_train), ("test", max_test)):
            path = root / f"{k}_{part}.json"
            obj = _read_json(path)
            xs, ys = _field(obj, "x", path), _field(obj, "y", path)
            if len(xs) != len(ys):  # num_samples is unreliable upstream: trust len(x)
                raise DataFormatError("x and y differ in length", path=str(path), field="y",
                                      expected=str(len(xs)), found=str(len(ys)))
            idx = np.arange(len(xs))
            if cap is not None and cap < len(xs):
                idx = np.sort(rng.choice(len(xs), size=cap, replace=False))
            split.append((_encode([xs[i] for i in idx], path, "x"),
                          _encode([ys[i] for i in idx], path, "y")[:, 0]))
        out.append(_client(split[0][0], split[0][1], split[1][0], split[1][1]))
    return out
