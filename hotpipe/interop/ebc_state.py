"""``EmbeddingBagCollection``-compatible state dicts of hotpipe's tables, both ways.

TorchRec's ``EmbeddingBagCollection`` (EBC) keeps table ``name`` as::

    embedding_bags.<name>.weight      (rows, dim) float32

hotpipe keeps every table in one fused row space of *records* (R, D+W): a
row's D weights, then its W floats of optimizer state (``storage/slots.py``),
table ``t`` at rows ``bounds[t]:bounds[t+1]`` (``data/layout.py``). The
records come from a feed (``feed.export()`` after ``feed.flush()``: an
untiered store, or a tiered run's backing tier, which is complete after the
flush) or from a checkpoint (``emb_records.npy``). Export slices each table's
rows out; import writes them back, so a round trip is exact (a copy, no
arithmetic).

Optimizer state. TorchRec keeps it apart from the module's state dict, in the
fused optimizer, keyed by the parameter and ``<table>.momentum1`` — one float
per row for row-wise Adagrad, one per weight for Adagrad. hotpipe's row-wise
Adagrad is the same rule (``s += mean(g**2)``, ``w -= lr*g/(sqrt(s)+eps)``,
FBGEMM's exact row-wise Adagrad), so its state is exported in that shape, as
a *separate* optional dict::

    {"embedding_bags.<name>.weight": {"<name>.momentum1": (rows,) or (rows, dim)}}

SGD has no state (the dict is empty). On import without that dict the rows'
state starts at the optimizer's initial value, as a freshly built TorchRec
optimizer would. The dense part of a model (MLPs, cross net) is not carried:
its module layout differs between the two libraries.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from hotpipe.data.layout import TableLayout
from hotpipe.errors import DataFormatError
from hotpipe.storage.slots import RowSource, RowStateSpec

__all__ = ["OPTIM_STATE_KEY", "ebc_key", "from_ebc_state", "to_ebc_state"]

#: TorchRec's name of the first optimizer state of a table (FBGEMM's ``momentum1``).
OPTIM_STATE_KEY = "momentum1"
# Any prefix: an EBC alone, inside a model (``sparse_arch.embedding_bag_collection.``),
# or wrapped by DistributedModelParallel (``module.``).
_EBC_WEIGHT = re.compile(r"(?:^|\.)embedding_bags\.([^.]+)\.weight$")
_WHERE = "EmbeddingBagCollection state dict"

StateDict = dict[str, torch.Tensor]
OptimState = dict[str, dict[str, torch.Tensor]]


def ebc_key(name: str) -> str:
    """The state-dict key of table ``name`` in an ``EmbeddingBagCollection``."""
    return f"embedding_bags.{name}.weight"


def to_ebc_state(records: RowSource, layout: TableLayout, *, dim: int) -> tuple[StateDict, OptimState]:
    """hotpipe records -> (EBC state dict, TorchRec-shaped optimizer state).

    Args:
        records: (R, D+W) rows then their optimizer state, in the layout's row order.
        layout: the tables (names, cardinalities).
        dim: D, the embedding dimension.

    Returns:
        ``{"embedding_bags.<name>.weight": (rows, D)}`` and
        ``{"embedding_bags.<name>.weight": {"<name>.momentum1": state}}``
        (state (rows,) for W = 1, (rows, D) for W = D; empty for SGD).

    Raises:
        DataFormatError: the records do not have the layout's rows or are narrower than ``dim``.
    """
    r, width = int(records.shape[0]), int(records.shape[1])
    if r != layout.num_rows or width < dim:
        raise DataFormatError("records do not match the tables", path="records", field="shape",
                              expected=f"({layout.num_rows}, >= {dim})", found=f"({r}, {width})")
    state: StateDict = {}
    optim: OptimState = {}
    for t, name in enumerate(layout.names):
        lo, hi = int(layout.bounds[t]), int(layout.bounds[t + 1])
        rec = torch.from_numpy(np.array(records[lo:hi], dtype=np.float32))  # (rows, D+W), a copy
        state[ebc_key(name)] = rec[:, :dim].contiguous()
        if width > dim:
            s = rec[:, dim:]
            optim[ebc_key(name)] = {f"{name}.{OPTIM_STATE_KEY}": (s[:, 0] if s.shape[1] == 1 else s).contiguous()}
    return state, optim


def _plain(value: Any, key: str) -> torch.Tensor:
    """A state-dict value as one plain tensor (a single-shard ShardedTensor or a DTensor
    of a one-rank DistributedModelParallel is unwrapped)."""
    if hasattr(value, "full_tensor"):  # DTensor
        value = value.full_tensor()
    elif hasattr(value, "local_shards"):  # ShardedTensor
        shards = value.local_shards()
        if len(shards) != 1 or tuple(shards[0].tensor.shape) != tuple(value.size()):
            raise DataFormatError("a sharded table must be gathered to one tensor before import "
                                  "(e.g. load it into an unsharded EmbeddingBagCollection)",
                                  path=_WHERE, field=key, expected="one shard holding the table",
                                  found=f"{len(shards)} local shard(s)")
        value = shards[0].tensor
    if not isinstance(value, torch.Tensor):
        raise DataFormatError("expected a tensor", path=_WHERE, field=key, expected="torch.Tensor",
                              found=type(value).__name__)
    return value.detach().to("cpu", torch.float32)


def _table_keys(state: Mapping[str, Any], layout: TableLayout, strict: bool) -> dict[str, str]:
    """Table name -> the state-dict key holding it (one per table)."""
    found: dict[str, str] = {}
    for key in state:
        m = _EBC_WEIGHT.search(key)
        if m is None:
            continue  # the dense part of a model: not a table
        name = m.group(1)
        if name in found:
            raise DataFormatError(f"table {name} appears twice", path=_WHERE, field=key,
                                  expected="one embedding_bags.<table>.weight per table",
                                  found=f"{found[name]} and {key}")
        found[name] = key
    missing = [n for n in layout.names if n not in found]
    if missing:
        raise DataFormatError(f"no weights for table(s) {', '.join(missing)}", path=_WHERE,
                              field=ebc_key(missing[0]),
                              expected=f"a key per table ({', '.join(layout.names)})",
                              found=f"tables {', '.join(found) or 'none'}")
    extra = [n for n in found if n not in layout.names]
    if extra and strict:
        raise DataFormatError(f"table(s) {', '.join(extra)} are not tables of this model (pass "
                              "strict=False to ignore them)", path=_WHERE, field=found[extra[0]],
                              expected=f"one of {', '.join(layout.names)}", found=extra[0])
    return found


def from_ebc_state(state: Mapping[str, Any], layout: TableLayout, *, dim: int,
                   optimizer: RowStateSpec, optimizer_state: Mapping[str, Mapping[str, Any]] | None = None,
                   strict: bool = True) -> np.ndarray:
    """EBC state dict (+ optional optimizer state) -> hotpipe records (R, D+W) float32.

    Args:
        state: a state dict with ``[prefix.]embedding_bags.<name>.weight`` (rows, D) per
            table (other keys, such as a model's dense part, are ignored).
        layout: hotpipe's tables; names must match the EBC's table names.
        dim: D.
        optimizer: hotpipe's row optimizer (its state width W and initial state).
        optimizer_state: as returned by :func:`to_ebc_state`, or None for initial state.
        strict: refuse tables the layout does not have.

    Returns:
        records for ``feed.load`` or a checkpoint.

    Raises:
        DataFormatError: a missing or extra table, a wrong shape, or optimizer state of
            another width; the message names the key, the expected and the found shape.
    """
    keys = _table_keys(state, layout, strict)
    w = int(optimizer.state_width)
    out = np.empty((layout.num_rows, dim + w), dtype=np.float32)
    for t, name in enumerate(layout.names):
        lo, hi = int(layout.bounds[t]), int(layout.bounds[t + 1])
        key = keys[name]
        weight = _plain(state[key], key)
        if tuple(weight.shape) != (hi - lo, dim):
            raise DataFormatError(f"table {name} has another shape than hotpipe's", path=_WHERE,
                                  field=key, expected=f"({hi - lo}, {dim})", found=str(tuple(weight.shape)))
        out[lo:hi, :dim] = weight.numpy()
        if not w:
            continue
        if optimizer_state is None:
            out[lo:hi, dim:] = optimizer.init_state(hi - lo, dim).numpy()
            continue
        skey = f"{name}.{OPTIM_STATE_KEY}"
        entry = optimizer_state.get(ebc_key(name)) or optimizer_state.get(key) or {}
        if skey not in entry:
            raise DataFormatError(f"no optimizer state for table {name}", path="optimizer state",
                                  field=f"{ebc_key(name)}/{skey}", expected=f"(rows, {w}) state",
                                  found=f"keys {', '.join(entry) or 'none'}")
        s = _plain(entry[skey], skey)
        if s.numel() != (hi - lo) * w:
            raise DataFormatError(f"optimizer state of table {name} has another width than "
                                  "hotpipe's optimizer", path="optimizer state", field=skey,
                                  expected=f"{hi - lo} x {w} values", found=str(tuple(s.shape)))
        out[lo:hi, dim:] = s.reshape(hi - lo, w).numpy()
    return out
