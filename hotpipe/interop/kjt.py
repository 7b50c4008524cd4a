"""TorchRec's ``KeyedJaggedTensor`` (KJT) as input to hotpipe's embedding lookup.

A KJT holds, key (feature) after key, the ids of every sample of a batch::

    keys     ["C1", "C2"]                       K keys, B samples (the KJT's stride)
    values   [ C1:b0 | C1:b1 | ... | C2:b0 | C2:b1 | ... ]      (N,)
    lengths  [ n(C1,b0), n(C1,b1), ..., n(C2,b0), ... ]         (K*B,)

which is hotpipe's multi-hot :class:`~hotpipe.data.batch.JaggedIds` layout
(table-major, ``offsets`` = the exclusive cumsum of ``lengths``) once the keys
are put in the order of hotpipe's tables. When every bag holds exactly one id
the batch is hotpipe's one-hot ``(B, T)`` matrix instead (``values`` viewed as
(K, B), transposed), which is the fast path every model trains on.

Ids are local to their table, as in an ``EmbeddingBagCollection`` whose table
``t`` reads feature ``t``: the feeds (or :func:`lookup_kjt`) add each table's
offset. A KJT is read through its public accessors only (``keys()``,
``values()``, ``lengths()``, ``stride()``), so this module imports nothing of
TorchRec and works on any object with that interface.

Example:
    >>> from torchrec import KeyedJaggedTensor  # doctest: +SKIP
    >>> kjt = KeyedJaggedTensor.from_lengths_sync(keys=["C1", "C2"],
    ...     values=torch.tensor([3, 1, 0, 2]), lengths=torch.tensor([1, 1, 1, 1]))
    >>> kjt_to_sparse(kjt, TableLayout([4, 3], ["C1", "C2"]))  # doctest: +SKIP
    tensor([[3, 0],
            [1, 2]])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from hotpipe.data.batch import Batch, JaggedIds
from hotpipe.data.layout import TableLayout
from hotpipe.errors import DataFormatError
from hotpipe.model.bags import JaggedRows, model_input, pool
from hotpipe.model.embedding import SparseEmbedding

__all__ = ["KJTLookup", "batch_from_kjt", "kjt_to_sparse", "lookup_kjt", "read_kjt",
           "table_order"]

KeyMatch = Literal["name", "order"]
_WHERE = "KeyedJaggedTensor"


def table_order(keys: Sequence[str], layout: TableLayout, by: KeyMatch = "name") -> list[int]:
    """For each of hotpipe's tables, the position of its key in ``keys``.

    Args:
        keys: the KJT's keys.
        layout: hotpipe's tables (names and cardinalities).
        by: ``name`` (key == table name, any order) or ``order`` (key i feeds table i).

    Raises:
        DataFormatError: a table without a key, a key without a table, a repeated
            key, or (``order``) a different number of keys; the message names them.
    """
    keys = list(keys)
    names = list(layout.names)
    if by == "order":
        if len(keys) != len(names):
            raise DataFormatError("keys are matched to tables by order, so there must be one key "
                                  "per table", path=_WHERE, field="keys",
                                  expected=f"{len(names)} keys ({', '.join(names)})",
                                  found=f"{len(keys)} keys ({', '.join(keys)})")
        return list(range(len(names)))
    if by != "name":
        raise ValueError(f"by must be 'name' or 'order', got {by!r}")
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise DataFormatError("a key appears more than once", path=_WHERE, field=dup[0],
                              expected="each key once", found=f"{keys.count(dup[0])} times")
    missing = [n for n in names if n not in keys]
    if missing:
        raise DataFormatError(f"no key for table(s) {', '.join(missing)}", path=_WHERE,
                              field=missing[0], expected=f"a key per table ({', '.join(names)})",
                              found=f"keys {', '.join(keys)}")
    extra = [k for k in keys if k not in names]
    if extra:
        raise DataFormatError(f"key(s) {', '.join(extra)} name no table of the model", path=_WHERE,
                              field=extra[0], expected=f"one of the tables {', '.join(names)}",
                              found=extra[0])
    where = {k: i for i, k in enumerate(keys)}
    return [where[n] for n in names]


def _check_plain(kjt: Any) -> None:
    """Reject the KJT variants hotpipe has no lookup for (they would be misread)."""
    if kjt.weights_or_none() is not None:
        raise DataFormatError("per-id weights (a weighted KeyedJaggedTensor) are not supported: "
                              "hotpipe pools bags unweighted", path=_WHERE, field="weights")
    if kjt.variable_stride_per_key():
        raise DataFormatError("a variable batch size per key is not supported", path=_WHERE,
                              field="stride_per_key", expected="one stride for every key",
                              found=str(kjt.stride_per_key()))


def _check_ids(values: torch.Tensor, table: torch.Tensor, layout: TableLayout,
               keys: Sequence[str], order: Sequence[int]) -> None:
    """values (N,) local ids, table (N,) hotpipe table of each: all in [0, cardinality)."""
    card = torch.tensor(layout.cardinalities, dtype=torch.int64)
    bad = (values < 0) | (values >= card[table])
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0, 0])
        t = int(table[i])
        raise DataFormatError(f"id out of range for table {layout.names[t]}", path=_WHERE,
                              field=keys[order[t]], expected=f"0 <= id < {layout.cardinalities[t]}",
                              found=str(int(values[i])))


def kjt_to_sparse(kjt: Any, layout: TableLayout, *, by: KeyMatch = "name",
                  validate: bool = True) -> torch.Tensor | JaggedIds:
    """A KJT -> the ``sparse`` field of a hotpipe :class:`~hotpipe.data.batch.Batch`.

    Args:
        kjt: a ``torchrec.KeyedJaggedTensor`` (unweighted, one stride for every key).
        layout: hotpipe's tables.
        by: how keys map to tables (:func:`table_order`).
        validate: check every id against its table's cardinality (one vectorized pass).

    Returns:
        (B, T) int64 local ids when every bag holds exactly one id, else
        :class:`~hotpipe.data.batch.JaggedIds` in hotpipe's table order.

    Raises:
        DataFormatError: unmatched keys, weights, variable strides, or an id
            outside its table (naming the key, the bound and the id).
    """
    _check_plain(kjt)
    keys = list(kjt.keys())
    order = table_order(keys, layout, by)
    b, k = int(kjt.stride()), len(keys)
    values = kjt.values().to(torch.int64)  # (N,)
    lengths = kjt.lengths().to(torch.int64).reshape(k, b)  # (K, B)
    if int(lengths.sum()) != values.numel():
        raise DataFormatError("lengths do not add up to the values", path=_WHERE, field="lengths",
                              expected=f"a sum of {values.numel()} (the number of values)",
                              found=str(int(lengths.sum())))
    perm = torch.tensor(order, dtype=torch.int64)
    t = layout.num_tables
    if values.numel() == k * b and bool((lengths == 1).all()):
        sparse = values.reshape(k, b).index_select(0, perm).t().contiguous()  # (B, T)
        if validate and b:
            # Per-column bounds first (two reductions); the per-id pass only names the culprit.
            card = torch.tensor(layout.cardinalities, dtype=torch.int64)
            if bool((sparse.amin(0) < 0).any() or (sparse.amax(0) >= card).any()):
                _check_ids(sparse.reshape(-1), torch.arange(t).repeat(b), layout, keys, order)
        return sparse
    per_key = lengths.sum(dim=1)  # (K,) ids of each key
    key_start = torch.cumsum(per_key, 0) - per_key  # (K,) where each key's ids begin
    new_len = per_key.index_select(0, perm)  # (T,) ids of each table, hotpipe order
    if order != list(range(k)):
        # Move each key's block of ids to its table's place: one gather whose
        # index is the block's old start minus its new start, plus the position.
        new_start = torch.cumsum(new_len, 0) - new_len
        shift = torch.repeat_interleave(key_start.index_select(0, perm) - new_start, new_len)
        values = values.index_select(0, shift + torch.arange(int(new_len.sum())))
    bag_len = lengths.index_select(0, perm).reshape(-1)  # (T*B,)
    offsets = torch.zeros(t * b + 1, dtype=torch.int64)
    torch.cumsum(bag_len, 0, out=offsets[1:])
    if validate:
        _check_ids(values, torch.repeat_interleave(torch.arange(t), new_len), layout, keys, order)
    return JaggedIds(values=values, offsets=offsets, num_tables=t)


def batch_from_kjt(dense: torch.Tensor, kjt: Any, labels: torch.Tensor, layout: TableLayout, *,
                   by: KeyMatch = "name") -> Batch:
    """A hotpipe :class:`~hotpipe.data.batch.Batch` from TorchRec-style inputs.

    Args:
        dense: (B, F) float32 dense features.
        kjt: the sparse features, one key per table.
        labels: (B,) float32 labels.
        layout: hotpipe's tables.
        by: how keys map to tables.
    """
    sparse = kjt_to_sparse(kjt, layout, by=by)
    b = int(kjt.stride())
    for name, x in (("dense", dense), ("labels", labels)):
        if int(x.shape[0]) != b:
            raise DataFormatError(f"{name} has another batch size than the KeyedJaggedTensor",
                                  path=_WHERE, field=name, expected=f"{b} rows",
                                  found=f"{int(x.shape[0])} rows")
    return Batch(dense=dense, sparse=sparse, labels=labels)


def _slots(sparse: torch.Tensor | JaggedIds, layout: TableLayout) -> torch.Tensor:
    """Global rows of the lookups, as the feeds hand them to the loop: (B, T), or (1, L)."""
    offsets = torch.from_numpy(layout.offsets.copy())
    if isinstance(sparse, torch.Tensor):
        return sparse + offsets
    return sparse.global_rows(offsets).view(1, -1)


@dataclass
class KJTLookup:
    """The rows of one KJT batch, what the model takes, and how the gradient goes back.

    The same three things hotpipe's training loop holds for one of its own
    batches: ``slots`` (one per lookup), ``emb`` the looked-up rows (a leaf
    that collects the gradient) and ``inputs`` what a
    :data:`~hotpipe.model.base.RecModel` takes — ``emb`` itself for one-hot
    input, the rows with their bags' offsets for multi-hot input
    (:class:`~hotpipe.model.bags.JaggedRows`, pooled inside the model by its
    ``model.pooling``). After ``loss.backward()``, :meth:`apply_gradients` runs
    the row-wise sparse update exactly as the loop does.
    """

    inputs: torch.Tensor | JaggedRows  # (B, T, D), or (L, D) rows + (T*B + 1,) offsets
    emb: torch.Tensor  # (B, T, D) one-hot, (1, L, D) multi-hot; the leaf
    slots: torch.Tensor  # (B, T) or (1, L)

    def apply_gradients(self, embedding: SparseEmbedding) -> None:
        """Row-wise update of the looked-up rows with ``emb.grad``."""
        if self.emb.grad is None:
            raise RuntimeError("no gradient to apply: call loss.backward() first")
        embedding.apply_gradients(self.slots, self.emb.grad)


def lookup_kjt(embedding: SparseEmbedding, kjt: Any, layout: TableLayout, *,
               by: KeyMatch = "name") -> KJTLookup:
    """Train from a KJT: the embedding lookup of an untiered store (slot == global row).

    A tiered store cannot look up a batch its planner has not seen ahead; train
    tiered from a dataset, and read a tiered run's rows with :func:`read_kjt`.

    Example:
        >>> look = lookup_kjt(embedding, kjt, layout)  # doctest: +SKIP
        >>> loss = bce(model(dense, look.inputs), labels); loss.backward()
        >>> look.apply_gradients(embedding)

    Raises:
        ValueError: the store is tiered (fewer slots than rows).
        DataFormatError: as :func:`kjt_to_sparse`.
    """
    if embedding.store.num_slots != layout.num_rows:
        raise ValueError(f"lookup_kjt needs an untiered store (one slot per row): the store has "
                         f"{embedding.store.num_slots} slots for {layout.num_rows} rows")
    sparse = kjt_to_sparse(kjt, layout, by=by)
    slots = _slots(sparse, layout)
    emb = embedding.lookup(slots)  # (B, T, D) or (1, L, D) leaf
    return KJTLookup(inputs=model_input(emb, sparse), emb=emb, slots=slots)


def read_kjt(read_rows: Callable[[torch.Tensor], torch.Tensor], kjt: Any, layout: TableLayout, *,
             by: KeyMatch = "name", pooling: str = "sum") -> torch.Tensor:
    """Pooled rows (B, T, D) of a KJT read through a feed (tiered or not; no gradient).

    Args:
        read_rows: ``feed.read_rows`` — (B, T) or (1, L) global rows -> their current
            weights (flush a tiered feed first so its backing tier is complete).
        kjt: the sparse features.
        layout: hotpipe's tables.
        by: how keys map to tables.
        pooling: ``sum`` (TorchRec's default) or ``mean``; an empty bag pools to 0.
    """
    sparse = kjt_to_sparse(kjt, layout, by=by)
    emb = read_rows(_slots(sparse, layout))  # (B, T, D) or (1, L, D)
    return pool(model_input(emb, sparse), pooling).contiguous()
