"""TorchRec state dicts in and out of hotpipe's feeds and run checkpoints.

Two places hold a trained model's tables: a live feed (what
:func:`~hotpipe.train.run.build_components` built, untiered or tiered) and a
run directory's latest checkpoint. Both speak records (R, D+W); the
conversion itself is ``interop/ebc_state.py``.

Importing into a run writes a *new* checkpoint through the ordinary protocol
(``train/checkpoint.py``: atomic, verified, ``LATEST`` switched last) with the
same dense part, step and dataset fingerprint and the imported rows, so
``hotpipe train --resume`` continues from the TorchRec weights and the old
checkpoint stays intact until the new one is durable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hotpipe._fs import DirLock
from hotpipe.config import RunConfig
from hotpipe.data.columnar import ColumnarDataset
from hotpipe.data.layout import TableLayout
from hotpipe.errors import CheckpointError
from hotpipe.interop.ebc_state import OptimState, StateDict, from_ebc_state, to_ebc_state
from hotpipe.storage.slots import RowStateSpec
from hotpipe.train.builders import build_row_optimizer
from hotpipe.train.checkpoint import load_checkpoint, save_checkpoint
from hotpipe.train.feed import Feed

__all__ = ["export_feed", "export_run", "import_feed", "import_run"]


def export_feed(feed: Feed, layout: TableLayout) -> tuple[StateDict, OptimState]:
    """A feed's current tables as an EBC state dict (and the optimizer state apart).

    Flushes first: a tiered feed's backing tier is then complete, so tiered and
    untiered runs export the same tensors.
    """
    feed.flush()
    return to_ebc_state(feed.export(), layout, dim=feed.store.dim)


def import_feed(feed: Feed, state: Mapping[str, Any], layout: TableLayout, *,
                optimizer: RowStateSpec, optimizer_state: Mapping[str, Mapping[str, Any]] | None = None,
                strict: bool = True) -> None:
    """Load an EBC state dict into a feed, before training starts (as a resume does:
    a tiered feed loads its backing tier; its fast tier must not hold rows yet)."""
    feed.load(from_ebc_state(state, layout, dim=feed.store.dim, optimizer=optimizer,
                             optimizer_state=optimizer_state, strict=strict))


def _run_layout(cfg: RunConfig, integrity_dataset: str | None, rows: int,
                data: str | os.PathLike[str] | None) -> TableLayout:
    """The tables of a run: read from its dataset (``data`` or the run's ``data.path``)."""
    path = data if data is not None else cfg.data.path
    if path is None:
        raise CheckpointError("the run's config has no data.path; name its dataset (--data DIR) "
                              "so its tables are known")
    ds = ColumnarDataset.open(str(path), verify=False)
    if integrity_dataset and ds.fingerprint != integrity_dataset:
        raise CheckpointError(f"dataset {path} is not the one the run trained on (fingerprint "
                              f"{ds.fingerprint[:12]}..., the checkpoint's {integrity_dataset[:12]}...)")
    layout = TableLayout.of(ds)
    if layout.num_rows != rows:
        raise CheckpointError(f"dataset {path} has {layout.num_rows} rows over its tables, the "
                              f"checkpoint {rows}")
    return layout


def _fingerprint(run_dir: Path) -> str | None:
    """The dataset fingerprint the latest checkpoint was trained on (None: not recorded)."""
    root = run_dir / "checkpoints"
    latest = root / "LATEST"
    f = root / latest.read_text().strip() / "integrity.json" if latest.is_file() else None
    if f is None or not f.is_file():
        return None
    return str(json.loads(f.read_text()).get("dataset", "")) or None


def export_run(run_dir: str | os.PathLike[str], *, data: str | os.PathLike[str] | None = None,
               ) -> tuple[StateDict, OptimState]:
    """The tables of a run's latest checkpoint (verified) as an EBC state dict.

    Args:
        run_dir: a hotpipe run directory.
        data: its dataset, if not at the run's ``data.path`` (table names and sizes come from it).

    Raises:
        CheckpointError: no valid checkpoint, or a dataset that does not match it.
    """
    run = Path(run_dir)
    dense, records = load_checkpoint(run)
    cfg = RunConfig.model_validate(dense["config"])
    layout = _run_layout(cfg, _fingerprint(run), int(records.shape[0]), data)
    return to_ebc_state(records, layout, dim=cfg.model.embedding_dim)


def import_run(run_dir: str | os.PathLike[str], state: Mapping[str, Any], *,
               data: str | os.PathLike[str] | None = None,
               optimizer_state: Mapping[str, Mapping[str, Any]] | None = None,
               strict: bool = True) -> Path:
    """Replace a run's tables by an EBC state dict: a new checkpoint at the same step.

    The dense part (model, optimizers, loop state, config) is the latest
    checkpoint's; the rows' optimizer state is ``optimizer_state`` or, without
    it, the optimizer's initial state. The run directory is locked meanwhile.

    Returns:
        The new checkpoint's folder.

    Raises:
        LockError: a training run holds the directory.
        CheckpointError: no valid checkpoint, or a dataset that does not match it.
        DataFormatError: the state dict does not match the run's tables.
    """
    run = Path(run_dir)
    lock = DirLock(run / ".lock", "torchrec import")
    try:
        dense, records = load_checkpoint(run)
        cfg = RunConfig.model_validate(dense["config"])
        fingerprint = _fingerprint(run)
        layout = _run_layout(cfg, fingerprint, int(records.shape[0]), data)
        dim = cfg.model.embedding_dim
        optimizer = build_row_optimizer(cfg.optim, dim)
        new = from_ebc_state(state, layout, dim=dim, optimizer=optimizer,
                             optimizer_state=optimizer_state, strict=strict)
        if new.shape != records.shape:
            raise CheckpointError(f"imported records {new.shape} do not match the checkpoint's "
                                  f"{records.shape} (optimizer {cfg.optim.embedding})")
        del records
        return save_checkpoint(run, int(dense["loop"]["step"]), dense, new, dataset=fingerprint or "")
    finally:
        lock.release()
