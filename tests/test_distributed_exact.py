"""W ranks (CPU, gloo, spawned) train the same steps as one process: same losses and weights.

Tolerance: fp32 reduction order. The dense gradients and the loss are summed
per rank then across ranks, and a row looked up by several ranks has its
gradient summed per rank then by the owner (see distributed/exchange.py),
so weights agree to ``allclose(rtol=1e-5, atol=1e-6)``, not bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from hotpipe.config import RunConfig, validate
from hotpipe.distributed.context import DistContext
from hotpipe.distributed.loop import dist_train_steps
from hotpipe.distributed.run import build_dist_components
from hotpipe.distributed.spawn import run_ranks
from hotpipe.model.embedding import SparseEmbedding
from hotpipe.train.loop import LoopState, train_steps
from hotpipe.train.run import build_components
from tests.conftest import make_dataset

STEPS = 6
RTOL, ATOL = 1e-5, 1e-6


def _cfg(data: Path, optim: str, batch: int = 32) -> RunConfig:
    return validate({
        "data": {"path": str(data), "batch_size": batch, "val_fraction": 0.1},
        "model": {"embedding_dim": 8, "bottom": [16, 8], "top": [16, 1]},
        "optim": {"embedding": optim, "embedding_lr": 0.1, "dense": "adagrad", "dense_lr": 0.05},
        "train": {"max_steps": STEPS, "progress": False, "seed": 3},
    })


def _single(cfg: RunConfig, tmp: Path) -> dict[str, Any]:
    c = build_components(cfg, tmp / "single")
    state = LoopState()
    train_steps(model=c.model, embedding=SparseEmbedding(store=c.feed.store, optimizer=c.row_opt),
                feed=c.feed, dense_opt=c.dense_opt, loader=c.train_loader, state=state, stop=STEPS,
                log_every=100, progress=False)
    return {"losses": state.losses, "dense": c.model.state_dict(),
            "weights": c.feed.store.weights.clone(), "state": c.feed.store.state.clone()}


def _rank(ctx: DistContext, cfg: RunConfig, replicate: int) -> dict[str, Any]:
    """One rank's run: its losses, dense replica, and the rows it owns."""
    c = build_dist_components(cfg, ctx, replicate=replicate, profile_steps=2)
    state = LoopState()
    dist_train_steps(ctx=ctx, model=c.model, rows=c.rows, dense_opt=c.dense_opt,
                     loader=c.train_loader, state=state, stop=STEPS)
    c.rows.write_back()
    return {"losses": state.losses, "dense": c.model.state_dict(),
            "owned": c.rows.sharding.owned_rows(), "weights": c.rows.store.weights.clone(),
            "state": c.rows.store.state.clone(), "stats": c.rows.stats.as_dict()}


def _assemble(results: list[Any], num_rows: int, dim: int, width: int) -> tuple[torch.Tensor, ...]:
    w, s = torch.full((num_rows, dim), float("nan")), torch.full((num_rows, width), float("nan"))
    for r in results:
        w[r.value["owned"]] = r.value["weights"]
        s[r.value["owned"]] = r.value["state"]
    return w, s


def _check(world: int, optim: str, tmp_path: Path, replicate: int = 0) -> list[Any]:
    data = make_dataset(tmp_path / "data", rows=512, cards=(50, 7, 300, 20))
    cfg = _cfg(data, optim)
    ref = _single(cfg, tmp_path)
    results = run_ranks(_rank, world, args=(cfg, replicate), timeout=60)
    assert [r.exitcode for r in results] == [0] * world, [r.error for r in results]
    for r in results:
        assert len(r.value["losses"]) == STEPS
        torch.testing.assert_close(torch.tensor(r.value["losses"]), torch.tensor(ref["losses"]),
                                   rtol=RTOL, atol=ATOL)
        for k, v in ref["dense"].items():
            torch.testing.assert_close(r.value["dense"][k], v, rtol=RTOL, atol=ATOL)
            # the replicas agree bit for bit: gloo's all_reduce hands every rank the same sum
            assert torch.equal(r.value["dense"][k], results[0].value["dense"][k]), k
    w, s = _assemble(results, ref["weights"].shape[0], ref["weights"].shape[1], ref["state"].shape[1])
    torch.testing.assert_close(w, ref["weights"], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(s, ref["state"], rtol=RTOL, atol=ATOL)
    # the run moved rows (and so could have got them wrong)
    assert sum(r.value["stats"]["rows_sent"] for r in results) > 0
    # training changed the rows: a comparison with untrained weights would fail
    fresh = build_components(cfg, tmp_path / "fresh").feed.store.weights
    assert not torch.allclose(fresh, ref["weights"], rtol=RTOL, atol=ATOL)
    return results


# Row-wise Adagrad with replicas in the quick tier (it exercises every path); the rest in CI's full tier.
@pytest.mark.parametrize(("optim", "replicate"), [
    ("rowwise_adagrad", 12),
    *(pytest.param(o, r, marks=pytest.mark.slow)
      for o, r in (("sgd", 0), ("sgd", 12), ("rowwise_adagrad", 0)))])
def test_two_ranks_match_one_process(optim: str, replicate: int, tmp_path: Path) -> None:
    _check(2, optim, tmp_path, replicate)


@pytest.mark.slow
@pytest.mark.parametrize("replicate", [0, 12])
@pytest.mark.parametrize("optim", ["sgd", "rowwise_adagrad"])
def test_four_ranks_match_one_process(optim: str, replicate: int, tmp_path: Path) -> None:
    _check(4, optim, tmp_path, replicate)


def test_replicas_cut_the_exchange(tmp_path: Path) -> None:
    plain = _check(2, "sgd", tmp_path / "a", 0)
    hot = _check(2, "sgd", tmp_path / "b", 12)
    sent = [sum(r.value["stats"]["rows_sent"] for r in res) for res in (plain, hot)]
    # rows move once per step and rank however often they are looked up, so 12
    # hot rows of 377 save a share of distinct rows, not of lookups (342 -> 200 here)
    assert sent[1] < 0.8 * sent[0], sent
    assert sum(r.value["stats"]["allreduce_bytes"] for r in hot) > sum(
        r.value["stats"]["allreduce_bytes"] for r in plain)  # their gradients were all-reduced
