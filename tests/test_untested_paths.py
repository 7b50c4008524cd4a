"""Paths no test reached before: exactness under real eviction for every policy x
backing x optimizer, resume over file backing, lookahead's ring growth, the
public API called twice, and the CLI's start-up cost."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import hotpipe
from hotpipe.config import load_config
from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.layout import TableLayout
from hotpipe.data.loader import TrainTrace
from hotpipe.plan.lookahead import LookaheadPolicy
from hotpipe.plan.planner import Planner, min_capacity
from hotpipe.plan.reference import belady_fetches, check_plans
from hotpipe.train.checkpoint import load_checkpoint
from hotpipe.train.run import train
from tests.conftest import make_dataset

BASE = ["train.progress=false", "train.log_every=5", "model.embedding_dim=4",
        "model.bottom=[8,4]", "model.top=[8,1]", "data.val_fraction=0.2", "data.batch_size=32"]
CARDS = (200, 30, 400, 60)


def _cfg(data: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(overrides=[*BASE, *extra], values={"data.path": str(data)})


def _run(data: Path, out: Path, *extra: str) -> tuple[list[float], np.ndarray, dict]:
    m = train(_cfg(data, *extra), out)
    _, records = load_checkpoint(out)
    return json.loads((out / "losses.json").read_text()), np.array(records), m


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ev") / "d", rows=1500, cards=CARDS, seed=11)


@pytest.fixture(scope="module")
def refs(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    out = tmp_path_factory.mktemp("refs")
    return {opt: _run(data, out / opt, f"optim.embedding={opt}")
            for opt in ("sgd", "rowwise_adagrad", "adagrad")}


@pytest.mark.parametrize("opt", ["sgd", "rowwise_adagrad", "adagrad"])
@pytest.mark.parametrize("backing", ["host", "file"])
# lookahead in the quick tier; every policy in the full tier (CI).
@pytest.mark.parametrize("policy", ["lookahead", *(pytest.param(p, marks=pytest.mark.slow)
                                                   for p in ("lru", "lfu", "static"))])
def test_exact_under_eviction(data: Path, refs: dict, tmp_path: Path, policy: str, backing: str,
                              opt: str) -> None:
    ref_loss, ref_rec, ref_m = refs[opt]
    trace = TrainTrace(ColumnarDataset.open(data), batch_size=32, val_fraction=0.2)
    cap = min_capacity(trace, 1) + 8 + (32 * len(CARDS) if policy == "static" else 0)
    loss, rec, m = _run(data, tmp_path / "t", f"optim.embedding={opt}", f"cache.policy={policy}",
                        f"cache.capacity={cap}", "cache.window=6", f"cache.backing={backing}")
    c = m["cache"]
    # The point of this test: rows really left the cache and came back.
    assert c["rows_written_back"] > 0 and c["rows_fetched"] > cap, c
    assert loss == ref_loss
    assert np.array_equal(rec, ref_rec)
    # Evaluation reads the same weights in the same layout: the metrics are identical too.
    assert (m["val_auc"], m["val_logloss"]) == (ref_m["val_auc"], ref_m["val_logloss"])


def test_resume_over_file_backing_is_exact(data: Path, tmp_path: Path) -> None:
    common = ["cache.policy=lookahead", "cache.capacity=0.2", "cache.window=8", "cache.backing=file"]
    full, full_rec, _ = _run(data, tmp_path / "full", *common)
    _run(data, tmp_path / "part", *common, "train.max_steps=12")
    train(_cfg(data, *common), tmp_path / "part", resume=True)  # FileBacking.load runs here
    assert json.loads((tmp_path / "part" / "losses.json").read_text()) == full
    assert np.array_equal(np.array(load_checkpoint(tmp_path / "part")[1]), full_rec)


def test_lookahead_ring_grows_past_its_first_size() -> None:
    """Windows holding > 4,096 occurrences force ``_reserve`` to grow the ring;
    the plans stay valid and fetch exactly Belady's count (full window)."""
    rng = np.random.default_rng(0)
    # ~290 distinct ids per step x a 40-step window: ~11,600 live occurrences.
    steps = [rng.integers(0, 5000, 300) for _ in range(40)]
    policy = LookaheadPolicy()
    planner = Planner(num_rows=5000, capacity=1500, window=40, depth=1, policy=policy)
    plans = list(planner.plan(steps))
    assert policy._ring.shape[0] > 4096  # noqa: SLF001 — the growth path ran
    check_plans(steps, plans, capacity=1500, depth=1)
    assert sum(p.fetch_ids.shape[0] for p in plans) == belady_fetches(steps, capacity=1500, depth=1)


def test_public_fit_can_be_called_twice(tmp_path: Path) -> None:
    """`hotpipe.fit` is not shadowed by the `hotpipe.train` subpackage after a call."""
    data = make_dataset(tmp_path / "d", rows=300, cards=(20, 9))
    a = hotpipe.fit(_cfg(data), str(tmp_path / "a"))
    b = hotpipe.fit(_cfg(data), str(tmp_path / "b"))
    assert callable(hotpipe.fit) and a["final_loss"] == b["final_loss"]
    assert "fit" in hotpipe.__all__ and all(hasattr(hotpipe, n) for n in hotpipe.__all__)


def test_table_layout_is_the_one_offset_owner() -> None:
    lay = TableLayout([3, 5, 2], ["a", "b", "c"])
    assert lay.offsets.tolist() == [0, 3, 8] and lay.num_rows == 10
    assert lay.table_of(np.array([0, 2, 3, 7, 8, 9])).tolist() == [0, 0, 1, 1, 2, 2]
    assert lay.globalize(np.array([[2, 4, 1]])).tolist() == [[2, 7, 9]]


def test_cli_starts_fast_and_imports_no_torch() -> None:
    code = ("import sys, time; t = time.perf_counter(); from hotpipe.cli import build_parser; "
            "build_parser(); print(time.perf_counter() - t, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, torch_loaded = out.stdout.split()
    assert torch_loaded == "False"
    t0 = time.perf_counter()
    bad = subprocess.run([sys.executable, "-m", "hotpipe", "train"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--data" in bad.stderr
    # Not a timing assertion on purpose (shared machine): torch not imported is the contract;
    # the numbers are printed for the record.
    print(f"parser built in {float(seconds):.3f}s; argument error in {time.perf_counter() - t0:.2f}s")


def test_a_separate_validation_file_is_what_training_validates_on(tmp_path: Path) -> None:
    """`prepare TRAIN --val VAL` datasets: all train rows train, val/ validates, and the
    trace that simulate and the cost model plan is the same set of steps."""
    from hotpipe.cli import main

    rng = np.random.default_rng(0)

    def write(path: Path, n: int) -> None:
        lines = ["label,a,b"] + [f"{int(rng.random() < 0.3)},u{rng.integers(0, 30)},i{rng.integers(0, 9)}"
                                 for _ in range(n)]
        path.write_text("\n".join(lines) + "\n")

    write(tmp_path / "train.csv", 640)
    write(tmp_path / "val.csv", 200)
    (tmp_path / "s.yaml").write_text("label: label\ncategorical: [a, b]\n")
    assert main(["prepare", str(tmp_path / "train.csv"), "--format", "csv", "--schema",
                 str(tmp_path / "s.yaml"), "--out", str(tmp_path / "d"), "--val",
                 str(tmp_path / "val.csv")]) == 0
    ds = ColumnarDataset.open(tmp_path / "d")
    assert ds.has_val
    trace = TrainTrace(ds, batch_size=32, val_fraction=0.5)  # val_fraction unused with a val file
    assert len(trace) == 640 // 32
    m = train(_cfg(tmp_path / "d", "data.val_fraction=0.5"), tmp_path / "run")
    assert m["steps"] == 20 and m["val_rows"] == 200


def test_an_id_past_its_table_is_an_error_naming_it(tmp_path: Path) -> None:
    """The loader bounds-checks every batch: an id edited in the middle of a big
    sparse.bin (past the quick checksum's first/last MiB) is still caught."""
    from hotpipe.data.loader import BatchLoader
    from hotpipe.errors import DataFormatError

    rows = 400_000  # sparse.bin 3.2 MB: row 200,000 lies outside its first and last MiB
    data = make_dataset(tmp_path / "d", rows=rows, cards=(20, 9))
    raw = np.memmap(data / "sparse.bin", dtype=np.int32, mode="r+", shape=(rows, 2))
    raw[200_000, 1] = 9  # one past table C2's last row
    raw.flush()
    del raw
    loader = BatchLoader(ColumnarDataset.open(data), batch_size=1000)
    loader.sparse_ids(0)
    with pytest.raises(DataFormatError, match="C2") as e:
        loader.sparse_ids(200)
    assert "200000" in str(e.value).replace(",", "")


def test_static_profiles_a_sample_of_the_whole_trace(tmp_path: Path) -> None:
    """FAE's hot set: a sample spread over the training data, so a bigger capacity
    keeps growing it past the rows the first 5% of steps touch (drifting data)."""
    from hotpipe.data.synth import synthesize
    from hotpipe.plan.static import StaticPolicy

    synthesize(tmp_path / "d", rows=40_000, scale=0.002, zipf=1.05, drift=0.5, seed=0, progress=False)
    trace = TrainTrace(ColumnarDataset.open(tmp_path / "d"), batch_size=256, val_fraction=0.1)
    first = set(np.unique(np.concatenate(list(trace)[: max(1, len(trace) // 20)])).tolist())
    sizes = []
    for frac in (0.05, 0.25):
        policy = StaticPolicy()
        cap = int(frac * trace.num_rows)
        plans = list(Planner(num_rows=trace.num_rows, capacity=cap, window=8, depth=1,
                             policy=policy).plan(trace))
        check_plans(list(trace), plans, capacity=cap, depth=1, demand=False)
        sizes.append(policy.hot_rows)
        # the sample reaches past the first steps: hot rows the first 5% never touched
        assert len(set(policy._hot.tolist()) - first) > 0  # noqa: SLF001
    assert sizes[1] > sizes[0]
    spread = trace.spread(10, run=2)
    assert len(spread) == 10 and np.array_equal(spread[-1], list(trace)[-1])
