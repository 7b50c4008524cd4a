"""The data-parallel training step over row-wise sharded tables.

Global batch B, W ranks, b = B / W. Rank r trains samples ``[r*b, (r+1)*b)``
of every global batch (all ranks read the same batches)::

    (resident) this rank's rows of the step are in its store (a tiered shard's
               mover fetched them while earlier steps computed)
    route      which rows each rank needs from whom        (no traffic: foresight)
    fetch      all_to_all rows            -> emb (b, T, D)
    forward    loss_r = sum of r's b per-sample losses / B  (so sum_r loss_r = the
               one-process mean, and every gradient has the one-process scale)
    backward   dense grads (local), emb.grad (b, T, D)
    push       all_to_all row gradients to owners           } in flight together
    allreduce  dense grads + loss_r, summed over ranks      }
    step       dense optimizer (same grads on every rank -> same weights),
               owners apply the row optimizer, then tell the shard the step is
               done (a tiered shard may evict its rows now)

Sums that reorder against one process (hence ``allclose``, not bit-equal):
the dense gradients and the loss (per-rank partial sums over b samples,
then summed over ranks by all_reduce), and a row's gradient when several
ranks look it up (see ``exchange.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import closing

import torch
import torch.distributed as dist
from torch import nn

from hotpipe.data.loader import BatchLoader
from hotpipe.distributed.context import DistContext
from hotpipe.distributed.exchange import RowExchange
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
                     stop: int, on_step: Callable[[int], None] | None = None) -> None:
    """Train global steps ``[state.step, stop)``; ``state.losses`` gets the global loss.

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
            for step in steps:
                _one_step(ctx, model, rows, dense_opt, step, state, offsets, loss_fn, params,
                          big_b, lo, hi)
                if on_step is not None:
                    paused = time.perf_counter()
                    on_step(state.step)
                    t_start += time.perf_counter() - paused
        ctx.phase = f"after step {state.step}"
    finally:
        state.train_seconds += time.perf_counter() - t_start


def _one_step(ctx: DistContext, model: RecModel, rows: RowExchange,
              dense_opt: torch.optim.Optimizer, step: ShardStep, state: LoopState,
              offsets: torch.Tensor, loss_fn: nn.Module, params: list[torch.nn.Parameter],
              big_b: int, lo: int, hi: int) -> None:
    """One global step: exchange rows, forward/backward this rank's samples, sum, update."""
    k, batch, w = step.step, step.batch, ctx.world_size
    b = hi - lo
    ctx.phase = f"step {k}"
    assert isinstance(batch.sparse, torch.Tensor)
    gids = batch.sparse + offsets  # (B, T) global ids, the same on every rank
    routes = rows.route([gids[s * b:(s + 1) * b] for s in range(w)], step.slots_of)
    emb = rows.fetch(routes).wait().requires_grad_(True)  # (b, T, D)
    logits = model(batch.dense[lo:hi], emb)  # (b,)
    loss = loss_fn(logits, batch.labels[lo:hi]) / big_b
    dense_opt.zero_grad(set_to_none=True)
    loss.backward()
    pushed = rows.push(routes, emb.grad)  # type: ignore[arg-type]
    summed = _allreduce_grads(ctx, rows, params, loss.detach())
    value = float(summed)
    grads = pushed.wait()
    if not math.isfinite(value):
        # Every rank sees the same summed loss, so all stop at the same step.
        raise DivergedError(k, value, "; lower optim.embedding_lr / optim.dense_lr")
    dense_opt.step()
    rows.apply(routes, grads)
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
