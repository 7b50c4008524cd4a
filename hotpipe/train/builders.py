"""Builders: one typed config section in, one component out.

Nothing in ``train/`` builds its own collaborators; the recipe
(``train/run.py``) calls these and hands the results in, so a test, a
benchmark or the distributed runtime can pass another component (a feed with
a different planner, a model of its own) without monkeypatching.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from hotpipe.config import CacheConfig, ModelConfig, OptimConfig
from hotpipe.data.layout import TableLayout
from hotpipe.errors import ConfigError
from hotpipe.model.base import RecModel
from hotpipe.model.dlrm import DLRM
from hotpipe.model.sparse_optim import RowOptimizer, make_row_optimizer
from hotpipe.plan.planner import Planner
from hotpipe.storage.backing import BackingStore, FileBacking, HostBacking
from hotpipe.storage.init import init_rows
from hotpipe.storage.slots import FLOAT_BYTES, SlotStore, record_bytes
from hotpipe.storage.tiered import TieredStore
from hotpipe.train.feed import DirectFeed, Feed


def build_row_optimizer(o: OptimConfig, dim: int) -> RowOptimizer:
    """The tables' row-wise sparse optimizer."""
    return make_row_optimizer(o.embedding, lr=o.embedding_lr, dim=dim)


def build_dense_optimizer(o: OptimConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The MLPs' ``torch.optim`` optimizer."""
    if o.dense == "sgd":
        return torch.optim.SGD(params, lr=o.dense_lr)
    if o.dense == "adagrad":
        return torch.optim.Adagrad(params, lr=o.dense_lr)
    return torch.optim.Adam(params, lr=o.dense_lr)


def build_model(m: ModelConfig, *, num_dense: int, num_tables: int) -> RecModel:
    """The dense part for ``model.arch``; sizes were checked by the config.

    Every arch is a :data:`~hotpipe.model.base.RecModel`: ``forward(dense (B, F),
    emb (B, T, D)) -> logits (B,)`` plus an ordinary ``state_dict``, which is all
    the loop, evaluation, tiering and checkpoints use.
    """
    if m.arch == "dcn":
        from hotpipe.model.dcn import DCN

        model: RecModel = DCN(
            num_dense=num_dense, num_tables=num_tables, embedding_dim=m.embedding_dim,
            bottom=list(m.bottom), cross_layers=m.cross_layers, cross_rank=m.cross_rank,
            structure=m.dcn_structure, deep=list(m.deep), top=list(m.top), pooling=m.pooling)
    elif m.arch == "adrec":
        from hotpipe.model.adrec import AdRec

        model = AdRec(num_dense=num_dense, num_tables=num_tables, embedding_dim=m.embedding_dim,
                      bottom=list(m.bottom), heads=m.heads, attn_layers=m.attn_layers,
                      ffn_mult=m.ffn_mult, top=list(m.top), pooling=m.pooling)
    elif m.arch == "tbsm":
        from hotpipe.model.tbsm import TBSM

        for key, t in (("model.history_table", m.history_table), ("model.target_table", m.target_table)):
            if t >= num_tables:
                raise ConfigError(key, f"expected a table index in 0..{num_tables - 1}, found {t}")
        model = TBSM(num_dense=num_dense, num_tables=num_tables, embedding_dim=m.embedding_dim,
                     bottom=list(m.bottom), top=list(m.top), history_table=m.history_table,
                     target_table=m.target_table, history_len=m.history_len, pooling=m.pooling)
    else:
        model = DLRM(num_dense=num_dense, num_tables=num_tables, embedding_dim=m.embedding_dim,
                     bottom=list(m.bottom), top=list(m.top), pooling=m.pooling)
    return model


def capacity_rows(c: CacheConfig, layout: TableLayout, dim: int, optimizer: RowOptimizer) -> int:
    """Fast-tier slots for ``cache.capacity`` (hotpipe/capacity.py's one meaning)."""
    return c.capacity_spec.rows(layout.num_rows, record_bytes(dim, optimizer))


def build_direct_store(layout: TableLayout, dim: int, optimizer: RowOptimizer, seed: int) -> SlotStore:
    """One slot per row, initialised (storage/init.py) — the untiered fast tier."""
    from hotpipe._fs import check_memory

    check_memory(layout.num_rows * (dim + optimizer.state_width) * FLOAT_BYTES,
                 f"an untiered run of {layout.num_rows} rows (dim {dim})",
                 "use a tiered run: cache.policy=lookahead cache.capacity=0.1 "
                 "(and cache.backing=file for tables bigger than RAM)")
    store = SlotStore.allocate(layout.num_rows, dim, optimizer)

    def put(r0: int, rows: torch.Tensor) -> None:
        store.weights[r0:r0 + len(rows)].copy_(rows)

    init_rows(list(layout.cardinalities), dim, seed, put)
    return store


def build_backing(c: CacheConfig, *, layout: TableLayout, dim: int, optimizer: RowOptimizer,
                  seed: int, run_dir: Path, pin: bool = False) -> BackingStore:
    """The slow tier holding every row: host RAM or memory-mapped files."""
    cards = list(layout.cardinalities)
    if c.backing == "file":
        return FileBacking(directory=c.backing_dir or run_dir / "tables", cardinalities=cards,
                           dim=dim, optimizer=optimizer, seed=seed)
    return HostBacking(cardinalities=cards, dim=dim, optimizer=optimizer, seed=seed, pin=pin)


def build_feed(c: CacheConfig, *, layout: TableLayout, dim: int, optimizer: RowOptimizer,
               seed: int, run_dir: Path, device: str | None = None) -> Feed:
    """``cache.policy=none``: every row resident; otherwise a planned tiered feed."""
    if c.policy == "none":
        return DirectFeed(store=build_direct_store(layout, dim, optimizer, seed), layout=layout)
    from hotpipe.train.tiered_feed import TieredFeed  # only tiered runs need the pipeline

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    slots = capacity_rows(c, layout, dim, optimizer)
    planner = Planner(num_rows=layout.num_rows, capacity=slots, window=c.window, depth=c.depth,
                      policy=c.policy)
    backing = build_backing(c, layout=layout, dim=dim, optimizer=optimizer, seed=seed,
                            run_dir=run_dir, pin=device == "cuda")
    cache = SlotStore.allocate(slots, dim, optimizer, device=device)
    tiers = TieredStore(cache=cache, backing=backing, layout=layout)
    return TieredFeed(tiers=tiers, planner=planner, layout=layout)
