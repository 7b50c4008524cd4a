"""The data-parallel training step over row-wise sharded tables.

Global batch B, W ranks, b = B / W. Rank r trains samples ``[r*b, (r+1)*b)``
of every global batch (all ranks read the same batches)::

    (resident) this rank's rows of the step are in its store (a tiered shard's
               mover fetched them while earlier steps computed)
    rest       all_to_all the rows the previous step changed; wait for the
               rows sent ahead                            -> emb (b, T, D)
    ahead      next step: route it (no traffic: foresight) and start sending
               the rows this step leaves unchanged        } in flight during
    forward    loss_r = sum of r's b per-sample losses / B } forward/backward
               (so sum_r loss_r = the one-process mean, and every gradient
               has the one-process scale)
    backward   dense grads (local), emb.grad (b, T, D)
    push       all_to_all row gradients to owners           } in flight together
    allreduce  dense grads + loss_r, summed over ranks      }
    step       dense optimizer (same grads on every rank -> same weights),
               owners apply the row optimizer, then tell the shard the step is
               done (a tiered shard may evict its rows now)

The next step is taken from the shard before this step's forward when its
rows are already resident (always, untiered); a tiered shard whose mover is
still fetching it is asked after the backward instead, so the main thread
never waits for the mover while it could compute. Either way the next
step's ahead exchange is issued before this step's push: every rank issues
its collectives in the same order (gloo matches them by order, not time).

Sums that reorder against one process (hence ``allclose``, not bit-equal):
the dense gradients and the loss (per-rank partial sums over b samples,
then summed over ranks by all_reduce), and a row's gradient when several
ranks look it up (see ``exchange.py``). The split fetch changes no bits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import closing

import torch
import torch.distributed as dist
from torch import nn

from hotpipe.data.loader import BatchLoader
from hotpipe.distributed.context import DistContext
from hotpipe.distributed.exchange import Ahead, RowExchange
from hotpipe.distributed.shards import ShardStep
from hotpipe.errors import ConfigError, DivergedError
from hotpipe.model.base import RecModel
from hotpipe.train.loop import LoopState


def local_batch(batch_size: int, world_size: int) -> int:
    """b = B / W, or a :class:`ConfigError` when B is not a multiple of W."""
    if batch_size % world_size:
        raise ConfigError("data.batch_size", f"expected a multiple of the world size "
                                             f"{world_size} (each rank trains B/W samples); "
                                             f"found {batch_size}")
    return batch_size // world_size


def dist_train_steps(*, ctx: DistContext, model: RecModel, rows: RowExchange,
                     dense_opt: torch.optim.Optimizer, loader: BatchLoader, state: LoopState,
                     stop: int, on_step: Callable[[int], None] | None = None,
                     fetch_ahead: bool = True, staleness: int = 0) -> None:
    """Train global steps ``[state.step, stop)``; ``state.losses`` gets the global loss.

    ``fetch_ahead=False`` (``dist.fetch_ahead``) takes each step after the
    previous one's update and fetches all its rows in one exchange: nothing
    overlaps, the same bits (the reference the split fetch is tested against).
    ``staleness=1`` (``dist.staleness``, opt-in, not exact) sends every
    exchanged row of the next step ahead, before the in-flight update: a row
    both steps use arrives without that update (replicated rows stay exact).

    Raises:
        ConfigError: the batch size is not a multiple of the world size.
        DivergedError: a non-finite global loss (raised on every rank, before
            that step's update).
        PeerFailedError: another rank failed.
    """
    big_b, w, r = loader.batch_size, ctx.world_size, ctx.rank
    b = local_batch(big_b, w)
    lo, hi = r * b, (r + 1) * b
    offsets = torch.from_numpy(rows.sharding.layout.offsets.copy())
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
    params = [p for p in model.parameters() if p.requires_grad]
    t_start = time.perf_counter()
    try:
        with closing(rows.steps(loader, state.step, stop)) as steps:
            nxt = _Next(rows, steps, offsets, w, overlap=fetch_ahead, stale=staleness > 0)
            nxt.take(None)  # no step in flight: every row of the first goes at once
            while nxt.step is not None:
                cur, gids, ahead = nxt.step, nxt.gids, nxt.ahead
                assert ahead is not None
                _one_step(ctx, model, rows, dense_opt, cur, gids, ahead, nxt, state, loss_fn,
                          params, big_b, lo, hi)
                if on_step is not None:
                    paused = time.perf_counter()
                    on_step(state.step)
                    t_start += time.perf_counter() - paused
                if not fetch_ahead:
                    nxt.take(None)  # after the update: one exchange of every row
        ctx.phase = f"after step {state.step}"
    finally:
        state.train_seconds += time.perf_counter() - t_start


class _Next:
    """The step after the one in flight: taken from the shard, routed, its rows sent ahead."""

    def __init__(self, rows: RowExchange, steps: Iterator[ShardStep], offsets: torch.Tensor,
                 world_size: int, *, overlap: bool, stale: bool = False) -> None:
        self.rows, self.steps, self.offsets, self.w = rows, steps, offsets, world_size
        self.step: ShardStep | None = None
        self.gids = torch.empty(0, dtype=torch.int64)
        self.ahead: Ahead | None = None
        # overlap=False: the loop takes each step itself, after the previous update.
        self.overlap, self.stale = overlap, stale

    def take(self, changing: torch.Tensor | None) -> None:
        """Take the next step (waiting for the shard if need be) and start its ahead exchange.

        changing: (B, T) global ids of the step in flight, None when none is.
            Ignored when stale: every row goes now, none after the update.
        """
        self.step = next(self.steps, None)
        if self.step is None:
            return
        batch = self.step.batch
        assert isinstance(batch.sparse, torch.Tensor)
        self.gids = batch.sparse + self.offsets  # (B, T) global ids, the same on every rank
        b = len(self.gids) // self.w
        routes = self.rows.route([self.gids[s * b:(s + 1) * b] for s in range(self.w)],
                                 self.step.slots_of)
        self.ahead = self.rows.fetch_ahead(routes, None if self.stale else changing)


def _one_step(ctx: DistContext, model: RecModel, rows: RowExchange,
              dense_opt: torch.optim.Optimizer, step: ShardStep, gids: torch.Tensor, ahead: Ahead,
              nxt: _Next, state: LoopState, loss_fn: nn.Module, params: list[torch.nn.Parameter],
              big_b: int, lo: int, hi: int) -> None:
    """One global step: the rest of its rows, the next step's rows ahead, forward/backward
    this rank's samples, sum, update."""
    k, batch = step.step, step.batch
    ctx.phase = f"step {k}"
    emb = rows.fetch_rest(ahead).wait().requires_grad_(True)  # (b, T, D)
    early = nxt.overlap and rows.next_ready()
    if early:  # resident already: its rows travel during this compute
        nxt.take(gids)
    logits = model(batch.dense[lo:hi], emb)  # (b,)
    loss = loss_fn(logits, batch.labels[lo:hi]) / big_b
    dense_opt.zero_grad(set_to_none=True)
    loss.backward()
    if nxt.overlap and not early:  # before the push: one collective order on every rank
        nxt.take(gids)
    pushed = rows.push(ahead.routes, emb.grad)  # type: ignore[arg-type]
    summed = _allreduce_grads(ctx, rows, params, loss.detach())
    value = float(summed)
    grads = pushed.wait()
    if not math.isfinite(value):
        # Every rank sees the same summed loss, so all stop at the same step.
        raise DivergedError(k, value, "; lower optim.embedding_lr / optim.dense_lr")
    dense_opt.step()
    rows.apply(ahead.routes, grads)
    rows.step_done(k)
    state.losses.append(value)
    state.step = k + 1


def _allreduce_grads(ctx: DistContext, rows: RowExchange, params: list[torch.nn.Parameter],
                     loss: torch.Tensor) -> torch.Tensor:
    """Sum every dense gradient and the loss over ranks in one all_reduce; return the loss.

    One flat buffer instead of one call per tensor: a dozen small tensors
    would pay a dozen latencies. Gloo's result is the same bits on every
    rank, so the replicas' weights never drift apart.
    """
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads] + [loss.reshape(1)])
    t0 = time.perf_counter()
    with ctx.guard("dense all_reduce"):
        dist.all_reduce(flat, group=ctx.group)
    rows.stats.allreduce_seconds += time.perf_counter() - t0
    rows.stats.allreduce_bytes += flat.numel() * flat.element_size()
    i = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[i:i + n].view_as(g)
        i += n
    return flat[-1]
