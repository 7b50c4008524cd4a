"""Embedding lookup over a slot store, with a row-wise sparse update.

All tables of a model are fused into one row space: table ``t``'s row ``i``
is global row ``offsets[t] + i`` (``data/layout.py`` owns the offsets). Where a row physically lives is a *slot*
of a :class:`SlotStore` (weights and optimizer state side by side). Without
tiering, slot == global row; with tiering, the planner maps rows to slots of
a smaller fast cache. The model code is the same in both cases: it only ever
sees slots, which is why a tiered run equals an untiered one.

Forward/backward protocol (no autograd through the table, ever)::

    emb = bags.lookup(slots)          # (B, T, D) leaf tensor, requires_grad
    loss = model(dense, emb) ...; loss.backward()
    bags.apply_gradients(slots, emb.grad)   # row-wise sparse update
"""

from __future__ import annotations

import numpy as np
import torch

from hotpipe.model import coalesce as _coalesce
from hotpipe.model.sparse_optim import RowOptimizer, RowSGD, RowwiseAdagrad
from hotpipe.storage.slots import SlotStore

__all__ = ["SparseEmbedding"]


class SparseEmbedding:
    """Lookups and row-wise updates over a :class:`SlotStore`.

    Args:
        store: where rows live (all rows when untiered; a cache when tiered).
        optimizer: the row optimizer applied in :meth:`apply_gradients`.
    """

    def __init__(self, *, store: SlotStore, optimizer: RowOptimizer) -> None:
        self.store = store
        self.optimizer = optimizer
        #: None (auto): the compiled, single-threaded pass when numba is there and
        #: torch runs one intra-op thread; with more, torch's multi-threaded path
        #: was faster (BENCHMARKS "Embedding step on a quieter machine": compiled
        #: 1.41-1.49x torch at 1 thread, 0.66-0.79x at 2). True/False force one.
        #: Both give the same result bit for bit.
        self.fused: bool | None = None

    def _compiled(self) -> bool:
        if self.fused is None:
            return _coalesce.AVAILABLE and torch.get_num_threads() == 1
        return self.fused

    def warm(self) -> None:
        """Load the compiled update now if this embedding will use it (call with
        the training thread count set): its first call reads numba's cache."""
        if self._compiled():
            _coalesce.warm()

    def lookup(self, slots: torch.Tensor) -> torch.Tensor:
        """slots (B, T) int64 -> (B, T, D) float32 leaf that collects the gradient.

        ``index_select`` rather than advanced indexing: measured 3x faster
        for random rows on CPU.
        """
        b, t = slots.shape
        out = self.store.weights.index_select(0, slots.reshape(-1)).view(b, t, -1)
        return out.requires_grad_(True)

    def lookup_bags(self, slots: torch.Tensor, offsets: torch.Tensor, num_bags: int) -> torch.Tensor:
        """Multi-hot: slots (L,), offsets (num_bags + 1,) -> (num_bags, D) sum-pooled leaf."""
        rows = self.store.weights.index_select(0, slots)
        lengths = offsets[1:] - offsets[:-1]
        bag = torch.repeat_interleave(torch.arange(num_bags, device=slots.device), lengths)
        out = torch.zeros(num_bags, self.store.dim, dtype=rows.dtype, device=rows.device)
        out.index_add_(0, bag, rows)
        return out.requires_grad_(True)

    def apply_gradients(self, slots: torch.Tensor, grad: torch.Tensor) -> None:
        """Row-wise update of the slots a batch used.

        Args:
            slots: (L,) or (B, T) int64, the slots looked up (duplicates allowed).
            grad: (L, D) or (B, T, D), the gradient of each lookup.
        """
        flat = slots.reshape(-1)
        g = grad.reshape(flat.numel(), -1)
        if self._compiled() and g.device.type == "cpu" and g.dtype == torch.float32 and flat.numel():
            # One hashed pass: the same sums as below, bit for bit (model/coalesce.py).
            u, c = _coalesce.coalesce(flat.to(torch.int64).contiguous().numpy(),
                                      g.detach().contiguous().numpy())
            self.update_rows(torch.from_numpy(u), torch.from_numpy(c))
            return
        uniq, inverse = torch.unique(flat, return_inverse=True)
        # Sum duplicates first (in lookup order), like a dense gradient would.
        coalesced = torch.zeros(uniq.numel(), g.shape[1], dtype=g.dtype, device=g.device)
        coalesced.index_add_(0, inverse, g)
        self.update_rows(uniq, coalesced)

    def apply_bag_gradients(self, slots: torch.Tensor, offsets: torch.Tensor,
                            bag_grad: torch.Tensor) -> None:
        """Multi-hot: every id of a bag receives the bag's gradient (sum pooling)."""
        lengths = offsets[1:] - offsets[:-1]
        per_lookup = torch.repeat_interleave(bag_grad, lengths, dim=0)
        self.apply_gradients(slots, per_lookup)

    def update_rows(self, uniq: torch.Tensor, coalesced: torch.Tensor) -> None:
        """uniq (U,) distinct slots, coalesced (U, D) their summed gradients."""
        st = self.store
        if self._fused_update(uniq, coalesced):
            return
        if st.state.shape[1]:
            state = st.state.index_select(0, uniq)  # (U, W)
            delta = self.optimizer.delta(state, coalesced)
            st.state.index_copy_(0, uniq, state)
        else:
            delta = self.optimizer.delta(st.state[:0], coalesced)
        # alpha=1: index_add_ with another alpha takes a much slower path.
        st.weights.index_add_(0, uniq, delta)
        st.dirty.index_fill_(0, uniq, True)

    def _fused_update(self, uniq: torch.Tensor, coalesced: torch.Tensor) -> bool:
        """SGD / row-wise Adagrad in one compiled pass over the rows (CPU float32);
        False when this store or optimizer takes the torch path."""
        st, opt = self.store, self.optimizer
        if not (self._compiled() and st.weights.device.type == "cpu"
                and st.weights.dtype == torch.float32 and coalesced.dtype == torch.float32
                and st.weights.is_contiguous() and st.state.is_contiguous()
                and type(opt) in (RowSGD, RowwiseAdagrad)):
            return False
        u = uniq.to(torch.int64).contiguous().numpy()
        g = coalesced.detach().contiguous()
        w, dirty = st.weights.detach().numpy(), st.dirty.numpy()
        neg_lr = np.float32(-opt.lr)  # type: ignore[attr-defined]
        if isinstance(opt, RowwiseAdagrad):
            # The (U, 1) state math as delta() does it; the (U, D) part compiled.
            state = st.state.index_select(0, uniq).add_(g.square().mean(dim=1, keepdim=True))
            denom = state.sqrt().add_(opt.eps)
            _coalesce.rowwise_adagrad_update(w, st.state.detach().numpy(), dirty, u, g.numpy(),
                                             state.reshape(-1).numpy(),
                                             denom.reshape(-1).numpy(), neg_lr)
        else:
            _coalesce.sgd_update(w, dirty, u, g.numpy(), neg_lr)
        return True
