"""Run configuration: YAML file + ``key=value`` overrides, validated strictly.

Only the CLI boundary reads YAML; library components take the typed
sections below. Unknown keys and wrong types raise :class:`ConfigError`
naming the dotted key (``cache.window``), what was expected and what was
found. Validation is pydantic's (a well-kept library for exactly this).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hotpipe.errors import ConfigError


class _Section(BaseModel):
    # forbid: a typo like `cache.windw=8` must fail, not be ignored.
    # strict ints/floats would reject `lr=1` for a float; allow int->float only.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class DataConfig(_Section):
    path: str | None = None
    batch_size: int = Field(2048, gt=0)
    # Hold out the *last* rows (the latest in time for Criteo) for validation,
    # as Criteo's day-7 split does, rather than a random subset.
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    # Evaluate on at most this many validation rows (0 = all): keeps eval cheap on big data.
    max_val_rows: int = Field(0, ge=0)


class ModelConfig(_Section):
    embedding_dim: int = Field(16, gt=0)
    bottom: list[int] = [64, 16]
    top: list[int] = [64, 1]


class OptimConfig(_Section):
    embedding: Literal["sgd", "rowwise_adagrad", "adagrad"] = "rowwise_adagrad"
    embedding_lr: float = Field(0.05, gt=0)
    dense: Literal["sgd", "adagrad", "adam"] = "adagrad"
    dense_lr: float = Field(0.05, gt=0)


class TrainConfig(_Section):
    epochs: int = Field(1, gt=0)
    max_steps: int = Field(0, ge=0)  # 0 = no limit
    seed: int = 0
    threads: int = Field(0, ge=0)  # 0 = torch's default (all cores)
    log_every: int = Field(20, gt=0)
    eval_every: int = Field(0, ge=0)  # steps; 0 = only at the end
    checkpoint_every: int = Field(0, ge=0)  # steps; 0 = only at the end
    progress: bool = True


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)\s*$")
_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
          "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


class CacheConfig(_Section):
    # none = every row in the fast tier (the untiered reference run).
    policy: Literal["none", "lookahead", "lru", "lfu", "static"] = "none"
    # A fraction of all rows (0 < f <= 1), an absolute row count (int > 1),
    # or a byte size such as "2GiB" (weights + optimizer state per row).
    capacity: float | int | str = 1.0
    window: int = Field(64, gt=0)  # steps of lookahead the planner reads
    depth: int = Field(1, ge=1)  # steps prefetched ahead of compute
    backing: Literal["host", "file"] = "host"
    backing_dir: str | None = None  # where `file` backing puts its table files

    @field_validator("capacity")
    @classmethod
    def _capacity(cls, v: float | int | str) -> float | int | str:
        if isinstance(v, str):
            if not _SIZE.match(v):
                raise ValueError(f"expected a fraction, a row count or a size like '2GiB'; found {v!r}")
        elif isinstance(v, float) and not 0.0 < v <= 1.0:
            raise ValueError(f"a fractional capacity must be in (0, 1]; found {v}")
        elif isinstance(v, int) and v < 1:
            raise ValueError(f"a row capacity must be >= 1; found {v}")
        return v

    def capacity_rows(self, total_rows: int, bytes_per_row: int) -> int:
        """Resolve the capacity to a number of rows."""
        v = self.capacity
        if isinstance(v, str):
            m = _SIZE.match(v)
            assert m is not None  # validated above
            return max(1, int(float(m.group(1)) * _UNITS[m.group(2)]) // bytes_per_row)
        if isinstance(v, float):
            return max(1, int(round(v * total_rows)))
        return int(v)


class RunConfig(_Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    cache: CacheConfig = CacheConfig()


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(key, f"{p!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["cache.window=8", "model.bottom=[64,16]"]`` -> nested dict (YAML-typed values)."""
    tree: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(item, "expected key=value (e.g. cache.window=64)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as e:
            raise ConfigError(key, f"cannot parse value {raw!r}: {e}") from e
        _set_dotted(tree, key.strip(), value)
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read an optional YAML file, apply overrides, validate."""
    tree: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(str(path), f"cannot read config file: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(str(path), f"expected a mapping at top level, found {type(loaded).__name__}")
        tree = loaded
    tree = _merge(tree, parse_overrides(overrides or []))
    return validate(tree)


def validate(tree: dict[str, Any]) -> RunConfig:
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            section = err["loc"][0] if len(err["loc"]) > 1 else None
            model = RunConfig.model_fields[str(section)].annotation if section else RunConfig
            known = ", ".join(sorted(model.model_fields)) if model is not None and hasattr(model, "model_fields") else ""
            raise ConfigError(key, f"unknown key (known keys here: {known})") from None
        msg = err["msg"].removeprefix("Value error, ")
        if "found" not in msg:
            msg += f"; found {err.get('input')!r}"
        raise ConfigError(key, msg) from None
