"""Local training and evaluation, the work every client does each round."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hotpipe.errors import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    """Local SGD on a client.

    Args:
        lr: step size (plain SGD, as the FLuID clients).
        batch_size: samples per step.
        epochs: passes over the client's data per round.
    """

    lr: float = 0.05
    batch_size: int = 32
    epochs: int = 1

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError("train.lr", f"expected > 0, got {self.lr}")
        if self.batch_size < 1:
            raise ConfigError("train.batch_size", f"expected >= 1, got {self.batch_size}")
        if self.epochs < 1:
            raise ConfigError("train.epochs", f"expected >= 1, got {self.epochs}")


def train_local(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                gen: torch.Generator) -> tuple[int, float]:
    """Train in place on ``(x, y)``; return ``(examples seen, mean loss)``.

    Shapes: x (N, ...), y (N,) int64. The shuffle draws from ``gen`` only, so a
    client's batches do not depend on what other clients or methods drew.
    """
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    model.train()
    seen, total = 0, 0.0
    for _ in range(cfg.epochs):
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(idx)
            total += float(loss.detach()) * len(idx)
    return seen, total / max(seen, 1)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 1024) -> tuple[float, float]:
    """``(mean cross-entropy, accuracy)`` of ``model`` on ``(x, y)``."""
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(y), batch_size):
        out = model(x[i:i + batch_size])
        loss += float(nn.functional.cross_entropy(out, y[i:i + batch_size], reduction="sum"))
        correct += int((out.argmax(1) == y[i:i + batch_size]).sum())
    return loss / max(len(y), 1), correct / max(len(y), 1)
