"""The synthetic generator: reproducible, Criteo-sized, skewed, drifting, learnable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.synth import (
    KAGGLE_CARDINALITIES,
    FeistelPermutation,
    SynthConfig,
    ZipfSampler,
    make_teacher,
    synthesize,
)
from hotpipe.errors import ConfigError

FILES = ("label.bin", "dense.bin", "sparse.bin")


def top_share(ids: np.ndarray, card: int, frac: float = 0.01) -> float:
    """Share of lookups that go to the most popular ``frac`` of the table."""
    counts = np.sort(np.bincount(ids, minlength=card))[::-1]
    return float(counts[: max(1, int(card * frac))].sum() / counts.sum())


def test_same_seed_same_bytes_whatever_the_chunking(tmp_path: Path) -> None:
    kw = dict(rows=20_000, scale=0.01, zipf=1.1, drift=0.3, seed=5, progress=False)
    synthesize(tmp_path / "a", chunk_rows=4096, **kw)  # type: ignore[arg-type]
    synthesize(tmp_path / "b", chunk_rows=7000, **kw)  # type: ignore[arg-type]
    synthesize(tmp_path / "c", chunk_rows=4096, **{**kw, "seed": 6})  # type: ignore[arg-type]
    for f in FILES:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert (tmp_path / "a" / "sparse.bin").read_bytes() != (tmp_path / "c" / "sparse.bin").read_bytes()


def test_dataset_reads_back_with_published_cardinalities(tmp_path: Path) -> None:
    s = synthesize(tmp_path / "ds", rows=30_000, scale=0.001, num_dense=5, seed=1, progress=False)
    ds = ColumnarDataset.open(tmp_path / "ds")
    want = [max(2, round(c * 0.001)) for c in KAGGLE_CARDINALITIES]
    assert ds.cardinalities == want == s.cardinalities
    assert ds.rows == 30_000 and ds.dense.shape == (30_000, 5) and ds.sparse.shape == (30_000, 26)
    assert (ds.sparse >= 0).all() and (ds.sparse < np.array(want)).all()
    assert set(np.unique(ds.label).tolist()) == {0.0, 1.0}
    assert (ds.dense >= 0).all() and (ds.dense == 0).mean() > 0.05  # log counts, some missing
    assert ds.manifest["synth"]["seed"] == 1 and ds.manifest["source_format"] == "synthetic"


def test_full_scale_tables(tmp_path: Path) -> None:
    s = synthesize(tmp_path / "ds", rows=20_000, scale=1.0, seed=2, progress=False)
    assert s.cardinalities == list(KAGGLE_CARDINALITIES)
    ds = ColumnarDataset.open(tmp_path / "ds")
    assert ds.sparse[:, 2].max() < 10131227 and ds.sparse[:, 2].max() > 10131227 // 4


@pytest.mark.slow
def test_skew_increases_with_the_zipf_exponent(tmp_path: Path) -> None:
    shares = []
    for a in (0.6, 1.0, 1.4):
        synthesize(tmp_path / f"z{a}", rows=50_000, scale=1.0, zipf=a, seed=3, progress=False)
        ds = ColumnarDataset.open(tmp_path / f"z{a}")
        shares.append(top_share(np.asarray(ds.sparse[:, 6]), 12517))  # C7: 12,517 rows
    assert shares[0] < shares[1] < shares[2]
    assert shares[2] > 0.8


def test_hot_rows_are_scattered_not_a_prefix(tmp_path: Path) -> None:
    synthesize(tmp_path / "ds", rows=50_000, scale=1.0, zipf=1.2, seed=4, progress=False)
    ids = np.asarray(ColumnarDataset.open(tmp_path / "ds").sparse[:, 6])
    hot = np.argsort(np.bincount(ids, minlength=12517))[::-1][:100]
    assert hot.max() > 1000  # not simply rows 0..99


@pytest.mark.slow
def test_drift_moves_the_hot_set(tmp_path: Path) -> None:
    def overlap(drift: float) -> float:
        out = tmp_path / f"d{drift}"
        synthesize(out, rows=60_000, scale=0.01, zipf=1.1, drift=drift, seed=7, progress=False)
        ids = np.asarray(ColumnarDataset.open(out).sparse[:, 2])  # C3: 101,312 rows
        first, last = ids[:10_000], ids[-10_000:]
        top = [set(np.argsort(np.bincount(x, minlength=101312))[::-1][:50].tolist()) for x in (first, last)]
        return len(top[0] & top[1]) / 50

    assert overlap(0.0) > 0.6
    assert overlap(0.5) < 0.1


def test_teacher_auc_is_high_stored_and_exact_enough(tmp_path: Path) -> None:
    s = synthesize(tmp_path / "ds", rows=40_000, scale=0.01, seed=8, progress=False)
    ds = ColumnarDataset.open(tmp_path / "ds")
    assert s.teacher_auc > 0.7 and ds.manifest["teacher_auc"] == s.teacher_auc
    assert 0.2 < s.positive_rate < 0.3
    # The teacher is a pure function of the stored features; its exact AUC matches the binned one.
    teacher = make_teacher(SynthConfig(**ds.manifest["synth"]))
    logits = teacher.logits(np.asarray(ds.sparse), np.asarray(ds.dense))
    assert abs(roc_auc_score(ds.label, logits) - s.teacher_auc) < 1e-3


def test_zipf_sampler_matches_the_exact_distribution() -> None:
    card, a = 50_000, 1.05
    pmf = (np.arange(card) + 1.0) ** -a
    pmf /= pmf.sum()
    ranks = ZipfSampler(card, a).sample(np.random.default_rng(0).random(1_000_000))
    assert ranks.min() >= 0 and ranks.max() < card
    edges = [0, 1, 10, 100, 4096, 10_000, card]
    got = np.histogram(ranks, bins=edges)[0] / ranks.size
    want = np.add.reduceat(pmf, edges[:-1])
    assert np.allclose(got, want, rtol=0.02, atol=1e-3)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 5000), st.integers(0, 2**31))
def test_feistel_is_a_bijection(card: int, key: int) -> None:
    rows = FeistelPermutation(card, key)(np.arange(card))
    assert np.array_equal(np.sort(rows), np.arange(card))


@pytest.mark.parametrize("kw,key", [
    ({"rows": 0}, "rows"), ({"scale": 0.0}, "scale"), ({"zipf": -1.0}, "zipf"),
    ({"drift": float("nan")}, "drift"), ({"num_dense": -1}, "num_dense"), ({"scale": 1e4}, "scale"),
])
def test_bad_parameters_raise_config_error(tmp_path: Path, kw: dict, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        synthesize(tmp_path / "ds", **{"rows": 10, **kw}, progress=False)
    assert e.value.key == key and not (tmp_path / "ds").exists()
