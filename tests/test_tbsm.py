"""The TBSM-style sequence model: attention over a behaviour list, checked against a loop."""

from __future__ import annotations

import math

import pytest
import torch

from hotpipe.config import load_config
from hotpipe.errors import ConfigError
from hotpipe.model.bags import JaggedRows
from hotpipe.model.tbsm import TBSM, history_padded
from hotpipe.train.builders import build_model


def _tiny(dtype: torch.dtype = torch.float32) -> TBSM:
    torch.manual_seed(0)
    return TBSM(num_dense=2, num_tables=3, embedding_dim=4, bottom=[4], top=[6, 1], history_table=0,
                target_table=1, history_len=3).to(dtype)


def _batch(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, JaggedRows]:
    # B = 4 samples, T = 3 tables; the history bags have 0, 2, 5, 1 items (5 > history_len)
    lengths = torch.tensor([0, 2, 5, 1, 1, 1, 1, 1, 2, 0, 1, 3])
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    g = torch.Generator().manual_seed(1)
    rows = torch.randn(int(lengths.sum()), 4, generator=g, dtype=dtype)
    return torch.randn(4, 2, generator=g, dtype=dtype), JaggedRows(rows, offsets, 3)


def _attend_by_loop(m: TBSM, rows: torch.Tensor, offsets: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    out = []
    for b in range(target.shape[0]):
        items = rows[int(offsets[b]):int(offsets[b + 1])]  # oldest first
        if items.shape[0] == 0:
            out.append(torch.zeros_like(target[b]))
            continue
        q = m.query(target[b])
        recency = torch.arange(items.shape[0] - 1, -1, -1).clamp(max=m.recency.shape[0] - 1)
        keys = items + m.recency[recency]
        w = torch.softmax(keys @ q / math.sqrt(q.shape[0]), dim=0)
        out.append(w @ items)
    return torch.stack(out)


def test_padding_puts_the_most_recent_item_first():
    rows = torch.arange(6.0).view(6, 1)
    padded, mask, recency = history_padded(rows, torch.tensor([0, 0, 2, 6]))
    assert padded.squeeze(2).tolist() == [[0, 0, 0, 0], [1, 0, 0, 0], [5, 4, 3, 2]]
    assert mask.tolist() == [[False] * 4, [True, True, False, False], [True] * 4]
    assert recency[0].tolist() == [0, 1, 2, 3]


def test_attention_matches_a_per_sample_loop():
    m = _tiny()
    _, emb = _batch()
    rows, off = emb.table(0)
    target = torch.randn(4, 4)
    torch.testing.assert_close(m.attend(rows, off, target), _attend_by_loop(m, rows, off, target))


def test_the_loop_reference_can_fail():
    m = _tiny()
    _, emb = _batch()
    rows, off = emb.table(0)
    target = torch.randn(4, 4)
    with torch.no_grad():
        m.recency[1] += 1.0  # only the loop would use a wrong recency if the two disagreed
    flipped = rows.flip(0)  # another order of the same items changes the answer
    assert not torch.allclose(m.attend(flipped, off, target), _attend_by_loop(m, rows, off, target))


def test_order_matters_and_an_empty_history_gives_zeros():
    m = _tiny()
    _, emb = _batch()
    rows, off = emb.table(0)
    target = torch.randn(4, 4)
    ctx = m.attend(rows, off, target)
    assert torch.equal(ctx[0], torch.zeros(4))
    swapped = rows.clone()
    swapped[[2, 6]] = rows[[6, 2]]  # reverse the ends of sample 2's list
    assert not torch.allclose(m.attend(swapped, off, target)[2], ctx[2])


def test_gradcheck_whole_model():
    m = _tiny(torch.float64)
    dense, emb = _batch(torch.float64)
    rows = emb.rows.clone().requires_grad_(True)
    dense.requires_grad_(True)

    def f(d: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return m(d, JaggedRows(r, emb.offsets, 3))

    # fast_mode checks a random projection of the Jacobian (one backward instead of one per input)
    assert torch.autograd.gradcheck(f, (dense, rows), eps=1e-6, atol=1e-5, fast_mode=True)


def test_one_hot_input_is_a_history_of_one():
    m = _tiny()
    emb = torch.randn(5, 3, 4)
    as_bags = JaggedRows(emb.transpose(0, 1).reshape(15, 4), torch.arange(16), 3)
    dense = torch.randn(5, 2)
    torch.testing.assert_close(m(dense, emb), m(dense, as_bags))


def test_config_keys_are_checked():
    with pytest.raises(ConfigError, match="model.target_table"):
        load_config(overrides=["model.arch=tbsm", "model.history_table=1", "model.target_table=1"])
    cfg = load_config(overrides=["model.arch=tbsm", "model.target_table=5"])
    with pytest.raises(ConfigError, match="model.target_table"):
        build_model(cfg.model, num_dense=2, num_tables=3)
    assert isinstance(build_model(load_config(overrides=["model.arch=tbsm"]).model, num_dense=2,
                                  num_tables=3), TBSM)
