"""hotpipe: train recommendation models whose embedding tables outgrow fast memory.

The stages, each a subpackage: ``data`` (ingest, synthetic data, loader) ->
``plan`` (lookahead cache planning) -> ``storage`` (tiers) -> ``model``
(slot-addressed embeddings, DLRM) -> ``train`` (feeds, loop, checkpoints).
"""

from hotpipe.config import RunConfig, load_config
from hotpipe.data.batch import Batch, JaggedIds
from hotpipe.data.columnar import ColumnarDataset, ColumnarWriter, TableSpec
from hotpipe.data.loader import BatchLoader
from hotpipe.errors import (
    CapacityError,
    CheckpointError,
    ConfigError,
    DataFormatError,
    HotpipeError,
)
from hotpipe.model.dlrm import DLRM
from hotpipe.model.embedding import SparseEmbedding
from hotpipe.model.sparse_optim import make_row_optimizer
from hotpipe.plan.planner import Planner, min_capacity
from hotpipe.plan.types import StepPlan
from hotpipe.storage.slots import SlotStore

__all__ = [
    "DLRM",
    "Batch",
    "BatchLoader",
    "CapacityError",
    "CheckpointError",
    "ColumnarDataset",
    "ColumnarWriter",
    "ConfigError",
    "DataFormatError",
    "HotpipeError",
    "JaggedIds",
    "Planner",
    "RunConfig",
    "SlotStore",
    "SparseEmbedding",
    "StepPlan",
    "TableSpec",
    "load_config",
    "make_row_optimizer",
    "min_capacity",
]
__version__ = "0.1.0"


def train(*args, **kwargs):  # type: ignore[no-untyped-def]
    """See :func:`hotpipe.train.run.train` (imported lazily: it pulls in sklearn)."""
    from hotpipe.train.run import train as _train

    return _train(*args, **kwargs)
