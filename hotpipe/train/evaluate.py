"""Validation metrics: AUC and log-loss from scikit-learn (not hand-written)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import log_loss, roc_auc_score

from hotpipe.data.loader import BatchLoader
from hotpipe.model.bags import model_input
from hotpipe.model.base import RecModel
from hotpipe.train.feed import Feed, global_slots


@torch.no_grad()
def evaluate(model: RecModel, feed: Feed, loader: BatchLoader, offsets: torch.Tensor) -> dict[str, float]:
    """AUC and log-loss of ``model`` on every batch of ``loader``.

    Reads rows through ``feed.read_rows`` so a tiered run evaluates on the
    same weights as an untiered one (the caller flushes first).
    """
    if len(loader) == 0:
        return {"val_auc": float("nan"), "val_logloss": float("nan"), "val_rows": 0}
    model.eval()
    probs, labels = [], []
    for batch in loader:
        emb = feed.read_rows(global_slots(batch, offsets))  # (B, T, D); multi-hot (1, L, D)
        probs.append(torch.sigmoid(model(batch.dense, model_input(emb, batch.sparse))).numpy())
        labels.append(batch.labels.numpy())
    model.train()
    p = np.concatenate(probs).astype(np.float64)
    y = np.concatenate(labels)
    # AUC is undefined with a single class; say so instead of raising.
    auc = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")
    return {"val_auc": auc, "val_logloss": float(log_loss(y, p, labels=[0, 1])), "val_rows": int(len(y))}
