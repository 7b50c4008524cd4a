"""Shared fixtures: tiny seeded datasets made on the spot."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from hotpipe.data.columnar import ColumnarWriter, TableSpec

# CI runs the property tests derandomized (HYPOTHESIS_PROFILE=ci in .ci/run): the
# same examples on every run, so main does not turn red on a draw nobody changed
# code for. Locally they explore new examples each run; a failure prints the
# example to pin with @example.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def make_dataset(path: Path, *, rows: int = 512, cards: tuple[int, ...] = (50, 7, 300, 20),
                 num_dense: int = 13, seed: int = 0, zipf: float = 1.2) -> Path:
    """A small learnable dataset: skewed ids, labels from a planted linear teacher."""
    rng = np.random.default_rng(seed)
    sparse = np.stack([np.minimum(rng.zipf(zipf + 0.3, rows) - 1, c - 1) for c in cards], axis=1)
    sparse = (sparse * 7919 + 13) % np.array(cards)  # hot rows are not simply 0..k
    dense = np.log1p(rng.exponential(3.0, (rows, num_dense))).astype(np.float32)
    w_rows = [rng.normal(0, 1.0, c) for c in cards]
    logit = sum(w[sparse[:, t]] for t, w in enumerate(w_rows)) + dense @ rng.normal(0, 0.3, num_dense)
    label = (rng.random(rows) < 1 / (1 + np.exp(-(logit - logit.mean())))).astype(np.float32)
    with ColumnarWriter(path, tables=[TableSpec(f"C{i + 1}", c) for i, c in enumerate(cards)],
                        num_dense=num_dense) as w:
        w.append(label, dense, sparse.astype(np.int32))
        w.finish(encoding={"kind": "test"}, sources=[])
    return path


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data")


@pytest.fixture
def one_thread():  # type: ignore[no-untyped-def]
    """Tiny models on one intra-op thread (more only adds contention on a shared box)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
