"""DLRM parts: the fused interaction equals plain autograd."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hotpipe.model.dlrm import DLRM, DotInteraction


@settings(max_examples=20, deadline=None)
@given(b=st.integers(1, 9), f=st.integers(2, 12), d=st.integers(1, 9), seed=st.integers(0, 999))
def test_interaction_matches_autograd(b, f, d, seed):
    torch.manual_seed(seed)
    inter = DotInteraction(f)
    x1 = torch.randn(b, f, d, dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    g = torch.randn(b, f * (f - 1) // 2, dtype=torch.float64)
    y1, y2 = inter(x1), inter.reference(x2)
    torch.testing.assert_close(y1, y2)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad)


def test_interaction_gradcheck():
    inter = DotInteraction(5)
    x = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(inter, (x,))


def test_dlrm_shapes_and_validation():
    m = DLRM(num_dense=13, num_tables=4, embedding_dim=8, bottom=[16, 8], top=[16, 1])
    assert m(torch.zeros(5, 13), torch.zeros(5, 4, 8)).shape == (5,)
    m0 = DLRM(num_dense=0, num_tables=4, embedding_dim=8, bottom=[8], top=[16, 1])
    assert m0(torch.zeros(5, 0), torch.zeros(5, 4, 8)).shape == (5,)
    with pytest.raises(ValueError, match="embedding_dim"):
        DLRM(num_dense=13, num_tables=4, embedding_dim=8, bottom=[16, 4], top=[16, 1])
    with pytest.raises(ValueError, match="1 output"):
        DLRM(num_dense=13, num_tables=4, embedding_dim=8, bottom=[16, 8], top=[16, 2])
