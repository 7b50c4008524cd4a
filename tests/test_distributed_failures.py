"""A failing, killed or absent rank ends every rank with a clear error in bounded time;
bad input (B % W != 0, W > a table's rows, ranks on different configs) is refused."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from hotpipe.config import RunConfig, validate
from hotpipe.data.layout import TableLayout
from hotpipe.distributed.context import DistContext
from hotpipe.distributed.loop import dist_train_steps
from hotpipe.distributed.run import build_dist_components, check_same_run
from hotpipe.distributed.sharding import RowSharding
from hotpipe.distributed.spawn import run_ranks
from hotpipe.errors import ConfigError
from hotpipe.train.loop import LoopState
from tests.conftest import make_dataset


def _cfg(data: Path, *, batch: int = 32, lr: float = 0.1) -> RunConfig:
    return validate({
        "data": {"path": str(data), "batch_size": batch, "val_fraction": 0.1},
        "model": {"embedding_dim": 8, "bottom": [16, 8], "top": [16, 1]},
        "optim": {"embedding": "sgd", "embedding_lr": lr},
        "train": {"max_steps": 8, "progress": False},
    })


def _fail_at(ctx: DistContext, cfg: RunConfig, bad_rank: int, step: int, how: str) -> int:
    c = build_dist_components(cfg, ctx)

    def on_step(k: int) -> None:
        if ctx.rank == bad_rank and k == step:
            if how == "raise":
                raise RuntimeError(f"injected failure at step {k}")
            os._exit(3)  # a crash that leaves no note, like a kill -9

    dist_train_steps(ctx=ctx, model=c.model, rows=c.rows, dense_opt=c.dense_opt,
                     loader=c.train_loader, state=LoopState(), stop=8, on_step=on_step)
    return ctx.rank


@pytest.mark.parametrize("world", [2, 4])
def test_a_rank_that_raises_ends_the_others_naming_it(world: int, tmp_path: Path) -> None:
    cfg = _cfg(make_dataset(tmp_path / "d"))
    t0 = time.monotonic()
    results = run_ranks(_fail_at, world, args=(cfg, 1, 3, "raise"), timeout=20, join_timeout=60)
    elapsed = time.monotonic() - t0
    assert all(r.exitcode not in (0, None) for r in results), [(r.exitcode, r.error) for r in results]
    assert results[1].error_type == "RuntimeError" and "injected failure at step 3" in str(results[1].error)
    for r in results:
        if r.rank != 1:
            assert r.error_type == "PeerFailedError", r.error
            assert f"rank {r.rank}:" in str(r.error) and "rank 1 failed" in str(r.error)
            assert "injected failure" in str(r.error)
            # on_step(3) runs once step index 2 is done: the peers fail inside step 3
            assert "at step 3 failed" in str(r.error)
    assert elapsed < 60


def test_a_killed_rank_ends_the_others_within_the_timeout(tmp_path: Path) -> None:
    cfg = _cfg(make_dataset(tmp_path / "d"))
    results = run_ranks(_fail_at, 2, args=(cfg, 1, 2, "exit"), timeout=10, join_timeout=40)
    assert results[1].exitcode == 3
    assert results[0].exitcode == 1 and results[0].error_type == "PeerFailedError", results[0].error
    assert "rank 0:" in str(results[0].error)


def _late(ctx: DistContext, delay: float) -> int:
    if ctx.rank == 1:
        time.sleep(delay)  # never arrives at the first collective in time
    ctx.barrier("first barrier")
    return ctx.rank


@pytest.mark.slow
def test_a_peer_that_never_arrives_times_out(tmp_path: Path) -> None:
    t0 = time.monotonic()
    results = run_ranks(_late, 2, args=(30.0,), timeout=4, join_timeout=15)
    assert results[0].error_type == "PeerFailedError", results[0].error
    assert "first barrier" in str(results[0].error)
    assert results[1].exitcode is None  # still asleep at the deadline: killed by run_ranks
    assert time.monotonic() - t0 < 30


@pytest.mark.parametrize(("env", "key"), [({"WORLD_SIZE": "2"}, "RANK"),
                                           ({"RANK": "0", "WORLD_SIZE": "two"}, "WORLD_SIZE"),
                                           ({"RANK": "0", "WORLD_SIZE": "2"}, "MASTER_ADDR")])
def test_init_from_env_names_a_missing_variable(env: dict[str, str], key: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from hotpipe.distributed.context import init_from_env

    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=key):
        init_from_env(timeout=1)


def _ctx(rank: int, world: int) -> DistContext:
    # No process group: these checks run before any collective.
    return DistContext(rank=rank, world_size=world, backend="gloo", timeout=1.0, store=None)


def test_batch_not_a_multiple_of_world_size(tmp_path: Path) -> None:
    cfg = _cfg(make_dataset(tmp_path / "d"), batch=30)
    with pytest.raises(ConfigError, match=r"data.batch_size.*multiple of the world size 4.*found 30"):
        build_dist_components(cfg, _ctx(0, 4))


def test_world_larger_than_a_table_replicates_it(tmp_path: Path) -> None:
    cfg = _cfg(make_dataset(tmp_path / "d", cards=(50, 7, 300, 20)))
    c = build_dist_components(cfg, _ctx(1, 8))  # C2 (rows 50..56) has 7 rows: rank 1 owns none
    assert c.rows.replicas is not None
    assert c.rows.replicas.rows.tolist() == list(range(50, 57))  # all of C2, on every rank
    assert c.rows.sharding.local_layout().cardinalities[1] == 0
    with pytest.raises(ConfigError, match="rank"):
        RowSharding(TableLayout([10]), world_size=2, rank=2)


def test_sharding_partitions_every_row_once() -> None:
    lay = TableLayout([11, 5, 9])
    for w in (1, 2, 3, 5):
        owned = [RowSharding(lay, world_size=w, rank=r).owned_rows() for r in range(w)]
        assert sorted(torch.cat(owned).tolist()) == list(range(lay.num_rows))
        for r, rows in enumerate(owned):
            sh = RowSharding(lay, world_size=w, rank=r)
            assert len(rows) == sh.num_owned
            assert (sh.owner(rows) == r).all()
            assert sh.local(rows).tolist() == list(range(len(rows)))


def _check_cfgs(ctx: DistContext, cfgs: list[RunConfig]) -> Any:
    cfg = cfgs[ctx.rank]
    c = build_dist_components(cfg, ctx)
    check_same_run(cfg, ctx, c.dataset)
    return ctx.rank


def test_ranks_on_different_configs_are_refused(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "d")
    results = run_ranks(_check_cfgs, 2, args=([_cfg(data), _cfg(data, lr=0.2)],), timeout=20)
    for r in results:
        assert r.error_type == "ConfigError", r.error
        assert "optim.embedding_lr" in str(r.error) and "rank 0 has 0.1, rank 1 has 0.2" in str(r.error)
    # the same config passes the check (the check is not simply always failing)
    ok = run_ranks(_check_cfgs, 2, args=([_cfg(data), _cfg(data)],), timeout=20)
    assert [r.exitcode for r in ok] == [0, 0], [r.error for r in ok]
