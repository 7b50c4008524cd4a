"""hotpipe: train recommendation models whose embedding tables outgrow fast memory."""

from hotpipe.data.batch import Batch, JaggedIds
from hotpipe.data.columnar import ColumnarDataset, ColumnarWriter, TableSpec
from hotpipe.errors import (
    CapacityError,
    CheckpointError,
    ConfigError,
    DataFormatError,
    HotpipeError,
)

__all__ = [
    "Batch",
    "CapacityError",
    "CheckpointError",
    "ColumnarDataset",
    "ColumnarWriter",
    "ConfigError",
    "DataFormatError",
    "HotpipeError",
    "JaggedIds",
    "TableSpec",
]
__version__ = "0.1.0"
