"""The three tasks: a model spec, its clients' data and FLuID-like training defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hotpipe.errors import ConfigError
from hotpipe.fl.data import (
    ClientData,
    load_digits_clients,
    load_femnist_clients,
    load_shakespeare_clients,
)
from hotpipe.fl.models import CNNSpec, LSTMSpec, MLPSpec, ModelSpec
from hotpipe.fl.train import TrainConfig

TASKS = ("digits", "femnist", "shakespeare")


@dataclass(frozen=True)
class Task:
    name: str
    spec: ModelSpec
    clients: list[ClientData]
    train: TrainConfig


def load_task(name: str, n_clients: int, seed: int, data_dir: Path | None = None,
              train: TrainConfig | None = None) -> Task:
    """Build a task by name. ``seed`` fixes the data split (not the training)."""
    if name == "digits":
        return Task(name, MLPSpec(), load_digits_clients(n_clients, seed),
                    train or TrainConfig(lr=0.1, batch_size=16))
    if name == "femnist":
        return Task(name, CNNSpec(), load_femnist_clients(n_clients, seed, data_dir),
                    train or TrainConfig(lr=0.05, batch_size=16))
    if name == "shakespeare":
        return Task(name, LSTMSpec(), load_shakespeare_clients(n_clients, seed, data_dir),
                    train or TrainConfig(lr=0.8, batch_size=16))
    raise ConfigError("task", f"expected one of {', '.join(TASKS)}, got {name!r}")
