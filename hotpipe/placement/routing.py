"""Who sends which rows to whom in one step: the distributed runtime's routing, computed alike on every rank.

Every rank reads the same global batch, so every rank can work out, without
asking, which rows each peer needs from it (the usual all-to-all of ids is
replaced by foresight). This module is that computation, as pure tensor
work on the sharding rule (row ``g`` lives on rank ``g % W``) and the
replicated set. The runtime (``distributed/exchange.py``) calls it every
step; ``hotpipe calibrate`` times the same function, so the cost model's
routing term measures what the runtime runs. It lives in ``placement/``
(below ``distributed/`` in the import layers) for that reason.

One call, rank r of W, ``needs[s]`` = the (L_s,) ids rank s looks up::

    own       u, inv = unique(needs[r])                  r's distinct ids (one sort of L_r)
    served    pairs (s, g), s != r, with g % W == r, g not replicated, distinct:
              one sort of keys s * R + g over only the ids r owns (~1/W of them);
              r's own requests come from u -> requester by requester, ascending
    touched   replicated ids any rank looks up: a flag per row set, read
              over the replicated rows, cleared (no sort)

Why flags: membership in the replicated set and "touched" are one gather
per id over a (R,) bool array (1 byte a row, plus one scratch byte shared
with the runtime's other per-step sets), where ``torch.isin`` sorts both
sides; at B*T = 53k ids an ``isin`` took 4 ms, a tenth of a step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class StepRoutes:
    """Who sends which rows to whom in one exchange; the same on every rank up to ``rank``.

    Attributes:
        shape: shape of this rank's lookups (e.g. (b, T)).
        uniq: (U,) distinct global ids this rank looks up: the exchanged ones
            grouped by owner (owner order, ascending within an owner) — the
            order rows arrive in — then its replicated ones (``rep_ids``).
        inverse: (L,) index into ``uniq`` of each lookup, L = prod(shape).
        recv_counts: W ints, rows arriving from each owner.
        serve: (S,) rows this rank sends, requester by requester (ascending
            within one): local ids (``g // W``) from :meth:`Routing.route`; the
            runtime replaces them by the slots its store holds them in.
        send_counts: W ints, rows sent to each requester.
        serve_ids: (S,) global ids of ``serve``'s rows.
        rep_ids: (Ur,) replicated ids this rank looks up, ascending.
        touched: (Tk,) replicated ids any rank looks up, ascending (all-reduced).
    """

    shape: tuple[int, ...]
    uniq: torch.Tensor
    inverse: torch.Tensor
    recv_counts: list[int]
    serve: torch.Tensor
    send_counts: list[int]
    serve_ids: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))
    rep_ids: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))
    touched: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))

    @property
    def num_remote(self) -> int:
        """Distinct ids fetched through the all-to-all (the rest are replicas)."""
        return len(self.uniq) - len(self.rep_ids)


class Routing:
    """Rank ``rank``'s routing over ``num_rows`` rows on ``world_size`` ranks.

    Args:
        num_rows: rows of the fused row space (R).
        world_size: ranks W.
        rank: this rank.
        replicated: (H,) int64 ascending global ids held by every rank.

    Example:
        >>> rt = Routing(8, world_size=2, rank=0, replicated=torch.tensor([3]))
        >>> r = rt.route([torch.tensor([3, 4, 5]), torch.tensor([0, 3, 4])])
        >>> r.uniq.tolist(), r.serve_ids.tolist(), r.send_counts, r.touched.tolist()
        ([4, 5, 3], [4, 0, 4], [1, 2], [3])
    """

    def __init__(self, num_rows: int, *, world_size: int, rank: int,
                 replicated: torch.Tensor | None = None) -> None:
        self.num_rows, self.world_size, self.rank = num_rows, world_size, rank
        rep = replicated if replicated is not None else torch.empty(0, dtype=torch.int64)
        self.replicated = rep.to(torch.int64)
        self.is_replicated: torch.Tensor | None = None
        if len(rep):
            self.is_replicated = torch.zeros(num_rows, dtype=torch.bool)
            self.is_replicated[self.replicated] = True
        self._scratch: torch.Tensor | None = None  # (R,) bool, all False between calls

    def scratch(self) -> torch.Tensor:
        """A (R,) bool flag per row, all False; callers set flags and clear them again."""
        if self._scratch is None:
            self._scratch = torch.zeros(self.num_rows, dtype=torch.bool)
        return self._scratch

    def member(self, ids: torch.Tensor, of: torch.Tensor) -> torch.Tensor:
        """(N,) bool: which of ``ids`` occur in ``of`` (any shape, duplicates allowed)."""
        flags, flat = self.scratch(), of.reshape(-1)
        try:
            flags[flat] = True
            return flags[ids]
        finally:
            flags[flat] = False  # all False again, whatever happened

    def route(self, needs: list[torch.Tensor]) -> StepRoutes:
        """needs[s]: int64 global ids rank s looks up (any shape); see the module docstring.

        Raises:
            ValueError: not one tensor per rank.
        """
        w, r = self.world_size, self.rank
        if len(needs) != w:
            raise ValueError(f"route needs one id tensor per rank ({w}), got {len(needs)}")
        rep = self.is_replicated
        u, inv = torch.unique(needs[r].reshape(-1), return_inverse=True)  # sorted
        hot = rep[u] if rep is not None else torch.zeros(len(u), dtype=torch.bool)
        cold = u[~hot]
        lens = [n.numel() for n in needs]
        flat = torch.cat([n.reshape(-1) for n in needs])  # (sum L_s,)
        mine = flat.remainder(w) == r
        if rep is not None:
            mine &= ~rep[flat]
        lo = sum(lens[:r])
        mine[lo:lo + lens[r]] = False  # r's own requests: from its sorted distinct ids below
        at = torch.nonzero(mine).squeeze(1)
        if len(set(lens)) == 1:
            requester = at.div(lens[0], rounding_mode="floor")
        else:
            requester = torch.repeat_interleave(torch.arange(w), torch.tensor(lens))[at]
        # Distinct (requester, id) pairs in one sort; R bounds every id.
        keys = torch.unique(requester * self.num_rows + flat[at])  # by requester, then id
        by = keys.div(self.num_rows, rounding_mode="floor")
        send = torch.bincount(by, minlength=w)
        own_served = cold[cold.remainder(w) == r]  # ascending
        send[r] = len(own_served)
        k = int(send[:r].sum())  # requesters before r come first
        others = keys.remainder(self.num_rows)
        serve_ids = torch.cat([others[:k], own_served, others[k:]])
        touched = torch.empty(0, dtype=torch.int64)
        if rep is not None:
            touched = self.replicated[self.member(self.replicated, flat[rep[flat]])]  # ascending
        own = cold.remainder(w)
        # Rows arrive grouped by owner (ascending within one); replicas come last.
        order = torch.cat([torch.nonzero(~hot).squeeze(1)[torch.argsort(own, stable=True)],
                           torch.nonzero(hot).squeeze(1)])
        pos = torch.empty_like(order)
        pos[order] = torch.arange(len(order))
        return StepRoutes(tuple(needs[r].shape), u[order], pos[inv],
                          torch.bincount(own, minlength=w).tolist(),
                          serve_ids.div(w, rounding_mode="floor"), send.tolist(),
                          serve_ids=serve_ids, rep_ids=u[hot], touched=touched)
