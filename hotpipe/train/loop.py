"""The readable training loop.

One step: look the batch's rows up by slot, run the dense model, backprop,
step the dense optimizer, apply the row-wise sparse update, tell the feed
the step is done (which unpins its rows for eviction).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from hotpipe.data.loader import BatchLoader
from hotpipe.errors import DivergedError
from hotpipe.model.bags import model_input
from hotpipe.model.base import RecModel
from hotpipe.model.embedding import SparseEmbedding
from hotpipe.train.feed import Feed
from hotpipe.train.skip import StaleSkipper, kept_samples


@dataclass
class LoopState:
    """Everything that must survive a checkpoint to continue exactly."""

    step: int = 0
    losses: list[float] = field(default_factory=list)  # one per step
    train_seconds: float = 0.0


@dataclass
class StepLog:
    step: int
    loss: float
    samples_per_s: float
    hit_rate: float
    stall_share: float


def train_steps(*, model: RecModel, embedding: SparseEmbedding, feed: Feed,
                dense_opt: torch.optim.Optimizer, loader: BatchLoader, state: LoopState,
                stop: int, log_every: int, progress: bool,
                on_log: Callable[[StepLog], None] | None = None,
                on_step: Callable[[int], None] | None = None,
                skipper: StaleSkipper | None = None) -> None:
    """Train steps ``[state.step, stop)``, updating ``state`` as it goes.

    ``on_step(step)`` runs after each finished step (the caller checkpoints
    or evaluates there); ``on_log`` every ``log_every`` steps. With a
    ``skipper`` (train/skip.py) a step trains only the samples it keeps: the
    loss is the mean over the kept samples (each step's gradient keeps the
    size of an exact step, as a smaller batch would), and a step that keeps
    none records a NaN loss (left out of the logged means).
    """
    loss_fn = nn.BCEWithLogitsLoss()
    # disable=None: tqdm turns itself off when stderr is not a terminal (CI logs).
    bar = tqdm(total=stop, initial=state.step, disable=True if not progress else None, unit="step",
               dynamic_ncols=True, leave=False)
    window_t0, window_stall0 = time.perf_counter(), feed.stats.stall_seconds
    window_hits0, window_look0 = feed.stats.hits, feed.stats.hits + feed.stats.misses
    window_steps = 0
    t_start = time.perf_counter()
    # A skipper hands the planner each step without the samples it will skip, when it
    # knows them in time (train/skip.py), so their rows are not fetched.
    planned = loader if skipper is None else skipper.planning_loader(loader)
    try:
        for full in feed.steps(planned, state.step, stop):
            keep = skipper.keep_mask(full) if skipper is not None else None
            inp = full if keep is None else kept_samples(full, keep)  # (K <= B) samples
            value = math.nan
            if inp.batch.size:
                emb = embedding.lookup(inp.slots)  # (B, T, D) leaf; multi-hot (1, L, D): a row per id
                logits = model(inp.batch.dense, model_input(emb, inp.batch.sparse))  # (B,)
                loss = loss_fn(logits, inp.batch.labels)
                value = float(loss.detach())  # the loss is read every step anyway (losses.json)
                if not math.isfinite(value):
                    # Stop before this step's update reaches any weight or checkpoint.
                    raise DivergedError(inp.step, value, "; lower optim.embedding_lr / optim.dense_lr")
                dense_opt.zero_grad(set_to_none=True)
                loss.backward()
                dense_opt.step()
                embedding.apply_gradients(inp.slots, emb.grad)  # type: ignore[arg-type]
            feed.step_done(inp.step)
            if skipper is not None:
                skipper.observe(full, keep)
                skipper.step_done(inp.step + 1)  # before on_step: a checkpoint there holds it

            state.losses.append(value)
            state.step = inp.step + 1
            window_steps += 1
            bar.update(1)
            if on_log is not None and (state.step % log_every == 0 or state.step == stop):
                now = time.perf_counter()
                st = feed.stats
                looks = st.hits + st.misses - window_look0
                trained = [x for x in state.losses[-window_steps:] if not math.isnan(x)]
                log = StepLog(
                    step=state.step,
                    loss=sum(trained) / len(trained) if trained else math.nan,
                    samples_per_s=window_steps * loader.batch_size / max(now - window_t0, 1e-9),
                    hit_rate=(st.hits - window_hits0) / looks if looks else 1.0,
                    stall_share=(st.stall_seconds - window_stall0) / max(now - window_t0, 1e-9),
                )
                bar.set_postfix(loss=f"{log.loss:.4f}", sps=f"{log.samples_per_s:,.0f}",
                                hit=f"{log.hit_rate:.1%}", stall=f"{log.stall_share:.0%}")
                on_log(log)
                window_t0, window_stall0 = time.perf_counter(), st.stall_seconds
                window_hits0, window_look0 = st.hits, st.hits + st.misses
                window_steps = 0
            if on_step is not None:
                paused = time.perf_counter()
                on_step(state.step)
                # Checkpoint/eval time is not training time.
                t_start += time.perf_counter() - paused
                window_t0 += time.perf_counter() - paused
    finally:
        state.train_seconds += time.perf_counter() - t_start
        bar.close()
