"""Row-wise sparse optimizers equal dense references over several steps."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hotpipe import _jit
from hotpipe.model.embedding import SparseEmbedding
from hotpipe.model.sparse_optim import make_row_optimizer
from hotpipe.storage.slots import SlotStore


def _dense_rowwise_adagrad(w: torch.Tensor, s: torch.Tensor, g: torch.Tensor, lr: float, eps: float) -> None:
    """The obviously-correct reference: every row, dense gradient."""
    touched = (g != 0).any(dim=1, keepdim=True)
    s += torch.where(touched, g.square().mean(dim=1, keepdim=True), torch.zeros_like(s))
    w -= torch.where(touched, lr * g / (s.sqrt() + eps), torch.zeros_like(w))


def _run(name: str, rows: int, dim: int, batches: list[torch.Tensor], lr: float):
    torch.manual_seed(0)
    init = torch.randn(rows, dim)
    targets = [torch.randn(*b.shape, dim) for b in batches]
    # sparse path
    opt = make_row_optimizer(name, lr=lr, dim=dim)
    store = SlotStore.allocate(rows, dim, opt)
    store.weights.copy_(init)
    emb = SparseEmbedding(store=store, optimizer=opt)
    for ids, tgt in zip(batches, targets, strict=True):
        e = emb.lookup(ids)
        ((e - tgt) ** 2).sum().backward()
        emb.apply_gradients(ids, e.grad)
    # dense reference
    ref = torch.nn.Embedding(rows, dim)
    ref.weight.data.copy_(init)
    acc = torch.zeros(rows, 1)
    dense_opt = {"sgd": lambda: torch.optim.SGD(ref.parameters(), lr=lr),
                 "adagrad": lambda: torch.optim.Adagrad(ref.parameters(), lr=lr)}.get(name)
    o = dense_opt() if dense_opt else None
    for ids, tgt in zip(batches, targets, strict=True):
        ref.zero_grad()
        ((ref(ids) - tgt) ** 2).sum().backward()
        if o is not None:
            o.step()
        else:
            with torch.no_grad():
                _dense_rowwise_adagrad(ref.weight.data, acc, ref.weight.grad, lr, 1e-8)
    return store, ref.weight.detach(), acc


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(["sgd", "rowwise_adagrad", "adagrad"]),
    rows=st.integers(1, 40),
    dim=st.sampled_from([1, 4, 16]),
    shape=st.tuples(st.integers(1, 16), st.integers(1, 4)),
    steps=st.integers(1, 4),
    seed=st.integers(0, 10_000),
)
def test_sparse_equals_dense(name, rows, dim, shape, steps, seed):
    g = torch.Generator().manual_seed(seed)
    batches = [torch.randint(0, rows, shape, generator=g) for _ in range(steps)]
    store, ref_w, ref_acc = _run(name, rows, dim, batches, lr=0.1)
    torch.testing.assert_close(store.weights, ref_w, rtol=1e-6, atol=1e-6)
    if name == "rowwise_adagrad":
        torch.testing.assert_close(store.state, ref_acc, rtol=1e-6, atol=1e-6)


def test_untouched_rows_never_change():
    opt = make_row_optimizer("rowwise_adagrad", lr=0.5, dim=8)
    store = SlotStore.allocate(10, 8, opt)
    store.weights.normal_()
    before = store.weights.clone()
    emb = SparseEmbedding(store=store, optimizer=opt)
    ids = torch.tensor([[1, 3], [3, 3]])
    e = emb.lookup(ids)
    e.sum().backward()
    emb.apply_gradients(ids, e.grad)
    untouched = torch.tensor([i not in (1, 3) for i in range(10)])
    assert torch.equal(store.weights[untouched], before[untouched])
    assert not torch.equal(store.weights[3], before[3])
    assert store.dirty.tolist() == [i in (1, 3) for i in range(10)]


def test_multi_hot_bags_equal_sum_of_one_hot():
    opt = make_row_optimizer("sgd", lr=0.1, dim=4)
    store = SlotStore.allocate(6, 4, opt)
    store.weights.normal_()
    emb = SparseEmbedding(store=store, optimizer=opt)
    slots = torch.tensor([0, 2, 2, 5, 1])
    offsets = torch.tensor([0, 3, 3, 5])  # bags: {0,2,2}, {}, {5,1}
    out = emb.lookup_bags(slots, offsets, 3)
    w = store.weights
    torch.testing.assert_close(out[0], w[0] + 2 * w[2])
    torch.testing.assert_close(out[1], torch.zeros(4))
    torch.testing.assert_close(out[2], w[5] + w[1])
    before = w.clone()
    out.sum().backward()
    emb.apply_bag_gradients(slots, offsets, out.grad)
    torch.testing.assert_close(w[2], before[2] - 0.1 * 2)


def test_unknown_optimizer_is_rejected():
    with pytest.raises(ValueError, match="sgd, rowwise_adagrad or adagrad"):
        make_row_optimizer("adam", lr=0.1, dim=4)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(["sgd", "rowwise_adagrad", "adagrad"]), rows=st.integers(1, 300),
       dim=st.sampled_from([1, 3, 16, 64]), lookups=st.integers(1, 600),
       steps=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_compiled_coalesce_equals_the_torch_path_bit_for_bit(name, rows, dim, lookups, steps,
                                                             seed):
    """The hashed one-pass coalesce (model/coalesce.py) vs torch.unique + index_add_."""
    from hotpipe.model import coalesce

    if not coalesce.AVAILABLE:
        pytest.skip("numba is not installed")
    gen = torch.Generator().manual_seed(seed)
    init = torch.randn(rows, dim, generator=gen)
    # Skewed ids (many duplicates) and some exact zeros / negative zeros in the gradients.
    ids = [(torch.rand(lookups, generator=gen) ** 3 * rows).long() for _ in range(steps)]
    grads = [torch.randn(lookups, dim, generator=gen) * (torch.rand(lookups, 1, generator=gen) > 0.1)
             for _ in range(steps)]
    grads[0][0] = -0.0
    out = []
    for fused in (True, False):
        opt = make_row_optimizer(name, lr=0.05, dim=dim)
        store = SlotStore.allocate(rows, dim, opt)
        store.weights.copy_(init)
        emb = SparseEmbedding(store=store, optimizer=opt)
        emb.fused = fused
        for i, g in zip(ids, grads, strict=True):
            emb.apply_gradients(i.view(-1, 1) if lookups % 2 else i, g)
        out.append(store)
    assert torch.equal(out[0].weights, out[1].weights)
    assert torch.equal(out[0].state, out[1].state)
    assert torch.equal(out[0].dirty, out[1].dirty)
    assert torch.equal(out[0].weights.view(torch.int32), out[1].weights.view(torch.int32))


def test_auto_takes_the_compiled_pass_only_with_one_torch_thread(monkeypatch):
    from hotpipe.model import coalesce

    opt = make_row_optimizer("sgd", lr=0.05, dim=4)
    emb = SparseEmbedding(store=SlotStore.allocate(8, 4, opt), optimizer=opt)
    monkeypatch.setattr(coalesce, "AVAILABLE", True)
    for threads, compiled in ((1, True), (2, False)):
        monkeypatch.setattr(torch, "get_num_threads", lambda n=threads: n)
        assert emb._compiled() is compiled
    monkeypatch.setattr(coalesce, "AVAILABLE", False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert emb._compiled() is False  # no numba: the torch path
    emb.fused = True
    assert emb._compiled() is True  # forced


def test_warm_loads_the_kernels_only_for_the_compiled_path(monkeypatch):
    from hotpipe.model import coalesce

    calls = []
    monkeypatch.setattr(coalesce, "warm", lambda: calls.append(1))
    opt = make_row_optimizer("rowwise_adagrad", lr=0.05, dim=4)
    emb = SparseEmbedding(store=SlotStore.allocate(8, 4, opt), optimizer=opt)
    emb.fused = False
    emb.warm()
    assert calls == []
    emb.fused = True
    emb.warm()
    assert calls == [1]


@pytest.mark.skipif(not _jit.AVAILABLE, reason="needs numba")
def test_warm_loads_every_kernel_and_the_planner():
    # A fresh interpreter: in this one, earlier tests may have loaded the kernels already.
    import subprocess
    import sys

    code = (
        "from hotpipe.model import coalesce\n"
        "from hotpipe.plan import kernel\n"
        "from hotpipe.plan.planner import Planner\n"
        "fns = (coalesce.coalesce, coalesce.sgd_update, coalesce.rowwise_adagrad_update, kernel.plan_step)\n"
        "assert not any(f.signatures for f in fns)\n"
        "coalesce.warm()\n"
        "Planner(num_rows=10, capacity=5, window=2, depth=1).warm()\n"
        "assert all(f.signatures for f in fns), [f.signatures for f in fns]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
