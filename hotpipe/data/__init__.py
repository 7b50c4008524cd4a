"""The data stage: readers, encoders, the synthetic generator and the columnar format.

Public functions are imported lazily (PEP 562), so ``import hotpipe`` does not
pay for pyarrow/scikit-learn unless data preparation is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "prepare_criteo": "prepare",
    "prepare_tabular": "prepare",
    "prepare_libsvm": "prepare",
    "FeatureMap": "libsvm",
    "LabelRule": "schema",
    "UnverifiedDatasetWarning": "columnar",
    "PrepareSummary": "prepare",
    "synthesize": "synth",
    "SynthSummary": "synth",
    "SynthConfig": "synth",
    "make_teacher": "synth",
    "synthesize_behaviour": "synth_behaviour",
    "BehaviourConfig": "synth_behaviour",
    "KAGGLE_CARDINALITIES": "synth",
    "TabularSchema": "schema",
    "read_criteo": "criteo",
    "open_source": "criteo",
    "parse_line": "criteo",
    "EncodingSpec": "encoding",
    "Vocabulary": "encoding",
    "VocabBuilder": "encoding",
    "HashEncoder": "encoding",
    "RawChunk": "encoding",
    "BadLine": "encoding",
    "ColumnarDataset": "columnar",
    "ColumnarWriter": "columnar",
    "TableSpec": "columnar",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hotpipe.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"hotpipe.data.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
