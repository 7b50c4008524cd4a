"""The split fetch (next step's unchanged rows sent while this one computes) changes no bits.

``dist.fetch_ahead=false`` is the reference: each step is taken after the
previous update and all its rows come in one exchange. The overlapped run
must give exactly the same losses, dense weights and rows (not merely
allclose: the same values travel, only earlier), untiered and tiered, with
and without replicas, and must really have sent rows both ways.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
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

STEPS = 8


def _cfg(data: Path, policy: str, capacity: Any) -> RunConfig:
    return validate({
        "data": {"path": str(data), "batch_size": 48, "val_fraction": 0.1},
        "model": {"embedding_dim": 8, "bottom": [16, 8], "top": [16, 1]},
        "optim": {"embedding": "rowwise_adagrad", "embedding_lr": 0.1, "dense": "adagrad",
                  "dense_lr": 0.05},
        "train": {"max_steps": STEPS, "progress": False, "seed": 5},
        "cache": {"policy": policy, "capacity": capacity, "window": 4, "depth": 1},
    })


def _rank(ctx: DistContext, cfg: RunConfig, replicate: int, run_dir: str,
          ahead: bool) -> dict[str, Any]:
    c = build_dist_components(cfg, ctx, replicate=replicate, profile_steps=2, run_dir=run_dir)
    try:
        state = LoopState()
        dist_train_steps(ctx=ctx, model=c.model, rows=c.rows, dense_opt=c.dense_opt,
                         loader=c.train_loader, state=state, stop=STEPS, fetch_ahead=ahead)
        c.rows.write_back()
        rec = c.rows.shard.export()
        return {"losses": state.losses, "dense": c.model.state_dict(),
                "records": np.array(rec[0:rec.shape[0]]), "stats": c.rows.stats.as_dict()}
    finally:
        c.rows.close()


@pytest.mark.parametrize(("world", "policy", "capacity", "replicate"), [
    (2, "none", 1.0, 10),
    (3, "lookahead", 40, 0),
    pytest.param(4, "lookahead", 30, 10, marks=pytest.mark.slow),
])
def test_fetch_ahead_gives_the_same_bits_as_one_exchange(world: int, policy: str, capacity: Any,
                                                         replicate: int, tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", rows=600, cards=(40, 7, 300, 25))
    cfg = _cfg(data, policy, capacity)
    runs = {}
    for ahead in (False, True):
        res = run_ranks(_rank, world, args=(cfg, replicate, str(tmp_path / f"run{ahead}"), ahead),
                        timeout=60)
        assert [r.exitcode for r in res] == [0] * world, [r.error for r in res]
        runs[ahead] = [r.value for r in res]
    for ref, got in zip(runs[False], runs[True], strict=True):
        assert got["losses"] == ref["losses"]
        for k, v in ref["dense"].items():
            assert torch.equal(got["dense"][k], v), k
        assert np.array_equal(got["records"], ref["records"])
        # the reference fetches everything in one exchange after each update
        assert ref["stats"]["rows_fetched_after_update"] == 0
        assert got["stats"]["rows_received"] == ref["stats"]["rows_received"]
    stats = [v["stats"] for v in runs[True]]
    # both halves carried rows: some unchanged rows went ahead, some changed ones after
    assert sum(s["rows_fetched_after_update"] for s in stats) > 0
    assert sum(s["rows_fetched_ahead"] for s in stats) > 0


# ---------------------------------------------------------------- dist.staleness = 1


def _stale_reference(cfg: RunConfig, tmp: Path, replicated: np.ndarray) -> dict[str, Any]:
    """One process, reading every non-replicated row as it was before the previous
    step's update (replicated rows current): what staleness 1 means, plainly."""
    c = build_components(cfg, tmp / "stale-ref")
    store = c.feed.store
    emb = SparseEmbedding(store=store, optimizer=c.row_opt)
    offsets = torch.from_numpy(c.layout.offsets.copy())
    is_rep = torch.zeros(c.layout.num_rows, dtype=torch.bool)
    is_rep[torch.from_numpy(replicated)] = True
    loss_fn = torch.nn.BCEWithLogitsLoss()
    prev, losses = None, []
    for k in range(STEPS):
        batch = c.train_loader.batch(k)
        assert isinstance(batch.sparse, torch.Tensor)
        gids = batch.sparse + offsets  # (B, T); the untiered store's slot is the global row
        rows = store.weights[gids]  # (B, T, D)
        if prev is not None:
            rows = torch.where(is_rep[gids].unsqueeze(-1), rows, prev[gids])
        rows = rows.clone().requires_grad_(True)
        loss = loss_fn(c.model(batch.dense, rows), batch.labels)
        c.dense_opt.zero_grad(set_to_none=True)
        loss.backward()
        c.dense_opt.step()
        prev = store.weights.clone()  # before this step's update
        emb.apply_gradients(gids, rows.grad)  # type: ignore[arg-type]
        losses.append(float(loss.detach()))
    return {"losses": losses, "dense": c.model.state_dict(),
            "rows": torch.cat([store.weights, store.state], dim=1)}


def _stale_rank(ctx: DistContext, cfg: RunConfig, replicate: int) -> dict[str, Any]:
    c = build_dist_components(cfg, ctx, replicate=replicate, profile_steps=2)
    try:
        state = LoopState()
        dist_train_steps(ctx=ctx, model=c.model, rows=c.rows, dense_opt=c.dense_opt,
                         loader=c.train_loader, state=state, stop=STEPS, staleness=1)
        c.rows.write_back()
        rec = c.rows.shard.export()
        rep = c.rows.replicas.rows.numpy() if c.rows.replicas is not None else np.empty(0, np.int64)
        return {"losses": state.losses, "dense": c.model.state_dict(), "replicated": rep,
                "owned": c.rows.sharding.owned_rows(), "records": np.array(rec[0:rec.shape[0]]),
                "stats": c.rows.stats.as_dict()}
    finally:
        c.rows.close()


def test_staleness_one_equals_its_plain_reference_and_differs_from_exact(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", rows=600, cards=(40, 7, 300, 25))
    cfg = _cfg(data, "none", 1.0)
    res = run_ranks(_stale_rank, 2, args=(cfg, 6), timeout=60)
    assert [r.exitcode for r in res] == [0, 0], [r.error for r in res]
    ref = _stale_reference(cfg, tmp_path, res[0].value["replicated"])
    rows = torch.full_like(ref["rows"], float("nan"))
    for r in res:
        v = r.value
        torch.testing.assert_close(torch.tensor(v["losses"]), torch.tensor(ref["losses"]),
                                   rtol=1e-5, atol=1e-6)
        for k, x in ref["dense"].items():
            torch.testing.assert_close(v["dense"][k], x, rtol=1e-5, atol=1e-6)
        rows[v["owned"]] = torch.from_numpy(v["records"])
        assert v["stats"]["rows_fetched_after_update"] == 0  # no second exchange
    torch.testing.assert_close(rows, ref["rows"], rtol=1e-5, atol=1e-6)
    # and it is not the exact run: stale rows changed the losses
    c = build_components(cfg, tmp_path / "exact")
    state = LoopState()
    train_steps(model=c.model, embedding=SparseEmbedding(store=c.feed.store, optimizer=c.row_opt),
                feed=c.feed, dense_opt=c.dense_opt, loader=c.train_loader, state=state, stop=STEPS,
                log_every=100, progress=False)
    assert not np.allclose(state.losses, ref["losses"], rtol=1e-4, atol=1e-5)


def test_staleness_needs_fetch_ahead() -> None:
    from hotpipe.errors import ConfigError

    with pytest.raises(ConfigError, match="dist.staleness"):
        validate({"dist": {"staleness": 1, "fetch_ahead": False}})
    with pytest.raises(ConfigError, match="dist.staleness"):
        validate({"dist": {"staleness": 2}})
