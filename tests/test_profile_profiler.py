"""The profiler against brute-force references, and against the real Criteo sample's SOURCE.txt."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from hotpipe.data.columnar import ColumnarDataset, ColumnarWriter, TableSpec
from hotpipe.errors import ConfigError
from hotpipe.profile.counters import SketchSettings
from hotpipe.profile.profiler import ProfileSettings, profile_dataset
from hotpipe.profile.reuse import NUM_BINS, ReuseTracker
from tests.conftest import SHARED_DATA, make_dataset

CRITEO_8K = SHARED_DATA / "criteo_samples" / "criteo_lapishong_8k.txt"


def _order(counts: np.ndarray) -> np.ndarray:
    """Ids with count > 0 by (-count, id): the profiler's tie-break."""
    ids = np.flatnonzero(counts)
    return ids[np.lexsort((ids, -counts[ids]))]


def test_exact_profile_matches_brute_force(tmp_path: Path):
    data = make_dataset(tmp_path / "d", rows=3000, cards=(50, 7, 300, 20), seed=1)
    ds = ColumnarDataset.open(data)
    sparse = np.asarray(ds.sparse, dtype=np.int64)
    cards = ds.cardinalities
    offsets = np.cumsum([0, *cards])[:-1]
    bpr = (8 + 1) * 4
    s = ProfileSettings(exact=True, batch_size=64, dim=8, budgets=(10 * bpr, 100 * bpr), chunk_rows=700)
    prof = profile_dataset(data, s)

    for t, tab in enumerate(prof["tables"]):
        counts = np.bincount(sparse[:, t], minlength=cards[t])
        desc = np.sort(counts)[::-1]
        for p, f in (("0.1%", 0.001), ("1.0%", 0.01), ("10.0%", 0.1)):
            assert tab["top_share"][p] == pytest.approx(desc[: math.ceil(f * cards[t])].sum() / len(sparse))
        assert tab["rows_seen"] == np.count_nonzero(counts)

    g = sparse + offsets
    pooled = np.bincount(g.ravel(), minlength=sum(cards))
    order = _order(pooled)
    for b in prof["overall"]["budgets"]:
        k = b["rows"]
        hot = np.zeros(sum(cards), bool)
        hot[order[:k]] = True
        assert b["lookup_share"] == pytest.approx(pooled[order[:k]].sum() / g.size)
        assert b["hot_samples"] == pytest.approx(hot[g].all(axis=1).mean())

    # Drift: exact per-part top sets (small tables are counted exactly).
    part = np.arange(len(sparse)) * 10 // len(sparse)
    for t, tab in enumerate(prof["tables"]):
        k = max(1, math.ceil(0.01 * cards[t]))
        tops = [set(_order(np.bincount(sparse[part == p, t], minlength=cards[t]))[:k].tolist())
                for p in range(10)]
        want = [len(tops[0] & x) / len(tops[0] | x) for x in tops]
        assert tab["drift_jaccard"] == pytest.approx(want)


def test_reuse_tracker_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    sparse = np.stack([rng.integers(0, 40, 500), rng.zipf(1.5, 500) % 200], axis=1)
    tr = ReuseTracker([40, 200], batch_size=7, ids_per_table=10_000)  # follows every id
    for r0 in range(0, 500, 60):
        tr.update(sparse[r0:r0 + 60], r0)
    for t in range(2):
        last: dict[int, int] = {}
        hist, cold = np.zeros(NUM_BINS, np.int64), 0
        for step in range(-(-500 // 7)):
            for i in sorted(set(sparse[step * 7:(step + 1) * 7, t].tolist())):
                if i in last:
                    hist[int(math.log2(step - last[i]))] += 1
                else:
                    cold += 1
                last[i] = step
        assert tr.hist[t].tolist() == hist.tolist()
        assert tr.cold[t] == cold


def test_sampled_and_sketched_profile_is_close_to_exact(tmp_path: Path):
    data = make_dataset(tmp_path / "d", rows=20_000, cards=(2000, 50, 5000), seed=2, zipf=1.0)
    exact = profile_dataset(data, ProfileSettings(exact=True, batch_size=256))
    approx = profile_dataset(data, ProfileSettings(sample=0.3, batch_size=256, hot_rows=5000,
                                                   sketch=SketchSettings(width_log2=6, depth=3, heavy=200)))
    assert [t["counting"] for t in approx["tables"]] == ["sketch", "exact", "sketch"]
    for e, a in zip(exact["tables"], approx["tables"], strict=True):
        assert a["top_share"]["1.0%"] == pytest.approx(e["top_share"]["1.0%"], abs=0.05)
    assert approx["overall"]["samples_evaluated"] <= 5000 * 1.2


def test_bad_settings_raise_config_errors():
    with pytest.raises(ConfigError, match="sample"):
        ProfileSettings(sample=0.0)
    with pytest.raises(ConfigError, match="optimizer"):
        ProfileSettings(optimizer="adam")


def _source_table(text: str) -> dict[str, tuple[int, float, float]]:
    """SOURCE.txt's file-1 table: field -> (cardinality, top1% share, top10% share)."""
    section = text.split("--- file 1")[1].split("--- file 2")[0]
    rows = re.findall(r"^(C\d+)\s+(\d+)\s+\S+\s+\S+\s+\d+\s+(\S+)\s+\d+\s+(\S+)\s*$", section, re.M)
    return {f: (int(c), float(a), float(b)) for f, c, a, b in rows}


def _criteo_dataset(src: Path, out: Path) -> Path:
    """Each field's distinct values (missing counted as one value) as dense local ids."""
    from hotpipe.data.criteo import open_source, read_criteo

    with open_source(src) as stream:
        chunks = list(read_criteo(stream))
    keys = np.concatenate([c.keys for c in chunks])
    missing = np.concatenate([c.missing for c in chunks])
    keys = np.where(missing, np.uint64(1 << 40), keys)  # beyond any 32-bit hash
    sparse = np.stack([np.unique(keys[:, t], return_inverse=True)[1] for t in range(keys.shape[1])], 1)
    cards = [int(sparse[:, t].max()) + 1 for t in range(sparse.shape[1])]
    label = np.concatenate([c.label for c in chunks])
    with ColumnarWriter(out, tables=[TableSpec(f"C{t + 1}", c) for t, c in enumerate(cards)],
                        num_dense=0) as w:
        w.append(label, np.zeros((len(label), 0), np.float32), sparse.astype(np.int32))
        w.finish(encoding={"kind": "test-dense-rank"}, sources=[])
    return out


@pytest.mark.realdata
@pytest.mark.skipif(not CRITEO_8K.is_file(), reason="../shared/data is absent")
def test_exact_profile_of_real_criteo_matches_source_txt(tmp_path: Path):
    want = _source_table((CRITEO_8K.parent / "SOURCE.txt").read_text())
    assert len(want) == 26
    data = _criteo_dataset(CRITEO_8K, tmp_path / "criteo")
    prof = profile_dataset(data, ProfileSettings(exact=True))
    for tab in prof["tables"]:
        card, top1, top10 = want[tab["name"]]
        assert tab["cardinality"] == card
        assert round(tab["top_share"]["1.0%"], 4) == top1, tab["name"]
        assert round(tab["top_share"]["10.0%"], 4) == top10, tab["name"]
    o = prof["overall"]
    assert o["rows"] == 37100
    assert round(o["top_share_pooled"]["1.0%"], 4) == 0.6219
    assert round(o["top_share_pooled"]["10.0%"], 4) == 0.7879
    assert round(o["top_share_mean_over_tables"]["1.0%"], 4) == 0.4372
    assert round(o["top_share_mean_over_tables"]["10.0%"], 4) == 0.6594
    assert sum(t["rows_seen_once"] for t in prof["tables"]) == 26312
