"""Tiered ranks: each rank's own rows in a planned fast tier (host or file backing)
train the same steps as one untiered process; tables smaller than the world are
replicated; file-backed ranks lock their own table directories; replication
budgets that cannot be met are refused.

Tolerance as in test_distributed_exact.py: fp32 reduction order (dense
gradients, the loss, multi-rank row gradients and replica all-reduces are
summed per rank first), ``allclose(rtol=1e-5, atol=1e-6)``. Tiering itself
adds no difference: a rank reads and updates the same rows by slot.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hotpipe.config import DistConfig, RunConfig, validate
from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.layout import TableLayout
from hotpipe.distributed.context import DistContext
from hotpipe.distributed.loop import dist_train_steps
from hotpipe.distributed.replicas import replica_count
from hotpipe.distributed.run import build_dist_components, train_distributed
from hotpipe.distributed.sharding import RowSharding, small_table_rows
from hotpipe.distributed.shards import TieredShard, build_owned_rows
from hotpipe.distributed.spawn import run_ranks
from hotpipe.errors import ConfigError, LockError, ResourceError
from hotpipe.model.sparse_optim import make_row_optimizer
from hotpipe.train.loop import LoopState
from hotpipe.train.run import build_components, train
from tests.conftest import make_dataset
from tests.test_distributed_checkpoint import _same_run
from tests.test_distributed_exact import _single

STEPS = 6
RTOL, ATOL = 1e-5, 1e-6
CARDS = (50, 7, 300, 20)


def _cfg(data: Path, optim: str, *, backing: str = "host", capacity: Any = 40,
         steps: int = STEPS, batch: int = 32, checkpoint_every: int = 0) -> RunConfig:
    return validate({
        "data": {"path": str(data), "batch_size": batch, "val_fraction": 0.1},
        "model": {"embedding_dim": 8, "bottom": [16, 8], "top": [16, 1]},
        "optim": {"embedding": optim, "embedding_lr": 0.1, "dense": "adagrad", "dense_lr": 0.05},
        "train": {"max_steps": steps, "progress": False, "seed": 3,
                  "checkpoint_every": checkpoint_every},
        "cache": {"policy": "lookahead", "capacity": capacity, "window": 4, "depth": 1,
                  "backing": backing},
    })


def _rank(ctx: DistContext, cfg: RunConfig, replicate: int, run_dir: str) -> dict[str, Any]:
    """One tiered rank's run: losses, dense replica, its owned rows (flushed), cache counters."""
    c = build_dist_components(cfg, ctx, replicate=replicate, profile_steps=2, run_dir=run_dir)
    try:
        state = LoopState()
        dist_train_steps(ctx=ctx, model=c.model, rows=c.rows, dense_opt=c.dense_opt,
                         loader=c.train_loader, state=state, stop=STEPS)
        c.rows.write_back()
        rec = c.rows.shard.export()
        return {"losses": state.losses, "dense": c.model.state_dict(),
                "owned": c.rows.sharding.owned_rows(), "records": np.array(rec[0:rec.shape[0]]),
                "cache": c.rows.shard.stats(), "tiered": isinstance(c.rows.shard, TieredShard),
                "stats": c.rows.stats.as_dict()}
    finally:
        c.rows.close()


def _check(world: int, optim: str, backing: str, tmp_path: Path, *, replicate: int = 0,
           cards: tuple[int, ...] = CARDS, capacity: Any = 40) -> list[Any]:
    data = make_dataset(tmp_path / "data", rows=512, cards=cards)
    cfg = _cfg(data, optim, backing=backing, capacity=capacity)
    untiered = cfg.model_copy(update={"cache": cfg.cache.model_copy(update={"policy": "none"})})
    ref = _single(untiered, tmp_path)
    run_dir = tmp_path / "run"
    results = run_ranks(_rank, world, args=(cfg, replicate, str(run_dir)), timeout=60)
    assert [r.exitcode for r in results] == [0] * world, [r.error for r in results]
    d = ref["weights"].shape[1]
    rows = torch.full((ref["weights"].shape[0], d + ref["state"].shape[1]), float("nan"))
    for r in results:
        v = r.value
        assert v["tiered"]
        torch.testing.assert_close(torch.tensor(v["losses"]), torch.tensor(ref["losses"]),
                                   rtol=RTOL, atol=ATOL)
        for k, x in ref["dense"].items():
            torch.testing.assert_close(v["dense"][k], x, rtol=RTOL, atol=ATOL)
        rows[v["owned"]] = torch.from_numpy(v["records"])
        # the fast tier was too small for the rank's rows: rows were evicted and fetched again
        assert v["cache"]["evictions"] > 0 and v["cache"]["rows_fetched"] > v["cache"]["slots"], v["cache"]
    torch.testing.assert_close(rows[:, :d], ref["weights"], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(rows[:, d:], ref["state"], rtol=RTOL, atol=ATOL)
    fresh = build_components(untiered, tmp_path / "fresh").feed.store.weights
    assert not torch.allclose(fresh, ref["weights"], rtol=RTOL, atol=ATOL)  # training moved rows
    if backing == "file":  # one locked directory per rank, no shared table file
        assert sorted(p.name for p in (run_dir / "tables").iterdir()) == [
            f"rank-{r}" for r in range(world)]
    return results


# Per-rank slots a little above what each rank's two in-flight steps pin
# (planner.min_capacity over every rank's owned trace of this seeded data)
# and below the rows it touches in 6 steps, so every rank evicts.
SLOTS = {(2, 0): 34, (2, 12): 28, (4, 0): 20, (4, 12): 17}


@pytest.mark.parametrize(("world", "optim", "backing", "replicate"), [
    (2, "rowwise_adagrad", "host", 12),
    *(pytest.param(w, o, b, r, marks=pytest.mark.slow)
      for w, o, b, r in ((2, "sgd", "host", 0), (2, "sgd", "file", 12), (2, "rowwise_adagrad", "file", 0),
                         (4, "sgd", "host", 12), (4, "rowwise_adagrad", "file", 0)))])
def test_tiered_ranks_match_one_untiered_process(world: int, optim: str, backing: str,
                                                 replicate: int, tmp_path: Path) -> None:
    _check(world, optim, backing, tmp_path, replicate=replicate, capacity=SLOTS[world, replicate])


def test_four_ranks_replicate_a_three_row_table(tmp_path: Path) -> None:
    # C2 has 3 rows: fewer than the ranks, so it is held by every rank (Criteo has such tables)
    results = _check(4, "sgd", "file", tmp_path, cards=(50, 3, 300, 20), capacity=18)
    for r in results:
        assert r.value["stats"]["allreduce_bytes"] > 0


def test_small_tables_are_listed_for_replication() -> None:
    lay = TableLayout([5, 3, 1, 8])
    assert small_table_rows(lay, 4).tolist() == [5, 6, 7, 8]
    assert small_table_rows(lay, 1).tolist() == []
    # a rank may own no row of such a table; its local layout says so
    assert RowSharding(lay, world_size=4, rank=3).local_layout().cardinalities == (1, 1, 0, 2)
    for w in (1, 2, 3, 4, 5):
        local = [RowSharding(lay, world_size=w, rank=r).local_layout() for r in range(w)]
        assert [sum(x) for x in zip(*(loc.cardinalities for loc in local), strict=True)] == [5, 3, 1, 8]
        assert [loc.num_rows for loc in local] == [RowSharding(lay, world_size=w, rank=r).num_owned
                                                   for r in range(w)]


def test_file_backed_ranks_lock_their_own_directory(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "d")
    cfg = _cfg(data, "sgd", backing="file")
    opt = make_row_optimizer("sgd", lr=0.1, dim=8)
    lay = TableLayout(CARDS)

    def build(rank: int) -> Any:
        return build_owned_rows(cfg.cache, sharding=RowSharding(lay, world_size=2, rank=rank), dim=8,
                                optimizer=opt, seed=3, replicated=np.empty(0, np.int64),
                                run_dir=tmp_path / "run")

    a, b = build(0), build(1)
    try:
        with pytest.raises(LockError):
            build(0)  # a second process on rank 0's table files is refused
        assert (tmp_path / "run" / "tables" / "rank-0").is_dir()
        assert (tmp_path / "run" / "tables" / "rank-1").is_dir()
    finally:
        a.close()
        b.close()
    build(0).close()  # released on close


def _train_run(ctx: DistContext, cfg: RunConfig, out: str, resume: bool) -> dict[str, Any]:
    return train_distributed(cfg, out, ctx, resume=resume, replicate=6)


@pytest.mark.slow
@pytest.mark.parametrize(("first", "then", "backing"), [(2, 2, "file"), (2, 3, "host")])
def test_tiered_resume_equals_the_unbroken_run(first: int, then: int, backing: str,
                                               tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", rows=600)
    untiered = validate({**_cfg(data, "rowwise_adagrad", steps=6, batch=48).model_dump(),
                         "cache": {"policy": "none"}})
    train(untiered, tmp_path / "unbroken")
    out = tmp_path / "run"
    evictions = 0
    for steps, world, resume in ((3, first, False), (6, then, True)):
        # 35 slots a rank: what 2 ranks' in-flight steps pin here, fewer than they touch.
        # A checkpoint at step 2 flushes while the movers run ahead: training goes on exactly.
        cfg = _cfg(data, "rowwise_adagrad", backing=backing, steps=steps, batch=48, capacity=35,
                   checkpoint_every=2)
        results = run_ranks(_train_run, world, args=(cfg, str(out), resume), timeout=60)
        assert [r.exitcode for r in results] == [0] * world, [r.error for r in results]
        m = json.loads((out / "metrics.json").read_text())
        assert m["cache"]["policy"] == "lookahead" and len(m["cache"]["per_rank"]) == world
        evictions += m["cache"]["evictions"]
    assert evictions > 0
    _same_run(out, tmp_path / "unbroken")


def test_replication_budget_beyond_all_rows_or_memory(tmp_path: Path) -> None:
    opt = make_row_optimizer("rowwise_adagrad", lr=0.1, dim=8)  # 9 floats = 36 bytes a row
    lay = TableLayout([100, 50])
    assert replica_count(DistConfig(replicate="3600B"), lay, 8, opt) == 100
    assert replica_count(DistConfig(replicate="5399B"), lay, 8, opt) == 149
    with pytest.raises(ConfigError, match=r"dist.replicate.*at most 5400 bytes.*found 5436 bytes"):
        replica_count(DistConfig(replicate="5436B"), lay, 8, opt)
    with pytest.raises(ConfigError, match=r"dist.replicate.*at most 150 rows.*found 151"):
        replica_count(DistConfig(replicate=151), lay, 8, opt)
    huge = TableLayout([1 << 40])  # numbers only: nothing is allocated
    with pytest.raises(ResourceError, match=r"dist.replicate=16TiB .*needs 16384.00 GiB of RAM but"):
        replica_count(DistConfig(replicate="16TiB"), huge, 8, opt)
    # and a run with such a config stops before any row is built
    data = make_dataset(tmp_path / "d")
    bad = validate({**_cfg(data, "sgd").model_dump(), "dist": {"replicate": "1GiB"}})
    ctx = DistContext(rank=0, world_size=2, backend="gloo", timeout=1.0, store=None)
    with pytest.raises(ConfigError, match="dist.replicate"):
        build_dist_components(bad, ctx)


def _reference_routes(needs: list[torch.Tensor], rank: int, world: int,
                      hot_rows: torch.Tensor) -> tuple[list[list[int]], list[int]]:
    """Plainly: per requester s, the sorted distinct non-replicated ids of s that rank owns;
    and the sorted replicated ids any rank looks up."""
    serve, touched = [], set()
    for ids in needs:
        distinct = sorted(set(ids.reshape(-1).tolist()))
        touched |= {g for g in distinct if g in set(hot_rows.tolist())}
        serve.append([g // world for g in distinct
                      if g % world == rank and g not in set(hot_rows.tolist())])
    return serve, sorted(touched)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("num_hot", [0, 5])
def test_route_matches_a_plain_reference(world: int, num_hot: int) -> None:
    from hotpipe.distributed.exchange import RowExchange
    from hotpipe.distributed.replicas import ReplicaSet
    from hotpipe.model.embedding import SparseEmbedding

    lay = TableLayout([40, 9, 25])
    opt = make_row_optimizer("sgd", lr=0.1, dim=4)
    gen = torch.Generator().manual_seed(world * 10 + num_hot)
    needs = [torch.randint(0, lay.num_rows, (6, 3), generator=gen) for _ in range(world)]
    hot = np.sort(np.random.default_rng(0).choice(lay.num_rows, num_hot, replace=False))
    for rank in range(world):
        sh = RowSharding(lay, world_size=world, rank=rank)
        shard = build_owned_rows(validate({}).cache, sharding=sh, dim=4, optimizer=opt, seed=0,
                                 replicated=hot)
        ex = RowExchange(ctx=DistContext(rank=rank, world_size=world, backend="gloo", timeout=1.0,
                                         store=None),
                         sharding=sh, shard=shard, embedding=SparseEmbedding(store=shard.store, optimizer=opt),
                         replicas=ReplicaSet.build(hot, layout=lay, dim=4, optimizer=opt, seed=0))
        routes = ex.route(needs)
        serve, touched = _reference_routes(needs, rank, world, torch.as_tensor(hot))
        assert routes.send_counts == [len(x) for x in serve]
        assert routes.serve.tolist() == [g for x in serve for g in x]
        assert routes.touched.tolist() == touched
        # this rank's lookups are rebuilt exactly from uniq and inverse
        assert torch.equal(routes.uniq[routes.inverse], needs[rank].reshape(-1))
        assert sum(routes.recv_counts) == routes.num_remote


def test_tiered_ranks_refuse_a_prefetch_depth_of_zero(tmp_path: Path) -> None:
    # The loop takes step s+1 before step s is done; at depth 0 the mover would wait for s.
    data = make_dataset(tmp_path / "d")
    cfg = _cfg(data, "sgd")
    lay = TableLayout.of(ColumnarDataset.open(str(data)))
    opt = make_row_optimizer("sgd", lr=0.1, dim=8)
    with pytest.raises(ConfigError, match="cache.depth"):
        build_owned_rows(cfg.cache.model_copy(update={"depth": 0}),
                         sharding=RowSharding(lay, world_size=2, rank=0), dim=8, optimizer=opt,
                         seed=0, replicated=np.empty(0, dtype=np.int64))
