"""TorchRec interop: KeyedJaggedTensor input, EmbeddingBagCollection state dicts both ways.

The conversion tests run on a real ``torchrec.KeyedJaggedTensor`` when TorchRec
is installed (the ``torchrec`` extra, which CI installs) and on a minimal
stand-in with the same accessors otherwise; the tests against a real
``EmbeddingBagCollection`` skip without TorchRec.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from hotpipe._fs import DirLock
from hotpipe.cli import main
from hotpipe.config import load_config
from hotpipe.data.batch import Batch, JaggedIds
from hotpipe.data.layout import TableLayout
from hotpipe.errors import CheckpointError, DataFormatError, HotpipeError
from hotpipe.interop.ebc_state import ebc_key, from_ebc_state, to_ebc_state
from hotpipe.interop.kjt import batch_from_kjt, kjt_to_sparse, lookup_kjt, read_kjt
from hotpipe.interop.runs import export_feed, export_run, import_feed, import_run
from hotpipe.model.bags import model_input, pool
from hotpipe.model.dcn import DCN
from hotpipe.model.embedding import SparseEmbedding
from hotpipe.model.sparse_optim import make_row_optimizer
from hotpipe.storage.slots import SlotStore
from hotpipe.train.checkpoint import load_checkpoint
from hotpipe.train.feed import DirectFeed, global_slots
from hotpipe.train.run import build_components, train
from tests.conftest import make_dataset

# Deprecation chatter of fbgemm_gpu's and TorchRec's planner is not ours to fix.
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]


@functools.cache
def _torchrec() -> Any:
    """The torchrec module, or the reason it cannot be imported (imported on first use:
    it costs seconds, and only these tests need it)."""
    try:
        import torchrec

        return torchrec
    except Exception as e:  # not installed, or one of its dependencies missing
        return e


@pytest.fixture
def tr() -> Any:
    m = _torchrec()
    if isinstance(m, Exception):
        pytest.skip(f"torchrec is not importable ({type(m).__name__}: {m}); install it with "
                    "pip install -e .[torchrec] && pip install --no-deps torchrec==1.8.0")
    return m


LAYOUT = TableLayout([11, 5, 23], ["C1", "C2", "C3"])
DIM = 4


class _StandInKJT:
    """The accessors of torchrec.KeyedJaggedTensor that hotpipe reads (used without torchrec)."""

    def __init__(self, keys: Sequence[str], values: torch.Tensor, lengths: torch.Tensor,
                 weights: torch.Tensor | None = None) -> None:
        self._keys, self._values, self._lengths, self._weights = list(keys), values, lengths, weights

    def keys(self) -> list[str]:
        return self._keys

    def values(self) -> torch.Tensor:
        return self._values

    def lengths(self) -> torch.Tensor:
        return self._lengths

    def stride(self) -> int:
        return self._lengths.numel() // len(self._keys)

    def weights_or_none(self) -> torch.Tensor | None:
        return self._weights

    def variable_stride_per_key(self) -> bool:
        return False


def make_kjt(keys: Sequence[str], values: torch.Tensor, lengths: torch.Tensor,
             weights: torch.Tensor | None = None) -> Any:
    """A torchrec.KeyedJaggedTensor, or the stand-in without torchrec."""
    torchrec = _torchrec()
    if isinstance(torchrec, Exception):
        return _StandInKJT(keys, values, lengths, weights)
    return torchrec.KeyedJaggedTensor.from_lengths_sync(keys=list(keys), values=values,
                                                        lengths=lengths, weights=weights)


def _random_bags(seed: int, b: int, layout: TableLayout = LAYOUT, max_len: int = 3,
                 ) -> list[list[list[int]]]:
    """bags[t][b] = ids of table t, sample b (empty bags included)."""
    g = torch.Generator().manual_seed(seed)
    return [[torch.randint(0, card, (int(torch.randint(0, max_len + 1, (1,), generator=g)),),
                           generator=g).tolist() for _ in range(b)]
            for card in layout.cardinalities]


def _kjt_of(bags: list[list[list[int]]], keys: Sequence[str]) -> Any:
    """A KJT listing the tables in the order of ``keys`` (names of LAYOUT's tables)."""
    order = [list(LAYOUT.names).index(k) for k in keys]
    values = [i for t in order for bag in bags[t] for i in bag]
    lengths = [len(bag) for t in order for bag in bags[t]]
    return make_kjt(keys, torch.tensor(values, dtype=torch.int64), torch.tensor(lengths))


def _store(seed: int = 0, layout: TableLayout = LAYOUT, optimizer: str = "rowwise_adagrad",
           ) -> tuple[SlotStore, SparseEmbedding]:
    opt = make_row_optimizer(optimizer, lr=0.1, dim=DIM)
    store = SlotStore.allocate(layout.num_rows, DIM, opt)
    store.weights.copy_(torch.randn(layout.num_rows, DIM, generator=torch.Generator().manual_seed(seed)))
    return store, SparseEmbedding(store=store, optimizer=opt)


# ------------------------------------------------------------- KJT -> batch


def test_one_hot_kjt_is_the_batch_matrix_whatever_the_key_order():
    ids = torch.tensor([[3, 0, 22], [10, 4, 0]])  # (B, T) in LAYOUT's order
    for keys in (["C1", "C2", "C3"], ["C3", "C1", "C2"]):
        order = [list(LAYOUT.names).index(k) for k in keys]
        kjt = make_kjt(keys, ids[:, order].t().reshape(-1), torch.ones(6, dtype=torch.int64))
        got = kjt_to_sparse(kjt, LAYOUT)
        assert isinstance(got, torch.Tensor) and torch.equal(got, ids)
    # by order: key names are not looked at
    kjt = make_kjt(["a", "b", "c"], ids.t().reshape(-1), torch.ones(6, dtype=torch.int64))
    assert torch.equal(kjt_to_sparse(kjt, LAYOUT, by="order"), ids)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(5))
def test_multi_hot_kjt_equals_a_brute_force_jagged_batch(seed):
    b = 4
    bags = _random_bags(seed, b)
    keys = [["C1", "C2", "C3"], ["C2", "C3", "C1"], ["C3", "C2", "C1"]][seed % 3]
    got = kjt_to_sparse(_kjt_of(bags, keys), LAYOUT)
    if all(len(bag) == 1 for tb in bags for bag in tb):  # a draw of all-ones is one-hot
        assert isinstance(got, torch.Tensor)
        return
    assert isinstance(got, JaggedIds) and got.num_tables == 3 and got.batch_size == b
    # reference: walk the bags in hotpipe's table-major order
    ref_values = [i for t in range(3) for bag in bags[t] for i in bag]
    ref_offsets = np.cumsum([0] + [len(bag) for t in range(3) for bag in bags[t]])
    assert got.values.tolist() == ref_values
    assert got.offsets.tolist() == ref_offsets.tolist()


def test_batch_from_kjt_checks_the_batch_size():
    kjt = make_kjt(["C1", "C2", "C3"], torch.tensor([1, 2, 3]), torch.ones(3, dtype=torch.int64))
    batch = batch_from_kjt(torch.zeros(1, 13), kjt, torch.ones(1), LAYOUT)
    assert batch.size == 1 and batch.sparse.tolist() == [[1, 2, 3]]  # type: ignore[union-attr]
    with pytest.raises(DataFormatError, match="dense.*1 rows.*2 rows"):
        batch_from_kjt(torch.zeros(2, 13), kjt, torch.ones(1), LAYOUT)


@pytest.mark.parametrize("keys, by, match", [
    (["C1", "C2"], "name", "no key for table.*C3"),
    (["C1", "C2", "C3", "C9"], "name", "C9 name no table"),
    (["C1", "C2", "C2"], "name", "appears more than once.*C2"),
    (["C1", "C2"], "order", "3 keys.*found.*2 keys"),
])
def test_unmatched_keys_are_named(keys, by, match):
    kjt = make_kjt(keys, torch.zeros(len(keys), dtype=torch.int64), torch.ones(len(keys), dtype=torch.int64))
    with pytest.raises(DataFormatError, match=match):
        kjt_to_sparse(kjt, LAYOUT, by=by)


@pytest.mark.parametrize("lengths", [[1, 1, 1], [2, 1, 1]])
def test_out_of_range_ids_name_the_key(lengths):
    values = torch.tensor([0, 1, 5, 3][: sum(lengths)]) if lengths[0] == 2 else torch.tensor([0, 5, 3])
    kjt = make_kjt(["C1", "C2", "C3"], values, torch.tensor(lengths))
    with pytest.raises(DataFormatError, match=r"C2.*0 <= id < 5.*'5'"):
        kjt_to_sparse(kjt, LAYOUT)
    neg = make_kjt(["C1", "C2", "C3"], torch.tensor([-1, 0, 0]), torch.ones(3, dtype=torch.int64))
    with pytest.raises(DataFormatError, match=r"C1.*'-1'"):
        kjt_to_sparse(neg, LAYOUT)


def test_lengths_that_do_not_cover_the_values_are_refused():
    kjt = _StandInKJT(["C1", "C2", "C3"], torch.tensor([0, 1, 2, 3]), torch.ones(3, dtype=torch.int64))
    with pytest.raises(DataFormatError, match="lengths do not add up.*sum of 4.*'3'"):
        kjt_to_sparse(kjt, LAYOUT)


def test_weighted_kjt_is_refused():
    kjt = make_kjt(["C1", "C2", "C3"], torch.tensor([0, 1, 2]), torch.ones(3, dtype=torch.int64),
                   weights=torch.ones(3))
    with pytest.raises(DataFormatError, match="weights"):
        kjt_to_sparse(kjt, LAYOUT)


# ------------------------------------------------------------- lookups


def test_one_hot_lookup_and_update_equal_the_hotpipe_batch_path():
    ids = torch.tensor([[3, 0, 22], [10, 4, 0], [3, 4, 7]])
    kjt = make_kjt(["C2", "C3", "C1"], ids[:, [1, 2, 0]].t().reshape(-1), torch.ones(9, dtype=torch.int64))
    offsets = torch.from_numpy(LAYOUT.offsets.copy())
    store_a, emb_a = _store()
    store_b, emb_b = _store()
    look = lookup_kjt(emb_a, kjt, LAYOUT)
    ref = emb_b.lookup(ids + offsets)  # what the training loop does with a hotpipe batch
    assert torch.equal(look.emb, ref)
    w = torch.randn(DIM)
    (look.emb * w).sum().backward()
    (ref * w).sum().backward()
    look.apply_gradients(emb_a)
    emb_b.apply_gradients(ids + offsets, ref.grad)  # type: ignore[arg-type]
    assert torch.equal(store_a.weights, store_b.weights)
    assert torch.equal(store_a.state, store_b.state)
    feed = DirectFeed(store=store_a, layout=LAYOUT)
    assert torch.equal(read_kjt(feed.read_rows, kjt, LAYOUT), emb_a.lookup(ids + offsets))


@pytest.mark.parametrize("seed", range(4))
def test_multi_hot_lookup_and_update_equal_a_dense_embedding_bag(seed):
    b = 5
    bags = _random_bags(seed, b)
    kjt = _kjt_of(bags, ["C3", "C1", "C2"])
    store, emb = _store(seed, optimizer="sgd")
    # reference: one nn.EmbeddingBag per table on a copy of the rows, autograd + SGD
    refs = [nn.EmbeddingBag(c, DIM, mode="sum") for c in LAYOUT.cardinalities]
    for t, r in enumerate(refs):
        r.weight.data.copy_(store.weights[LAYOUT.bounds[t]:LAYOUT.bounds[t + 1]])
    want = torch.stack([r(torch.tensor([i for bag in bags[t] for i in bag], dtype=torch.int64),
                          torch.tensor(np.cumsum([0] + [len(x) for x in bags[t]])[:-1]))
                        for t, r in enumerate(refs)], dim=1)  # (B, T, D)
    look = lookup_kjt(emb, kjt, LAYOUT)
    pooled = pool(look.inputs, "sum")  # what a model with model.pooling=sum computes
    torch.testing.assert_close(pooled, want, rtol=0, atol=1e-6)
    feed = DirectFeed(store=store, layout=LAYOUT)
    torch.testing.assert_close(read_kjt(feed.read_rows, kjt, LAYOUT), want, rtol=0, atol=1e-6)
    lengths = torch.tensor([[len(x) for x in bags[t]] for t in range(3)]).t()  # (B, T)
    mean = read_kjt(feed.read_rows, kjt, LAYOUT, pooling="mean")
    torch.testing.assert_close(mean, want / lengths.clamp(min=1).unsqueeze(2), rtol=0, atol=1e-6)
    w = torch.randn(b, 3, DIM)
    (pooled * w).sum().backward()
    look.apply_gradients(emb)
    (want * w).sum().backward()
    for t, r in enumerate(refs):
        torch.testing.assert_close(store.weights[LAYOUT.bounds[t]:LAYOUT.bounds[t + 1]],
                                   r.weight.data - 0.1 * r.weight.grad, rtol=0, atol=1e-6)


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_multi_hot_kjt_trains_like_the_equivalent_hotpipe_batch(pooling):
    """lookup_kjt + model == the training loop's path for the same bags as a hotpipe Batch."""
    b = 6
    bags = _random_bags(11, b)
    kjt = _kjt_of(bags, ["C2", "C1", "C3"])
    sparse = JaggedIds(values=torch.tensor([i for t in range(3) for bag in bags[t] for i in bag],
                                           dtype=torch.int64),
                       offsets=torch.tensor(np.cumsum([0] + [len(x) for t in range(3) for x in bags[t]])),
                       num_tables=3)
    batch = Batch(dense=torch.randn(b, 13), sparse=sparse, labels=(torch.arange(b) % 2).float())
    torch.manual_seed(0)
    model = DCN(num_dense=13, num_tables=3, embedding_dim=DIM, bottom=[8, DIM], cross_layers=2,
                cross_rank=2, structure="stacked", deep=[8], top=[1], pooling=pooling)
    loss_fn = nn.BCEWithLogitsLoss()
    store_a, emb_a = _store(3)
    store_b, emb_b = _store(3)
    look = lookup_kjt(emb_a, kjt, LAYOUT)
    loss_a = loss_fn(model(batch.dense, look.inputs), batch.labels)
    loss_a.backward()
    look.apply_gradients(emb_a)
    slots = global_slots(batch, torch.from_numpy(LAYOUT.offsets.copy()))  # as the feed yields them
    assert torch.equal(look.slots, slots)
    e = emb_b.lookup(slots)
    loss_b = loss_fn(model(batch.dense, model_input(e, batch.sparse)), batch.labels)
    loss_b.backward()
    emb_b.apply_gradients(slots, e.grad)  # type: ignore[arg-type]
    assert float(loss_a.detach()) == float(loss_b.detach())
    assert torch.equal(store_a.weights, store_b.weights) and torch.equal(store_a.state, store_b.state)
    assert not torch.equal(store_a.weights, _store(3)[0].weights)  # the update did happen


def test_lookup_kjt_refuses_a_tiered_store():
    opt = make_row_optimizer("sgd", lr=0.1, dim=DIM)
    emb = SparseEmbedding(store=SlotStore.allocate(10, DIM, opt), optimizer=opt)
    kjt = make_kjt(["C1", "C2", "C3"], torch.tensor([0, 1, 2]), torch.ones(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="untiered.*10 slots for 39 rows"):
        lookup_kjt(emb, kjt, LAYOUT)


# ------------------------------------------------------------- state dicts


@pytest.mark.parametrize("optimizer, width", [("sgd", 0), ("rowwise_adagrad", 1), ("adagrad", DIM)])
def test_records_round_trip_through_an_ebc_state_dict(optimizer, width):
    opt = make_row_optimizer(optimizer, lr=0.1, dim=DIM)
    rec = np.random.default_rng(1).normal(size=(LAYOUT.num_rows, DIM + width)).astype(np.float32)
    state, optim = to_ebc_state(rec, LAYOUT, dim=DIM)
    assert list(state) == [ebc_key(n) for n in LAYOUT.names]
    for t, n in enumerate(LAYOUT.names):
        assert state[ebc_key(n)].shape == (LAYOUT.cardinalities[t], DIM)
        if width:
            s = optim[ebc_key(n)][f"{n}.momentum1"]
            assert s.shape == ((LAYOUT.cardinalities[t],) if width == 1 else (LAYOUT.cardinalities[t], DIM))
    assert (optim == {}) == (width == 0)
    back = from_ebc_state(state, LAYOUT, dim=DIM, optimizer=opt, optimizer_state=optim)
    assert np.array_equal(back, rec)
    fresh = from_ebc_state(state, LAYOUT, dim=DIM, optimizer=opt)  # state starts afresh
    assert np.array_equal(fresh[:, :DIM], rec[:, :DIM])
    assert np.array_equal(fresh[:, DIM:], opt.init_state(LAYOUT.num_rows, DIM).numpy())


def test_state_dict_errors_name_the_key():
    opt = make_row_optimizer("rowwise_adagrad", lr=0.1, dim=DIM)
    rec = np.zeros((LAYOUT.num_rows, DIM + 1), np.float32)
    state, optim = to_ebc_state(rec, LAYOUT, dim=DIM)
    missing = {k: v for k, v in state.items() if "C2" not in k}
    with pytest.raises(DataFormatError, match=r"no weights for table\(s\) C2.*embedding_bags.C2.weight"):
        from_ebc_state(missing, LAYOUT, dim=DIM, optimizer=opt)
    with pytest.raises(DataFormatError, match=r"C9.*not tables of this model"):
        from_ebc_state({**state, "embedding_bags.C9.weight": torch.zeros(2, DIM)}, LAYOUT, dim=DIM,
                       optimizer=opt)
    ok = from_ebc_state({**state, "embedding_bags.C9.weight": torch.zeros(2, DIM)}, LAYOUT, dim=DIM,
                        optimizer=opt, strict=False)
    assert ok.shape == rec.shape
    with pytest.raises(DataFormatError, match=r"embedding_bags.C3.weight.*\(23, 4\).*\(23, 5\)"):
        from_ebc_state({**state, "embedding_bags.C3.weight": torch.zeros(23, 5)}, LAYOUT, dim=DIM,
                       optimizer=opt)
    with pytest.raises(DataFormatError, match="no optimizer state for table C1"):
        from_ebc_state(state, LAYOUT, dim=DIM, optimizer=opt,
                       optimizer_state={k: v for k, v in optim.items() if "C1" not in k})
    ada = make_row_optimizer("adagrad", lr=0.1, dim=DIM)
    with pytest.raises(DataFormatError, match="another width"):
        from_ebc_state(state, LAYOUT, dim=DIM, optimizer=ada, optimizer_state=optim)
    # a model's state dict: dense keys ignored, any prefix accepted
    prefixed = {f"sparse_arch.embedding_bag_collection.{k}": v for k, v in state.items()}
    assert np.array_equal(from_ebc_state({**prefixed, "over_arch.w": torch.zeros(1)}, LAYOUT,
                                         dim=DIM, optimizer=opt), rec)


# ------------------------------------------------------------- runs


BASE = ["train.progress=false", "model.embedding_dim=4", "model.bottom=[8,4]", "model.top=[8,1]",
        "data.val_fraction=0.2", "train.threads=1", "data.batch_size=32", "train.max_steps=6",
        "optim.embedding=rowwise_adagrad"]


def _cfg(data: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(overrides=[*BASE, f"data.path={data}", *extra])


@pytest.mark.parametrize("tiered", [False, True])
def test_run_export_import_round_trip(tmp_path, tiered):
    data = make_dataset(tmp_path / "d", rows=400, cards=(40, 9, 70))
    extra = ["cache.policy=lookahead", "cache.capacity=0.5", "cache.window=4"] if tiered else []
    train(_cfg(data, *extra), tmp_path / "run")
    _, records = load_checkpoint(tmp_path / "run")
    records = np.array(records)
    state, optim = export_run(tmp_path / "run")
    layout = TableLayout([40, 9, 70], ["C1", "C2", "C3"])
    assert np.array_equal(np.concatenate([state[ebc_key(n)].numpy() for n in layout.names]),
                          records[:, :4])
    assert np.array_equal(np.concatenate([optim[ebc_key(n)][f"{n}.momentum1"].numpy()
                                          for n in layout.names]), records[:, 4])
    # Changed weights in, same weights out; the resumed run trains from them.
    changed = {k: v + 1.0 for k, v in state.items()}
    ck = import_run(tmp_path / "run", changed, optimizer_state=optim)
    assert ck.name == "step-00000006.r1"
    again, optim2 = export_run(tmp_path / "run")
    assert all(torch.equal(again[k], changed[k]) for k in state)
    assert all(torch.equal(optim2[k][s], optim[k][s]) for k in optim for s in optim[k])
    m = train(_cfg(data, *extra, "train.max_steps=8"), tmp_path / "run", resume=True)
    assert m["steps"] == 8


def test_feed_export_import_equals_the_feed(tmp_path):
    data = make_dataset(tmp_path / "d", rows=300, cards=(40, 9, 70))
    c = build_components(_cfg(data), tmp_path / "run")
    state, optim = export_feed(c.feed, c.layout)
    c2 = build_components(_cfg(data, "train.seed=7"), tmp_path / "run2")
    assert not torch.equal(c2.feed.store.weights, c.feed.store.weights)
    import_feed(c2.feed, state, c2.layout, optimizer=c2.row_opt, optimizer_state=optim)
    assert torch.equal(c2.feed.store.weights, c.feed.store.weights)
    assert torch.equal(c2.feed.store.state, c.feed.store.state)


def test_cli_export_import(tmp_path, capsys):
    data = make_dataset(tmp_path / "d", rows=300, cards=(40, 9, 70))
    train(_cfg(data), tmp_path / "run")
    out = tmp_path / "tables.pt"
    assert main(["torchrec", "export", str(tmp_path / "run"), "--out", str(out)]) == 0
    saved = torch.load(out, weights_only=False)
    assert sorted(saved["state_dict"]) == [ebc_key(n) for n in ("C1", "C2", "C3")]
    bare = tmp_path / "bare.pt"
    torch.save({k: v * 2 for k, v in saved["state_dict"].items()}, bare)  # an EBC's own state dict
    assert main(["torchrec", "import", str(bare), str(tmp_path / "run")]) == 0
    assert "fresh optimizer state" in capsys.readouterr().out
    state, optim = export_run(tmp_path / "run")
    assert all(torch.equal(state[k], saved["state_dict"][k] * 2) for k in state)
    assert all(float(s.abs().sum()) == 0 for o in optim.values() for s in o.values())
    held = DirLock(tmp_path / "run" / ".lock", "training run")  # a training run holds it
    try:
        assert main(["torchrec", "import", str(bare), str(tmp_path / "run")]) == 2
        assert "in use by another hotpipe process" in capsys.readouterr().err
    finally:
        held.release()
    bad = tmp_path / "bad.pt"
    bad.write_text("not a torch file")
    assert main(["torchrec", "import", str(bad), str(tmp_path / "run")]) == 2
    assert "bad.pt" in capsys.readouterr().err
    wrong = tmp_path / "wrong.pt"
    torch.save({"embedding_bags.C1.weight": torch.zeros(3, 4)}, wrong)
    assert main(["torchrec", "import", str(wrong), str(tmp_path / "run")]) == 2
    assert "C2" in capsys.readouterr().err
    json.loads((tmp_path / "run" / "metrics.json").read_text())  # the run is untouched otherwise


# ------------------------------------------------------------- real TorchRec


def _ebc(torchrec: Any, layout: TableLayout, dim: int) -> Any:
    return torchrec.EmbeddingBagCollection(tables=[
        torchrec.EmbeddingBagConfig(name=n, embedding_dim=dim, num_embeddings=c, feature_names=[n])
        for n, c in zip(layout.names, layout.cardinalities, strict=True)])


def _ebc_pooled(ebc: Any, kjt: Any, layout: TableLayout) -> torch.Tensor:
    out = ebc(kjt)  # KeyedTensor
    return torch.stack([out[n] for n in layout.names], dim=1)  # (B, T, D)


@pytest.mark.parametrize("seed", range(3))
def test_exported_tables_load_into_a_torchrec_ebc_and_back(tr, seed):
    store, _ = _store(seed)
    store.state.uniform_(0, 1)
    feed = DirectFeed(store=store, layout=LAYOUT)
    state, optim = export_feed(feed, LAYOUT)
    ebc = _ebc(tr, LAYOUT, DIM)
    ebc.load_state_dict(state)  # strict: exactly the EBC's keys and shapes
    for keys in (["C1", "C2", "C3"], ["C3", "C1", "C2"]):
        for kjt in (_kjt_of(_random_bags(seed, 6), keys),
                    make_kjt(keys, torch.tensor([1, 2, 3, 4, 0, 1]), torch.ones(6, dtype=torch.int64))):
            want = _ebc_pooled(ebc, kjt, LAYOUT)
            torch.testing.assert_close(read_kjt(feed.read_rows, kjt, LAYOUT), want, rtol=0, atol=1e-6)
    # EBC -> hotpipe -> EBC: identical tensors, identical lookups
    opt = make_row_optimizer("rowwise_adagrad", lr=0.1, dim=DIM)
    store2 = SlotStore.allocate(LAYOUT.num_rows, DIM, opt)
    feed2 = DirectFeed(store=store2, layout=LAYOUT)
    import_feed(feed2, ebc.state_dict(), LAYOUT, optimizer=opt, optimizer_state=optim)
    assert torch.equal(store2.weights, store.weights) and torch.equal(store2.state, store.state)
    back, _ = export_feed(feed2, LAYOUT)
    assert all(torch.equal(back[k], v) for k, v in ebc.state_dict().items())


def test_a_trained_torchrec_ebc_imports_into_a_tiered_run(tr, tmp_path):
    data = make_dataset(tmp_path / "d", rows=400, cards=(40, 9, 70))
    layout = TableLayout([40, 9, 70], ["C1", "C2", "C3"])
    extra = ["cache.policy=lookahead", "cache.capacity=0.5", "cache.window=4"]
    train(_cfg(data, *extra), tmp_path / "run")
    ebc = _ebc(tr, layout, 4)  # TorchRec's own random init, then one SGD step on a multi-hot batch
    kjt = tr.KeyedJaggedTensor.from_lengths_sync(
        keys=["C2", "C1", "C3"], values=torch.tensor([1, 8, 3, 39, 0, 69, 5]),
        lengths=torch.tensor([2, 1, 1, 0, 2, 1]))
    _ebc_pooled(ebc, kjt, layout).square().sum().backward()
    with torch.no_grad():
        for p in ebc.parameters():
            p -= 0.1 * p.grad
    import_run(tmp_path / "run", ebc.state_dict())
    c = build_components(_cfg(data, *extra), tmp_path / "run2")
    _, records = load_checkpoint(tmp_path / "run")
    c.feed.load(np.array(records))
    torch.testing.assert_close(read_kjt(c.feed.read_rows, kjt, layout),
                               _ebc_pooled(ebc, kjt, layout).detach(), rtol=0, atol=1e-6)
    c.close()
    state, _ = export_run(tmp_path / "run")
    assert all(torch.equal(state[k], v) for k, v in ebc.state_dict().items())


def test_export_refuses_a_dataset_the_run_did_not_train_on(tmp_path):
    data = make_dataset(tmp_path / "d", rows=300, cards=(40, 9, 70))
    other = make_dataset(tmp_path / "o", rows=300, cards=(40, 9, 70), seed=1)
    train(_cfg(data), tmp_path / "run")
    with pytest.raises(CheckpointError, match="not the one the run trained on"):
        export_run(tmp_path / "run", data=other)
    moved = tmp_path / "moved"
    data.rename(moved)  # the run's data.path is gone: --data names where it is now
    with pytest.raises(HotpipeError):
        export_run(tmp_path / "run")
    state, _ = export_run(tmp_path / "run", data=moved)
    assert sorted(state) == [ebc_key(n) for n in ("C1", "C2", "C3")]


@pytest.mark.slow
def test_a_sharded_torchrec_model_exports_into_hotpipe(tr, tmp_path):
    """DistributedModelParallel (one gloo rank) keeps tables in FBGEMM's TBE and hands out
    ShardedTensors: their single local shard is read as the table."""
    from torchrec.distributed import DistributedModelParallel

    dist = torch.distributed
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1),
                            rank=0, world_size=1)
    try:
        ebc = _ebc(tr, LAYOUT, DIM)
        dmp = DistributedModelParallel(module=ebc, device=torch.device("cpu"))
        kjt = _kjt_of(_random_bags(0, 4), ["C1", "C2", "C3"])
        want = _ebc_pooled(dmp, kjt, LAYOUT).detach()
        opt = make_row_optimizer("sgd", lr=0.1, dim=DIM)
        feed = DirectFeed(store=SlotStore.allocate(LAYOUT.num_rows, DIM, opt), layout=LAYOUT)
        import_feed(feed, dmp.state_dict(), LAYOUT, optimizer=opt)
        torch.testing.assert_close(read_kjt(feed.read_rows, kjt, LAYOUT), want, rtol=0, atol=1e-6)
    finally:
        dist.destroy_process_group()
