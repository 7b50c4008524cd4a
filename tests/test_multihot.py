"""Multi-hot (bag) features end to end: format, loader, planner, pooling, feeds, training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hotpipe.config import load_config
from hotpipe.data.batch import JaggedIds
from hotpipe.data.columnar import ColumnarDataset, ColumnarWriter, TableSpec
from hotpipe.data.layout import TableLayout
from hotpipe.data.loader import BatchLoader, TrainTrace, split_loaders
from hotpipe.data.synth_behaviour import synthesize_behaviour
from hotpipe.errors import DataFormatError
from hotpipe.model.bags import JaggedRows, model_input, pool
from hotpipe.plan.planner import Planner, min_capacity
from hotpipe.train.checkpoint import load_checkpoint
from hotpipe.train.feed import global_slots
from hotpipe.train.run import train


def make_bag_dataset(path: Path, *, rows: int = 300, seed: int = 0, max_len: int = 6,
                     cards: tuple[int, ...] = (40, 9, 60), bag_tables: tuple[int, ...] = (0, 2),
                     order: np.ndarray | None = None) -> tuple[Path, dict[int, list[list[int]]], np.ndarray]:
    """Tables ``cards``, those in ``bag_tables`` multi-hot (lists of 0..max_len ids, some empty).
    Returns the path, each table's per-row lists as written, and the one-hot ids (rows, T1)."""
    rng = np.random.default_rng(seed)
    lists: dict[int, list[list[int]]] = {}
    one_hot_cols = []
    for t, c in enumerate(cards):
        if t in bag_tables:
            lens = rng.integers(0, max_len + 1, rows)
            lists[t] = [list(np.minimum(rng.zipf(1.4, n) - 1, c - 1)) for n in lens]
        else:
            one_hot_cols.append(np.minimum(rng.zipf(1.3, rows) - 1, c - 1))
    one_hot = np.stack(one_hot_cols, axis=1).astype(np.int32) if one_hot_cols else np.zeros((rows, 0), np.int32)
    dense = rng.normal(size=(rows, 3)).astype(np.float32)
    label = (rng.random(rows) < 0.4).astype(np.float32)
    specs = [TableSpec(f"C{t + 1}", c, max_len if t in bag_tables else 0) for t, c in enumerate(cards)]
    with ColumnarWriter(path, tables=specs, num_dense=3) as w:
        half = rows // 2
        for lo, hi in ((0, half), (half, rows)):  # two chunks: offsets continue across appends
            bags = [(np.array([len(x) for x in lists[t][lo:hi]]),
                     np.array([i for x in lists[t][lo:hi] for i in x], np.int64)) for t in sorted(lists)]
            w.append(label[lo:hi], dense[lo:hi], one_hot[lo:hi], bags=bags)
        w.finish(order=order, encoding={"kind": "test"}, sources=[])
    if order is not None:
        lists = {t: [v[i] for i in order] for t, v in lists.items()}
        one_hot = one_hot[order]
    return path, lists, one_hot


def _ids_of(ds_lists: dict[int, list[list[int]]], one_hot: np.ndarray, cards: tuple[int, ...],
            row: int) -> list[list[int]]:
    """Brute force: the local ids of every table for one row."""
    out, col = [], 0
    for t in range(len(cards)):
        if t in ds_lists:
            out.append(list(ds_lists[t][row]))
        else:
            out.append([int(one_hot[row, col])])
            col += 1
    return out


# ------------------------------------------------------------------ format + loader


def test_round_trip_and_jagged_batches_match_brute_force(tmp_path):
    cards = (40, 9, 60)
    path, lists, one_hot = make_bag_dataset(tmp_path / "d", cards=cards)
    ds = ColumnarDataset.open(path)
    ds.verify()
    assert ds.multi_hot and ds.one_hot == [1] and sorted(ds.bags) == [0, 2]
    assert ds.tables[0].max_len == 6 and ds.manifest["tables"][0]["bag"]["empty"] > 0
    loader = BatchLoader(ds, batch_size=32)
    for step in (0, 3, len(loader) - 1):  # the last batch is short
        batch = loader.batch(step)
        sp = batch.sparse
        assert isinstance(sp, JaggedIds)
        b = sp.batch_size
        rows = range(step * 32, step * 32 + b)
        for t in range(len(cards)):
            for i, r in enumerate(rows):
                lo, hi = int(sp.offsets[t * b + i]), int(sp.offsets[t * b + i + 1])
                assert sp.values[lo:hi].tolist() == _ids_of(lists, one_hot, cards, r)[t]
    with pytest.raises(ValueError, match="multi-hot"):
        loader.sparse_ids(0)


class _Shuffled(BatchLoader):
    """A reordering loader (as schedule.py's): each step reads an index array of rows."""

    def __init__(self, ds: ColumnarDataset, order: np.ndarray) -> None:
        super().__init__(ds, batch_size=20, drop_last=True)
        self.order = order

    def rows(self, step: int) -> np.ndarray:  # type: ignore[override]
        return self.order[step * 20:(step + 1) * 20]


def test_a_reordering_loader_gathers_each_rows_lists(tmp_path):
    cards = (40, 9, 60)
    path, lists, one_hot = make_bag_dataset(tmp_path / "d", cards=cards)
    order = np.random.default_rng(2).permutation(300)
    loader = _Shuffled(ColumnarDataset.open(path), order)
    for step in (0, 7):
        sp = loader.batch(step).sparse
        assert isinstance(sp, JaggedIds)
        for t in range(3):
            for i, r in enumerate(order[step * 20:(step + 1) * 20]):
                lo, hi = int(sp.offsets[t * 20 + i]), int(sp.offsets[t * 20 + i + 1])
                assert sp.values[lo:hi].tolist() == _ids_of(lists, one_hot, cards, int(r))[t]


def test_sorted_write_reorders_the_lists_with_their_rows(tmp_path):
    cards = (40, 9, 60)
    order = np.random.default_rng(1).permutation(300)
    path, lists, one_hot = make_bag_dataset(tmp_path / "d", cards=cards, order=order)
    ds = ColumnarDataset.open(path)
    ds.verify()
    loader = BatchLoader(ds, batch_size=300)
    sp = loader.batch(0).sparse
    assert isinstance(sp, JaggedIds)
    for r in (0, 17, 299):
        for t in range(3):
            lo, hi = int(sp.offsets[t * 300 + r]), int(sp.offsets[t * 300 + r + 1])
            assert sp.values[lo:hi].tolist() == _ids_of(lists, one_hot, cards, r)[t]


def test_a_list_over_max_len_or_an_id_out_of_range_is_refused_by_the_writer(tmp_path):
    specs = [TableSpec("h", 10, 2), TableSpec("i", 5)]
    with pytest.raises(ValueError, match="max_len"), ColumnarWriter(tmp_path / "a", tables=specs, num_dense=0) as w:
        w.append(np.zeros(1, np.float32), np.zeros((1, 0), np.float32), np.zeros((1, 1), np.int32),
                 bags=[(np.array([3]), np.array([1, 2, 3]))])
        w.finish()
    with pytest.raises(DataFormatError, match="h"), ColumnarWriter(tmp_path / "b", tables=specs, num_dense=0) as w:
        w.append(np.zeros(2, np.float32), np.zeros((2, 0), np.float32), np.zeros((2, 1), np.int32),
                 bags=[(np.array([1, 1]), np.array([1, 10]))])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_damaged_list_files_are_named(tmp_path):
    path, _, _ = make_bag_dataset(tmp_path / "d")
    values = path / "bags" / "0.values.bin"
    with open(values, "ab") as f:
        f.write(b"\0\0\0\0")
    with pytest.raises(DataFormatError, match="0.values.bin"):
        ColumnarDataset.open(path)


def test_loader_catches_an_edited_id(tmp_path):
    path, _, _ = make_bag_dataset(tmp_path / "d")
    ds = ColumnarDataset.open(path, verify=False)
    arr = np.memmap(path / "bags" / "0.values.bin", np.int32, "r+")
    arr[0] = 999
    arr.flush()
    with pytest.raises(DataFormatError, match="C1"):
        BatchLoader(ds, batch_size=32).batch(0)


# ------------------------------------------------------------------ planner


def test_planned_rows_of_a_step_are_the_union_of_its_bags(tmp_path):
    cards = (40, 9, 60)
    path, lists, one_hot = make_bag_dataset(tmp_path / "d", cards=cards, rows=400)
    ds = ColumnarDataset.open(path)
    trace = TrainTrace(ds, batch_size=25, val_fraction=0.0)
    offsets = TableLayout.of(ds).offsets
    planner = Planner(num_rows=sum(cards), capacity=80, window=4, depth=1)
    plans = list(planner.plan(trace))
    assert len(plans) == 16
    for s, plan in enumerate(plans):
        want = {int(offsets[t]) + i for r in range(s * 25, s * 25 + 25)
                for t, ids in enumerate(_ids_of(lists, one_hot, cards, r)) for i in ids}
        assert set(plan.unique_ids.tolist()) == want
        # every lookup of every bag got the slot of its row
        batch = trace.loader.batch(s)
        gids = global_slots(batch, torch.from_numpy(offsets)).numpy().reshape(-1)
        slot_of = dict(zip(plan.unique_ids.tolist(), plan.unique_slots.tolist(), strict=True))
        assert plan.lookup_slots.reshape(-1).tolist() == [slot_of[g] for g in gids.tolist()]


# ------------------------------------------------------------------ pooling


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_pooling_equals_embedding_bag_on_a_dense_table(mode):
    torch.manual_seed(0)
    num_rows, d, b, t = 50, 8, 7, 3
    lengths = torch.tensor([0, 3, 1, 4, 0, 2, 5, 1, 1, 0, 2, 3, 6, 1, 2, 0, 1, 1, 2, 3, 4])  # T*B, empty bags
    values = torch.randint(0, num_rows, (int(lengths.sum()),))
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    table = torch.randn(num_rows, d)
    ref_bag = nn.EmbeddingBag(num_rows, d, mode=mode, _weight=table.clone())
    ref = ref_bag(values, offsets[:-1]).view(t, b, d).transpose(0, 1)  # (B, T, D)
    emb = table.index_select(0, values).view(1, -1, d).requires_grad_(True)  # what the lookup gives
    got = pool(model_input(emb, JaggedIds(values, offsets, t)), mode)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
    assert torch.equal(got[0, 0], torch.zeros(d))  # an empty bag pools to zeros
    # Per-id gradients, summed per row, are nn.EmbeddingBag's table gradient.
    g = torch.randn(b, t, d)
    (got * g).sum().backward()
    (ref * g).sum().backward()
    per_row = torch.zeros(num_rows, d).index_add_(0, values, emb.grad.view(-1, d))
    torch.testing.assert_close(per_row, ref_bag.weight.grad, atol=1e-6, rtol=0)


def test_one_hot_input_passes_through():
    emb = torch.randn(4, 3, 2)
    assert model_input(emb, torch.zeros(4, 3, dtype=torch.int64)) is emb
    assert pool(emb, "mean") is emb


# ------------------------------------------------------------------ training

BASE = ["train.progress=false", "train.threads=1", "model.embedding_dim=8", "model.bottom=[8]",
        "model.top=[8,1]", "data.val_fraction=0.2", "optim.embedding=rowwise_adagrad"]


def _run(data: Path, out: Path, *extra: str) -> tuple[list[float], np.ndarray, dict]:
    m = train(load_config(overrides=[*BASE, f"data.path={data}", *extra]), out)
    _, records = load_checkpoint(out)
    return json.loads((out / "losses.json").read_text()), np.array(records), m


ARCHS = {"dlrm-sum": ["model.pooling=sum"], "dlrm-mean": ["model.pooling=mean"],
         "tbsm": ["model.arch=tbsm", "model.history_table=0", "model.target_table=1", "model.history_len=4"]}


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_tiered_equals_untiered_bit_for_bit(tmp_path, arch):
    path, _, _ = make_bag_dataset(tmp_path / "d", rows=600, cards=(300, 30, 200))
    common = ["data.batch_size=24", *ARCHS[arch]]
    ref_loss, ref_rec, ref = _run(path, tmp_path / "ref", *common)
    ds = ColumnarDataset.open(path)
    tr, _ = split_loaders(ds, batch_size=24, val_fraction=0.2)
    cap = min_capacity(tr.id_stream(TableLayout.of(ds).offsets), 2) + 5
    loss, rec, m = _run(path, tmp_path / "t", *common, "cache.policy=lookahead",
                        f"cache.capacity={cap}", "cache.window=6", "cache.depth=2")
    assert m["cache"]["rows_written_back"] > 0  # the small cache evicted rows
    assert loss == ref_loss
    assert np.array_equal(rec, ref_rec)
    assert m["val_auc"] == ref["val_auc"] and m["val_logloss"] == ref["val_logloss"]


def test_resume_is_exact(tmp_path):
    path, _, _ = make_bag_dataset(tmp_path / "d", rows=600, cards=(300, 30, 200))
    common = ["data.batch_size=24", "cache.policy=lookahead", "cache.capacity=0.4", "cache.window=6",
              *ARCHS["tbsm"], "model.pooling=mean"]
    full, full_rec, _ = _run(path, tmp_path / "full", *common, "train.max_steps=18")
    _run(path, tmp_path / "part", *common, "train.max_steps=7")
    train(load_config(overrides=[*BASE, f"data.path={path}", *common, "train.max_steps=18"]),
          tmp_path / "part", resume=True)
    assert json.loads((tmp_path / "part" / "losses.json").read_text()) == full
    assert np.array_equal(np.array(load_checkpoint(tmp_path / "part")[1]), full_rec)


def test_a_one_table_bag_dataset_trains_on_the_mapped_feed(tmp_path):
    from hotpipe.storage.backing import FileBacking
    from hotpipe.train.builders import build_row_optimizer
    from hotpipe.train.mapped_feed import MappedFeed
    from hotpipe.train.run import build_components

    path, _, _ = make_bag_dataset(tmp_path / "d", rows=200, cards=(50,), bag_tables=(0,))
    cfg = load_config(overrides=[*BASE, f"data.path={path}", "data.batch_size=20"])
    ref_loss, ref_rec, _ = _run(path, tmp_path / "ref", "data.batch_size=20")
    opt = build_row_optimizer(cfg.optim, 8)
    feed = MappedFeed(backing=FileBacking(directory=tmp_path / "tables", cardinalities=[50], dim=8,
                                          optimizer=opt, seed=cfg.train.seed), dim=8)
    train(cfg, tmp_path / "mapped", components=build_components(cfg, tmp_path / "mapped", feed=feed))
    assert json.loads((tmp_path / "mapped" / "losses.json").read_text()) == ref_loss


@pytest.mark.slow
def test_tbsm_and_dlrm_learn_the_behaviour_data(tmp_path):
    data = tmp_path / "ub"
    synthesize_behaviour(data, rows=12000, items=600, users=300, clusters=8, max_len=12, seed=0)
    aucs = {}
    for arch, extra in (("dlrm", []), ("tbsm", ARCHS["tbsm"][:-1] + ["model.history_len=12"])):
        m = train(load_config(overrides=[*BASE, f"data.path={data}", "data.batch_size=64", "train.epochs=2",
                                         "model.embedding_dim=16", "model.bottom=[16]", "model.top=[32,1]",
                                         *extra]), tmp_path / arch)
        aucs[arch] = m["val_auc"]
    assert aucs["tbsm"] > 0.65 and aucs["dlrm"] > 0.6, aucs


def test_jagged_rows_table_slices():
    rows = torch.arange(10.0).view(5, 2)
    jr = JaggedRows(rows, torch.tensor([0, 1, 3, 3, 5]), 2)  # T=2, B=2
    r1, off1 = jr.table(1)
    assert r1.tolist() == [[6.0, 7.0], [8.0, 9.0]] and off1.tolist() == [0, 0, 2]


@pytest.mark.parametrize("arch", ["dcn", "adrec"])
def test_every_arch_trains_on_bags(tmp_path, arch):
    path, _, _ = make_bag_dataset(tmp_path / "d", rows=200, cards=(300, 30, 200))
    m = train(load_config(overrides=[*BASE, f"data.path={path}", "data.batch_size=20", f"model.arch={arch}",
                                     "model.pooling=mean", "model.deep=[8]", "model.heads=2"]), tmp_path / arch)
    assert m["steps"] == 8 and 0 <= m["val_auc"] <= 1 and m["final_loss"] > 0
