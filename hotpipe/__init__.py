"""hotpipe: train recommendation models whose embedding tables outgrow fast memory.

The stages, each a subpackage: ``data`` (ingest, synthetic data, loader) ->
``plan`` (lookahead cache planning) -> ``storage`` (tiers) -> ``model``
(slot-addressed embeddings, DLRM) -> ``train`` (feeds, loop, checkpoints);
``profile`` (dataset access profiles) and ``placement`` (cost model, placement
search) answer questions before training.

The public API is re-exported here and loaded on first use (PEP 562), so
``import hotpipe`` and ``hotpipe --help`` do not pay for torch. Training is
:func:`fit` — not ``train``, which is the name of the stage's subpackage and
would be rebound by importing it.

Example:
    >>> import hotpipe
    >>> cfg = hotpipe.load_config(overrides=["cache.policy=lookahead", "cache.capacity=0.1"],
    ...                           values={"data.path": "data/synth"})  # doctest: +SKIP
    >>> metrics = hotpipe.fit(cfg, "runs/a")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hotpipe.errors import (
    CapacityError,
    CheckpointError,
    ConfigError,
    DataFormatError,
    DivergedError,
    HotpipeError,
    LockError,
    ResourceError,
)

if TYPE_CHECKING:
    from hotpipe.capacity import Capacity
    from hotpipe.config import RunConfig, load_config
    from hotpipe.data.batch import Batch, JaggedIds
    from hotpipe.data.columnar import ColumnarDataset, ColumnarWriter, TableSpec
    from hotpipe.data.layout import TableLayout
    from hotpipe.data.loader import BatchLoader, TrainTrace
    from hotpipe.model.adrec import AdRec
    from hotpipe.model.dcn import DCN
    from hotpipe.model.dlrm import DLRM
    from hotpipe.model.embedding import SparseEmbedding
    from hotpipe.model.sparse_optim import make_row_optimizer
    from hotpipe.plan.planner import Planner, min_capacity
    from hotpipe.plan.types import StepPlan
    from hotpipe.storage.slots import SlotStore
    from hotpipe.train.run import Components, build_components

_LAZY = {
    "Capacity": "hotpipe.capacity",
    "RunConfig": "hotpipe.config",
    "load_config": "hotpipe.config",
    "Batch": "hotpipe.data.batch",
    "JaggedIds": "hotpipe.data.batch",
    "ColumnarDataset": "hotpipe.data.columnar",
    "ColumnarWriter": "hotpipe.data.columnar",
    "TableSpec": "hotpipe.data.columnar",
    "TableLayout": "hotpipe.data.layout",
    "BatchLoader": "hotpipe.data.loader",
    "TrainTrace": "hotpipe.data.loader",
    "DLRM": "hotpipe.model.dlrm",
    "DCN": "hotpipe.model.dcn",
    "AdRec": "hotpipe.model.adrec",
    "SparseEmbedding": "hotpipe.model.embedding",
    "make_row_optimizer": "hotpipe.model.sparse_optim",
    "Planner": "hotpipe.plan.planner",
    "min_capacity": "hotpipe.plan.planner",
    "StepPlan": "hotpipe.plan.types",
    "SlotStore": "hotpipe.storage.slots",
    "Components": "hotpipe.train.run",
    "build_components": "hotpipe.train.run",
}

__all__ = [
    "AdRec",
    "Batch",
    "BatchLoader",
    "Capacity",
    "CapacityError",
    "CheckpointError",
    "ColumnarDataset",
    "ColumnarWriter",
    "Components",
    "ConfigError",
    "DCN",
    "DLRM",
    "DataFormatError",
    "DivergedError",
    "HotpipeError",
    "JaggedIds",
    "LockError",
    "Planner",
    "ResourceError",
    "RunConfig",
    "SlotStore",
    "SparseEmbedding",
    "StepPlan",
    "TableLayout",
    "TableSpec",
    "TrainTrace",
    "build_components",
    "fit",
    "load_config",
    "make_row_optimizer",
    "min_capacity",
]
__version__ = "0.1.0"


def fit(cfg: RunConfig, run_dir: str, **kwargs: Any) -> dict[str, Any]:
    """Train as configured and return the metrics (``hotpipe train`` in a function).

    Keyword arguments are those of :func:`hotpipe.train.run.train`
    (``resume``, ``overwrite``, ``report``, ``tensorboard``, ``components``).
    """
    from hotpipe.train.run import train as _train

    return _train(cfg, run_dir, **kwargs)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hotpipe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
