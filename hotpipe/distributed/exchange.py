"""Rows to the ranks that look them up, gradients back to the ranks that own them.

Every rank reads the same global batch, so every rank can work out, without
asking, which rows each peer needs from it: the usual first all-to-all (of
ids) is replaced by foresight, and each step moves only rows and gradients.

One step, rank r of W (``U_r`` distinct ids among r's lookups, grouped by
owner; ``S_r`` = rows r serves to all requesters, in requester order)::

    route(needs)        needs[s]: (..,) global ids rank s looks up   (local, no traffic)
    fetch_ahead(routes, changing)   all_to_all owner -> requester of the rows the step
                                    in flight does not look up (their values are final),
                                    sent while it computes
    fetch_rest(ahead)               after that step's update, the rows it changed
                        together: send (S_r, D), recv (U_r, D) -> (.., D) rows of r's lookups
                        (no step in flight, changing=None: every row in the first)
    push(routes, grad)  coalesce r's (.., D) lookup grads to (U_r, D), all_to_all back
                        owner receives (S_r, D), one block per requester in rank order
    apply(...)          owner sums each row's blocks in rank order, row optimizer

Why exact: the row optimizer sees, per row, the sum of all lookups'
gradients, as in one process. The only difference is association: one
process sums a row's lookups left to right over the global batch; here each
rank sums its own samples left to right and the owner adds those partial
sums in rank order, ``(g1+g2) + (g3+g4)`` instead of ``((g1+g2)+g3)+g4``.
(Given the same lookup gradients, a row looked up by one rank only gets the
same bits; the lookup gradients themselves differ in the last bits once the
dense replicas have absorbed a reordered all-reduce.)

Why the split fetch is exact: a row's value changes only when a step that
looked it up applies its update. Every rank knows the global batch of the
step in flight, so owner and requester agree, without asking, which rows of
the next step it changes (``changing``); the rest are read at once and go out
in an all-to-all that runs in gloo's threads while this rank computes, and
the changed ones follow in a second, usually much smaller, all-to-all after
the update. Both sides order each part as a subsequence of the one-shot
order, so the merged rows are the bits :meth:`RowExchange.fetch` would give.

Where the owned rows live (``shards.py``): all resident, or tiered behind a
planned cache; ``route`` turns the local ids a rank serves into the slots the
step's plan gave them, and the rest of the step reads and updates by slot.

Replicated rows (``replicas.py``) skip the all-to-all: they are read from
the local copy, and their per-rank partial sums are added by an all-reduce
over the replicated rows any rank touched (gloo's ring picks the order of
that sum; all ranks get the same bits).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist

from hotpipe.data.loader import BatchLoader
from hotpipe.distributed.context import DistContext
from hotpipe.distributed.replicas import ReplicaSet
from hotpipe.distributed.sharding import RowSharding
from hotpipe.distributed.shards import OwnedRows, ShardStep
from hotpipe.model.embedding import SparseEmbedding
from hotpipe.placement.routing import Routing, StepRoutes
from hotpipe.storage.slots import FLOAT_BYTES, SlotStore


@dataclass
class ExchangeStats:
    """Cumulative traffic of one rank (rows to or from itself are not counted).

    ``exchange_seconds`` is time spent waiting for all-to-alls; the dense
    all-reduce is counted apart (``allreduce_*``).
    """

    steps: int = 0
    rows_sent: int = 0
    rows_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    exchange_seconds: float = 0.0
    allreduce_bytes: int = 0  # payload handed to all_reduce (not wire bytes)
    allreduce_seconds: float = 0.0
    # Forward rows received in a step's first exchange (sent while the previous
    # step computed; with nothing in flight — the first step, or
    # dist.fetch_ahead=false — every row) and in its second, after the
    # previous update (the rows it changed). They sum to rows received forward.
    rows_fetched_ahead: int = 0
    rows_fetched_after_update: int = 0
    ahead_wait_seconds: float = 0.0  # part of exchange_seconds: waiting for the first exchange

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class Ahead:
    """The rows of a step sent ahead (:meth:`RowExchange.fetch_ahead`), and what is left.

    Attributes:
        routes: the step's routes.
        work, recv: the ahead all-to-all in flight and its (n_ahead, D) rows.
        late_recv: (U - Ur,) bool, this rank's exchanged rows that come after the update.
        late_serve: (S,) bool, rows this rank serves after the update.
        requester: (S,) the rank each served row goes to.
        owner: (U - Ur,) the rank each exchanged row comes from.
        rest: whether :meth:`RowExchange.fetch_rest` exchanges again (a step was in flight).
    """

    routes: StepRoutes
    work: object
    recv: torch.Tensor
    late_recv: torch.Tensor
    late_serve: torch.Tensor
    requester: torch.Tensor
    owner: torch.Tensor
    rest: bool


class Handle:
    """An exchange in flight; :meth:`wait` returns its result (STYLE: only the loop waits)."""

    def __init__(self, work: object, result: torch.Tensor, finish: object, stats: ExchangeStats,
                 ctx: DistContext, where: str) -> None:
        self._work, self._result, self._finish = work, result, finish
        self._stats, self._ctx, self._where = stats, ctx, where

    def wait(self) -> torch.Tensor:
        t0 = time.perf_counter()
        with self._ctx.guard(self._where):
            if self._work is not None:
                self._work.wait()  # type: ignore[attr-defined]
        self._stats.exchange_seconds += time.perf_counter() - t0
        return self._finish(self._result)  # type: ignore[operator,no-any-return]


class RowExchange:
    """Row-wise sharded embedding rows for one rank: its store plus the exchange.

    Args:
        ctx: this rank's process group.
        sharding: who owns which row.
        shard: this rank's rows (``shards.build_owned_rows``): resident or tiered.
        embedding: the row optimizer over ``shard.store`` (its ``update_rows`` is used).
        replicas: hot rows held by every rank (``replicas.py``), or None.

    Example:
        >>> for step in ex.steps(loader, 0, n):                 # doctest: +SKIP
        ...     routes = ex.route([gids[:b], gids[b:]], step.slots_of)
        >>> emb = ex.fetch_rest(ex.fetch_ahead(routes, None)).wait().requires_grad_()  # (b, T, D)
        >>> ... loss.backward(); ex.apply(routes, ex.push(routes, emb.grad).wait())
    """

    def __init__(self, *, ctx: DistContext, sharding: RowSharding, shard: OwnedRows,
                 embedding: SparseEmbedding, replicas: ReplicaSet | None = None) -> None:
        if embedding.store is not shard.store:
            raise ValueError("the row optimizer must update the shard's own store")
        self.ctx, self.sharding, self.shard, self.embedding = ctx, sharding, shard, embedding
        self.store: SlotStore = shard.store
        self.replicas = replicas if replicas is not None and len(replicas) else None
        self.stats = ExchangeStats()
        self.routing = Routing(sharding.layout.num_rows, world_size=ctx.world_size, rank=ctx.rank,
                               replicated=self.replicas.rows if self.replicas is not None else None)

    def steps(self, loader: BatchLoader, start: int, stop: int) -> Generator[ShardStep, None, None]:
        """Global steps ``[start, stop)`` with this rank's rows of each step resident."""
        return self.shard.steps(loader, start, stop)

    def step_done(self, step: int) -> None:
        """Step ``step`` is updated: a tiered shard may evict its rows now."""
        self.shard.step_done(step)

    def next_ready(self) -> bool:
        """Whether :meth:`steps` can hand out its next step without waiting for the mover."""
        return self.shard.next_ready()

    def route(self, needs: Sequence[torch.Tensor],
              slots_of: Callable[[torch.Tensor], torch.Tensor] | None = None) -> StepRoutes:
        """needs[s]: int64 global ids rank s looks up (any shape); computed alike on all ranks
        (``placement/routing.py``).

        ``slots_of`` maps the local ids this rank serves to their slots in the
        store (a step's plan, ``ShardStep.slots_of``); without it ``serve``
        holds local ids (read them with ``shard.read_weights``).
        """
        routes = self.routing.route(list(needs))
        if slots_of is not None:
            routes.serve = slots_of(routes.serve)
        return routes

    def _count(self, sent_rows: int, recv_rows: int) -> None:
        row_bytes = self.store.dim * FLOAT_BYTES
        self.stats.rows_sent += sent_rows
        self.stats.rows_received += recv_rows
        self.stats.bytes_sent += sent_rows * row_bytes
        self.stats.bytes_received += recv_rows * row_bytes

    def _remote(self, counts: list[int]) -> int:
        return sum(counts) - counts[self.ctx.rank]

    def fetch(self, routes: StepRoutes, send: torch.Tensor) -> Handle:
        """Send ``send`` (S, D), the rows aligned with ``routes.serve``, to their
        requesters in one exchange; ``wait()`` -> (*shape, D). For rows read from
        elsewhere than the store (evaluation reads a flushed shard); training
        reads by slot through :meth:`fetch_ahead` / :meth:`fetch_rest`.
        """
        work, recv = self._all_to_all(send, routes.send_counts, routes.recv_counts,
                                      "row exchange (forward)")
        self._count(self._remote(routes.send_counts), self._remote(routes.recv_counts))
        self.stats.steps += 1
        return Handle(work, recv, lambda rows: self._lookups(routes, rows), self.stats, self.ctx,
                      "row exchange (forward)")

    def fetch_ahead(self, routes: StepRoutes, changing: torch.Tensor | None) -> Ahead:
        """Start sending the rows of ``routes`` that the step in flight leaves unchanged.

        changing: global ids the step in flight looks up, any shape (its update
            changes them; duplicates allowed), or None when no step is in
            flight (then every row goes now and :meth:`fetch_rest` sends none).

        Call before the in-flight step's :meth:`push` (every rank issues its
        collectives in one order); the rows are read from the store now.
        """
        n = routes.num_remote
        w = self.ctx.world_size
        owner = self.sharding.owner(routes.uniq[:n])  # (n,)
        requester = torch.repeat_interleave(torch.arange(w), torch.tensor(routes.send_counts))  # (S,)
        if changing is None:
            late_recv = torch.zeros(n, dtype=torch.bool)
            late_serve = torch.zeros(len(routes.serve), dtype=torch.bool)
        else:
            late_recv = self.routing.member(routes.uniq[:n], changing)
            late_serve = self.routing.member(routes.serve_ids, changing)
        send = self.store.weights.index_select(0, routes.serve[~late_serve])  # (S_ahead, D)
        send_counts = torch.bincount(requester[~late_serve], minlength=w).tolist()
        recv_counts = torch.bincount(owner[~late_recv], minlength=w).tolist()
        work, recv = self._all_to_all(send, send_counts, recv_counts, "row exchange (ahead)")
        self._count(self._remote(send_counts), self._remote(recv_counts))
        self.stats.rows_fetched_ahead += self._remote(recv_counts)
        return Ahead(routes, work, recv, late_recv, late_serve, requester, owner,
                     rest=changing is not None)

    def fetch_rest(self, ahead: Ahead) -> Handle:
        """After the in-flight step's update: send the rows it changed; ``wait()`` ->
        (*shape, D), the rows of all of ``ahead.routes``'s lookups (as :meth:`fetch`)."""
        routes, w, d = ahead.routes, self.ctx.world_size, self.store.dim
        work, recv = None, torch.empty(0, d)
        if ahead.rest:  # the same on every rank: one more collective, maybe empty
            send = self.store.weights.index_select(0, routes.serve[ahead.late_serve])
            send_counts = torch.bincount(ahead.requester[ahead.late_serve], minlength=w).tolist()
            recv_counts = torch.bincount(ahead.owner[ahead.late_recv], minlength=w).tolist()
            work, recv = self._all_to_all(send, send_counts, recv_counts, "row exchange (after update)")
            self._count(self._remote(send_counts), self._remote(recv_counts))
            self.stats.rows_fetched_after_update += self._remote(recv_counts)
        self.stats.steps += 1
        t0 = time.perf_counter()
        with self.ctx.guard("row exchange (ahead)"):
            if ahead.work is not None:
                ahead.work.wait()  # type: ignore[attr-defined]
        waited = time.perf_counter() - t0
        self.stats.ahead_wait_seconds += waited
        self.stats.exchange_seconds += waited

        def merge(late: torch.Tensor) -> torch.Tensor:
            rows = torch.empty(routes.num_remote, d, dtype=ahead.recv.dtype)  # uniq order
            rows[~ahead.late_recv] = ahead.recv
            rows[ahead.late_recv] = late
            return self._lookups(routes, rows)

        return Handle(work, recv, merge, self.stats, self.ctx, "row exchange (after update)")

    def _all_to_all(self, send: torch.Tensor, send_counts: list[int], recv_counts: list[int],
                    where: str) -> tuple[object, torch.Tensor]:
        """Start one row all-to-all: (sum(send_counts), D) out, (sum(recv_counts), D) in."""
        recv = torch.empty(sum(recv_counts), self.store.dim, dtype=send.dtype)
        with self.ctx.guard(where):
            work = dist.all_to_all_single(recv, send, output_split_sizes=recv_counts,
                                          input_split_sizes=send_counts, group=self.ctx.group,
                                          async_op=True)
        return work, recv

    def _lookups(self, routes: StepRoutes, rows: torch.Tensor) -> torch.Tensor:
        """(U - Ur, D) exchanged rows in uniq order -> (*shape, D) rows of every lookup,
        replicated ones read from the local copy now (after any update before)."""
        if self.replicas is not None and len(routes.rep_ids):
            local = self.replicas.store.weights.index_select(0, self.replicas.slots(routes.rep_ids))
            rows = torch.cat([rows, local])  # (U, D)
        return rows.index_select(0, routes.inverse).view(*routes.shape, self.store.dim)

    def push(self, routes: StepRoutes, grad: torch.Tensor) -> Handle:
        """Coalesce this rank's lookup gradients (*shape, D) and start sending them to
        the owners (and summing the replicated rows' over ranks).

        ``wait()`` -> (S + Tk, D): gradients of the rows this rank owns, aligned
        with ``routes.serve``, then the summed gradients of ``routes.touched``.
        """
        d = self.store.dim
        g = grad.reshape(-1, d)
        # Duplicates summed in lookup order, as SparseEmbedding.apply_gradients does.
        coalesced = torch.zeros(len(routes.uniq), d, dtype=g.dtype)
        coalesced.index_add_(0, routes.inverse, g)
        n = routes.num_remote
        recv = torch.empty(len(routes.serve) + len(routes.touched), d, dtype=g.dtype)
        works = []
        with self.ctx.guard("gradient exchange"):
            works.append(dist.all_to_all_single(
                recv[:len(routes.serve)], coalesced[:n], output_split_sizes=routes.send_counts,
                input_split_sizes=routes.recv_counts, group=self.ctx.group, async_op=True))
            if len(routes.touched):
                hot = recv[len(routes.serve):]
                hot.zero_()  # a rank that did not look a row up adds an exact zero
                hot[torch.searchsorted(routes.touched, routes.rep_ids)] = coalesced[n:]
                works.append(dist.all_reduce(hot, group=self.ctx.group, async_op=True))
                self.stats.allreduce_bytes += hot.numel() * hot.element_size()
        self._count(self._remote(routes.recv_counts), self._remote(routes.send_counts))
        return Handle(_All(works), recv, lambda x: x, self.stats, self.ctx, "gradient exchange")

    def apply(self, routes: StepRoutes, grads: torch.Tensor) -> None:
        """Sum each owned row's gradients over requesters in rank order; update the rows,
        and every replica a rank touched (the same update on every rank).

        grads: (S + Tk, D) from :meth:`push`.
        """
        s = len(routes.serve)
        uniq, inv = torch.unique(routes.serve, return_inverse=True)
        coalesced = torch.zeros(len(uniq), grads.shape[1], dtype=grads.dtype)
        coalesced.index_add_(0, inv, grads[:s])  # sequential: rank 0's partial sum first
        self.embedding.update_rows(uniq, coalesced)
        if self.replicas is not None and len(routes.touched):
            self.replicas.embedding.update_rows(self.replicas.slots(routes.touched), grads[s:])

    def write_back(self) -> None:
        """Flush the shard and copy the replicas of this rank's rows into it (then the
        shard is complete: ``shard.export()`` holds every owned row's latest bits)."""
        self.shard.flush()
        if self.replicas is None:
            return
        mine = self.replicas.rows[self.sharding.owner(self.replicas.rows) == self.ctx.rank]
        if len(mine):
            self.shard.write(self.sharding.local(mine), self.replicas.records(mine))
            self.shard.flush()

    def close(self) -> None:
        """Stop the shard's mover and release its table files (safe to call twice)."""
        self.shard.close()


class _All:
    """Several works in flight waited as one."""

    def __init__(self, works: list[object]) -> None:
        self.works = works

    def wait(self) -> None:
        for w in self.works:
            w.wait()  # type: ignore[attr-defined]
