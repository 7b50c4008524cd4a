"""DCN-v2 and Ad-Rec: layer references, gradients, tiered exactness, resume, learning, config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hotpipe.cli import main
from hotpipe.config import load_config
from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.loader import split_loaders
from hotpipe.errors import ConfigError
from hotpipe.model.adrec import AdRec, MaskedSelfAttention
from hotpipe.model.dcn import DCN, CrossNet
from hotpipe.model.dlrm import DLRM
from hotpipe.plan.planner import min_capacity
from hotpipe.train.builders import build_model
from hotpipe.train.checkpoint import load_checkpoint
from hotpipe.train.run import train
from tests.conftest import make_dataset

ARCHS = {
    "dcn": ["model.arch=dcn", "model.cross_layers=2", "model.cross_rank=4", "model.deep=[8]"],
    "dcn_parallel": ["model.arch=dcn", "model.cross_layers=2", "model.dcn_structure=parallel",
                     "model.deep=[8]", "model.bottom=[]"],
    "adrec": ["model.arch=adrec", "model.heads=2", "model.attn_layers=2"],
}
# One thread: these tests check the math, and on a loaded 2-core machine two
# intra-op threads make tiny steps 10x slower. Exactness with torch's default
# threads is checked once, in the slow test below.
BASE = ["train.progress=false", "train.log_every=5", "model.embedding_dim=4",
        "model.bottom=[8,4]", "model.top=[8,1]", "data.val_fraction=0.2", "train.threads=1"]


# ----------------------------------------------------------------- layers


@settings(max_examples=20, deadline=None)
@given(b=st.integers(1, 6), n=st.integers(1, 12), layers=st.integers(1, 3),
       rank=st.integers(0, 5), seed=st.integers(0, 999))
def test_cross_net_matches_the_formula(b, n, layers, rank, seed):
    torch.manual_seed(seed)
    net = CrossNet(n, layers=layers, rank=rank).double()
    for p in net.parameters():  # non-zero biases, so the test sees them
        torch.nn.init.normal_(p)
    x = torch.randn(b, n, dtype=torch.float64)
    torch.testing.assert_close(net(x), net.reference(x))


def test_low_rank_with_the_product_of_factors_equals_full_rank():
    torch.manual_seed(0)
    low = CrossNet(8, layers=2, rank=2).double()
    full = CrossNet(8, layers=2, rank=0).double()
    with torch.no_grad():
        for f, (w, b) in zip(full.maps, low.matrices(), strict=True):
            f.weight.copy_(w)
            f.bias.copy_(b)
    x = torch.randn(5, 8, dtype=torch.float64)
    torch.testing.assert_close(low(x), full(x))
    assert sum(p.numel() for p in low.parameters()) < sum(p.numel() for p in full.parameters())


def test_the_cross_net_reference_can_fail():
    # A reference that agrees with anything proves nothing: a changed bias must show.
    net = CrossNet(4, layers=1, rank=0).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    before = net(x)
    with torch.no_grad():
        net.maps[0].bias.add_(1.0)
    assert not torch.allclose(before, net.reference(x))


@settings(max_examples=20, deadline=None)
@given(b=st.integers(1, 5), f=st.integers(2, 9), heads=st.sampled_from([1, 2, 4]),
       seed=st.integers(0, 999))
def test_masked_attention_matches_the_written_out_version(b, f, heads, seed):
    torch.manual_seed(seed)
    att = MaskedSelfAttention(8, heads=heads, num_tokens=f).double()
    x1 = torch.randn(b, f, 8, dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    y1, y2 = att(x1), att.reference(x2)
    torch.testing.assert_close(y1, y2)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad)


def test_masked_attention_removes_self_interaction():
    torch.manual_seed(1)
    att = MaskedSelfAttention(4, heads=2, num_tokens=5).double()
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    p = att.probs(x)  # (B, H, F, F)
    assert torch.all(torch.diagonal(p, dim1=-2, dim2=-1) == 0)
    torch.testing.assert_close(p.sum(-1), torch.ones(3, 2, 5, dtype=torch.float64))
    # Token 0's output mixes only the values of tokens 1..F-1: with the queries and keys
    # held fixed, changing token 0's value vector leaves its own output unchanged.
    q, k, v = att._heads(x)
    v2 = v.clone()
    v2[:, :, 0] += 10.0
    out, out2 = p @ v, p @ v2
    torch.testing.assert_close(out[:, :, 0], out2[:, :, 0])
    assert not torch.allclose(out[:, :, 1:], out2[:, :, 1:])  # ... while the others see it


def test_masked_attention_rejects_bad_shapes():
    with pytest.raises(ValueError, match="divisible"):
        MaskedSelfAttention(6, heads=4, num_tokens=3)
    with pytest.raises(ValueError, match=">= 2 feature tokens"):
        MaskedSelfAttention(4, heads=2, num_tokens=1)


# ------------------------------------------------------------ whole models


def _tiny(arch: str) -> torch.nn.Module:
    cfg = load_config(overrides=[*BASE, *ARCHS[arch]])
    return build_model(cfg.model, num_dense=3, num_tables=3)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_gradcheck_whole_model(arch):
    torch.manual_seed(0)
    m = _tiny(arch).double()
    dense = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    emb = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (dense, emb))


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_no_dense_features(arch):
    cfg = load_config(overrides=[*BASE, *ARCHS[arch]])
    m = build_model(cfg.model, num_dense=0, num_tables=3)
    assert m(torch.zeros(5, 0), torch.randn(5, 3, 4)).shape == (5,)


def test_build_model_dispatches_on_arch():
    kinds = {arch: type(_tiny(arch)) for arch in ARCHS}
    assert kinds == {"dcn": DCN, "dcn_parallel": DCN, "adrec": AdRec}
    assert type(build_model(load_config(overrides=BASE).model, num_dense=3, num_tables=3)) is DLRM


def test_model_constructors_refuse_bad_shapes():
    kw = dict(num_dense=3, num_tables=2, embedding_dim=4, bottom=[4], top=[1])
    with pytest.raises(ValueError, match="parallel DCN needs a deep"):
        DCN(**kw, cross_layers=1, cross_rank=0, structure="parallel", deep=[])
    with pytest.raises(ValueError, match="1 output"):
        DCN(**{**kw, "top": [2]}, cross_layers=1, cross_rank=0, structure="stacked", deep=[])
    with pytest.raises(ValueError, match="embedding_dim=4"):
        AdRec(**{**kw, "bottom": [5]}, heads=2, attn_layers=1, ffn_mult=1)


# --------------------------------------------------- tiered, resume, learns


def _run(data: Path, out: Path, *extra: str) -> tuple[list[float], np.ndarray, dict]:
    m = train(load_config(overrides=[*BASE, f"data.path={data}", *extra]), out)
    losses = json.loads((out / "losses.json").read_text())
    _, records = load_checkpoint(out)
    return losses, np.array(records), m


def _tiered_equals_untiered(tmp_path: Path, arch: str, *extra: str) -> None:
    data = make_dataset(tmp_path / "d", rows=1200, cards=(300, 30, 500), seed=3)
    common = ["data.batch_size=32", "optim.embedding=rowwise_adagrad", *ARCHS[arch], *extra]
    ref_loss, ref_rec, ref = _run(data, tmp_path / "ref", *common)
    ds = ColumnarDataset.open(data)
    tr, _ = split_loaders(ds, batch_size=32, val_fraction=0.2)
    cap = min_capacity(tr.id_stream(np.cumsum([0, *ds.cardinalities[:-1]])), 2) + 10
    loss, rec, m = _run(data, tmp_path / "t", *common, "cache.policy=lookahead",
                        f"cache.capacity={cap}", "cache.window=8", "cache.depth=2")
    assert m["cache"]["rows_written_back"] > 0  # the small cache really evicted rows
    assert loss == ref_loss
    assert np.array_equal(rec, ref_rec)
    assert m["val_auc"] == ref["val_auc"]


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_tiered_equals_untiered_bit_for_bit(tmp_path, arch):
    _tiered_equals_untiered(tmp_path, arch)


@pytest.mark.slow
def test_adrec_tiered_exact_with_two_threads(tmp_path):
    # The fused attention kernel splits work across threads; it must still give
    # the same bits in both runs (same thread count, same data, same order).
    _tiered_equals_untiered(tmp_path, "adrec", "train.threads=2")


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_resume_is_exact(tmp_path, arch):
    data = make_dataset(tmp_path / "d", rows=1200, cards=(300, 40, 500), seed=5)
    common = ["data.batch_size=32", "cache.policy=lookahead", "cache.capacity=0.3",
              "cache.window=8", *ARCHS[arch]]
    full, full_rec, _ = _run(data, tmp_path / "full", *common, "train.max_steps=20")
    _run(data, tmp_path / "part", *common, "train.max_steps=8")
    train(load_config(overrides=[*BASE, f"data.path={data}", *common, "train.max_steps=20"]),
          tmp_path / "part", resume=True)
    assert json.loads((tmp_path / "part" / "losses.json").read_text()) == full
    assert np.array_equal(np.array(load_checkpoint(tmp_path / "part")[1]), full_rec)


def test_resume_refuses_another_arch(tmp_path):
    data = make_dataset(tmp_path / "d", rows=600)
    _run(data, tmp_path / "run", "data.batch_size=32", "train.max_steps=3", *ARCHS["dcn"])
    with pytest.raises((ConfigError, RuntimeError)):
        train(load_config(overrides=[*BASE, f"data.path={data}", "data.batch_size=32",
                                     "train.max_steps=6", *ARCHS["adrec"]]),
              tmp_path / "run", resume=True)


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(ARCHS))  # each < 5 s on one thread
def test_learns_planted_teacher(tmp_path, arch):
    data = make_dataset(tmp_path / "d", rows=4096)
    m = train(load_config(overrides=[
        "data.batch_size=64", "train.progress=false", "train.epochs=4", f"data.path={data}",
        "train.threads=1",
        "model.embedding_dim=8", "model.bottom=[16,8]", "model.top=[16,1]", *ARCHS[arch],
        "model.deep=[16]"]), tmp_path / "run")
    assert m["val_auc"] > 0.7, m


# ------------------------------------------------------------------ config


@pytest.mark.parametrize("override,key", [
    ("model.arch=dcnv2", "model.arch"),
    ("model.cross_layers=0", "model.cross_layers"),
    ("model.cross_rank=-1", "model.cross_rank"),
    ("model.dcn_structure=side", "model.dcn_structure"),
    ("model.deep=[8,0]", "model.deep"),
    ("model.heads=0", "model.heads"),
    ("model.attn_layers=0", "model.attn_layers"),
    ("model.ffn_mult=0", "model.ffn_mult"),
    ("model.cross_layers=true", "model.cross_layers"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=[override])
    assert key in str(e.value)


@pytest.mark.parametrize("overrides,key", [
    (["model.arch=adrec", "model.embedding_dim=6", "model.bottom=[6]", "model.heads=4"], "model.heads"),
    (["model.arch=dcn", "model.dcn_structure=parallel", "model.deep=[]"], "model.deep"),
    (["model.arch=adrec", "model.bottom=[]"], "model.bottom"),
    (["model.arch=adrec", "model.bottom=[8]"], "model.bottom"),
])
def test_inconsistent_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=overrides)
    assert key in str(e.value)


def test_dcn_accepts_raw_dense_and_any_bottom_width():
    assert load_config(overrides=["model.arch=dcn", "model.bottom=[]"]).model.bottom == []
    assert load_config(overrides=["model.arch=dcn", "model.bottom=[32]"]).model.bottom == [32]
    # heads only matter for adrec: an odd dim stays fine for the other archs
    load_config(overrides=["model.embedding_dim=5", "model.bottom=[5]", "model.heads=2"])


@pytest.mark.parametrize("arch", ["dcn", "adrec"])
def test_cli_train(tmp_path, capsys, arch):
    data = make_dataset(tmp_path / "d", rows=1024)
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--no-progress",
               "data.batch_size=64", "model.embedding_dim=8", "model.bottom=[16,8]",
               "model.top=[8,1]", "train.threads=1", f"model.arch={arch}"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["steps"] > 0 and 0.0 <= out["val_auc"] <= 1.0
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "run2"), "model.arch=dcn",
               "model.cross_rank=-2"])
    assert rc == 2
    assert "model.cross_rank" in capsys.readouterr().err
