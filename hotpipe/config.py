"""Run configuration: YAML file + ``key=value`` overrides, validated strictly.

Only the CLI boundary reads YAML; library components take the typed
sections below. Unknown keys and wrong types raise :class:`ConfigError`
naming the dotted key (``cache.window``), what was expected and what was
found. Validation is pydantic's (a well-kept library for exactly this).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hotpipe.capacity import Capacity
from hotpipe.errors import ConfigError


class _Section(BaseModel):
    # forbid: a typo like `cache.windw=8` must fail, not be ignored.
    # strict ints/floats would reject `lr=1` for a float; allow int->float only.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        # pydantic's lax mode reads `true` as 1 for an int field: `cache.window=true`
        # would silently mean a window of one step.
        if isinstance(data, dict):
            for k, v in data.items():
                f = cls.model_fields.get(k)
                if isinstance(v, bool) and f is not None and f.annotation is not bool:
                    raise ConfigError(f"{cls._section}.{k}" if cls._section else k,
                                      f"expected a number, found {v!r}")
        return data

    _section: ClassVar[str] = ""


class DataConfig(_Section):
    _section: ClassVar[str] = "data"
    path: str | None = None
    batch_size: int = Field(2048, gt=0)
    # Hold out the *last* rows (the latest in time for Criteo) for validation,
    # as Criteo's day-7 split does, rather than a random subset.
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    # Evaluate on at most this many validation rows (0 = all): keeps eval cheap on big data.
    max_val_rows: int = Field(0, ge=0)


class ModelConfig(_Section):
    _section: ClassVar[str] = "model"
    # The interaction between the features: DLRM's pairwise dots, DCN-v2's cross
    # network, or Ad-Rec's masked transformer (hotpipe/model/{dlrm,dcn,adrec}.py);
    # tbsm: a behaviour list pooled by attention against the target item, then
    # DLRM (hotpipe/model/tbsm.py; needs a multi-hot history table).
    arch: Literal["dlrm", "dcn", "adrec", "tbsm"] = "dlrm"
    # Multi-hot (list) tables: each bag of rows is summed or averaged (empty
    # bags give a zero vector either way); one-hot data is unaffected.
    pooling: Literal["sum", "mean"] = "sum"
    embedding_dim: int = Field(16, gt=0)
    # Bottom MLP widths; the last is the embedding dim (dense features join the
    # interaction as one more D-vector). arch=dcn also takes [] (raw dense into
    # x0, as in the DCN-v2 paper) and any last width (x0 is one flat vector).
    bottom: list[int] = [64, 16]
    # Top MLP widths; the last is 1 (one logit per sample).
    top: list[int] = [64, 1]
    # arch=dcn: cross layers, their rank (0 = full N x N; the paper finds r ~ N/4
    # loses nothing), stacked (cross -> deep) or parallel (cross | deep), and the
    # deep MLP's widths ([] only when stacked).
    cross_layers: int = Field(3, gt=0)
    cross_rank: int = Field(0, ge=0)
    dcn_structure: Literal["stacked", "parallel"] = "stacked"
    deep: list[int] = [64, 32]
    # arch=adrec: attention heads (embedding_dim must divide by it), transformer
    # blocks, and the feed-forward's hidden width as a multiple of embedding_dim.
    heads: int = Field(2, gt=0)
    attn_layers: int = Field(2, gt=0)
    ffn_mult: int = Field(2, gt=0)
    # arch=tbsm: the table (index, in dataset order) holding each sample's
    # behaviour list, the table of the item being scored, and how many recency
    # positions get their own learned vector (older items share the last).
    history_table: int = Field(0, ge=0)
    target_table: int = Field(1, ge=0)
    history_len: int = Field(50, gt=0)

    @model_validator(mode="after")
    def _shapes(self) -> ModelConfig:
        for key, widths in (("bottom", self.bottom), ("top", self.top), ("deep", self.deep)):
            if not widths and not (key == "deep" or (key == "bottom" and self.arch == "dcn")):
                raise ConfigError(f"model.{key}", "expected a non-empty list of layer widths, found []")
            if widths and min(widths) < 1:
                raise ConfigError(f"model.{key}", f"expected positive widths, found {widths}")
        if self.arch != "dcn" and self.bottom[-1] != self.embedding_dim:
            raise ConfigError("model.bottom", f"the last width must equal model.embedding_dim "
                                              f"({self.embedding_dim}); found {self.bottom}")
        if self.top[-1] != 1:
            raise ConfigError("model.top", f"the last width must be 1 (one logit); found {self.top}")
        if self.arch == "dcn" and self.dcn_structure == "parallel" and not self.deep:
            raise ConfigError("model.deep", "model.dcn_structure=parallel needs a deep MLP beside "
                                            "the cross net; found []")
        if self.arch == "tbsm" and self.history_table == self.target_table:
            raise ConfigError("model.target_table", f"must differ from model.history_table; both are "
                                                    f"{self.history_table}")
        if self.arch == "adrec" and self.embedding_dim % self.heads:
            raise ConfigError("model.heads", f"model.embedding_dim ({self.embedding_dim}) must be "
                                             f"divisible by the number of heads; found {self.heads}")
        return self


class OptimConfig(_Section):
    _section: ClassVar[str] = "optim"
    embedding: Literal["sgd", "rowwise_adagrad", "adagrad"] = "rowwise_adagrad"
    embedding_lr: float = Field(0.05, gt=0)
    dense: Literal["sgd", "adagrad", "adam"] = "adagrad"
    dense_lr: float = Field(0.05, gt=0)


class TrainConfig(_Section):
    _section: ClassVar[str] = "train"
    epochs: int = Field(1, gt=0)
    max_steps: int = Field(0, ge=0)  # 0 = no limit
    seed: int = 0
    threads: int = Field(0, ge=0)  # 0 = torch's default (all cores)
    log_every: int = Field(20, gt=0)
    eval_every: int = Field(0, ge=0)  # steps; 0 = only at the end
    checkpoint_every: int = Field(0, ge=0)  # steps; 0 = only at the end
    progress: bool = True


class CacheConfig(_Section):
    _section: ClassVar[str] = "cache"
    # none = every row in the fast tier (the untiered reference run).
    policy: Literal["none", "lookahead", "lru", "lfu", "static"] = "none"
    # A fraction of all rows (0 < f <= 1), an absolute row count (int > 1),
    # or a byte size such as "2GiB" (weights + optimizer state per row).
    capacity: float | int | str = 1.0
    window: int = Field(64, gt=0)  # steps of lookahead the planner reads
    depth: int = Field(1, ge=1)  # steps prefetched ahead of compute
    backing: Literal["host", "file"] = "host"
    backing_dir: str | None = None  # where `file` backing puts its table files

    @field_validator("capacity", mode="before")
    @classmethod
    def _capacity(cls, v: Any) -> float | int | str:
        Capacity.parse(v)  # the one parser (hotpipe/capacity.py); raises naming the key
        return v  # type: ignore[no-any-return]

    @property
    def capacity_spec(self) -> Capacity:
        return Capacity.parse(self.capacity)


class DistConfig(_Section):
    """Several processes (``torchrun ... -m hotpipe train``); ignored by one process."""

    _section: ClassVar[str] = "dist"
    # Seconds a collective waits for a peer before every rank fails with an error
    # naming the rank: a dead or missing peer never hangs the others.
    timeout: float = Field(300.0, gt=0)
    # Hot rows kept on every rank (their gradients all-reduced): 0 = none, or a
    # capacity spelling (0.01 = 1% of rows, 50000 rows, 64MiB = a per-rank memory
    # budget: as many of the hottest rows as fit). More rows than exist, or a
    # budget beyond free memory, is an error, never clamped. Chosen from the
    # counts of the first `profile_steps` steps (0 = 5% of the steps). Tables
    # with fewer rows than ranks are replicated whatever this says.
    replicate: float | int | str = 0
    profile_steps: int = Field(0, ge=0)
    # Send the next step's rows that the step in flight leaves unchanged while it
    # computes (the rest after its update). false = one exchange after each
    # update: the reference path, the same bits, nothing overlapped.
    fetch_ahead: bool = True
    # 0 = exact. 1 = BagPipe-style relaxed sync, opt-in: every exchanged row of
    # the next step goes ahead, before the in-flight step's update, so a row
    # both steps use arrives one update late (its owner still applies every
    # gradient; replicated rows stay exact). Saves the second exchange; changes
    # results (BENCHMARKS "Relaxed sync"). Needs fetch_ahead.
    staleness: int = Field(0, ge=0, le=1)

    @model_validator(mode="after")
    def _stale_needs_ahead(self) -> DistConfig:
        if self.staleness and not self.fetch_ahead:
            raise ConfigError("dist.staleness", "expected 0 with dist.fetch_ahead=false (stale "
                                                "rows are the ones sent ahead); found "
                                                f"{self.staleness}")
        return self

    @field_validator("replicate", mode="before")
    @classmethod
    def _replicate(cls, v: Any) -> float | int | str:
        if not (isinstance(v, int) and not isinstance(v, bool) and v == 0):
            Capacity.parse(v, "dist.replicate")
        return v  # type: ignore[no-any-return]

    def replicate_rows(self, total_rows: int, bytes_per_row: int) -> int:
        if isinstance(self.replicate, int) and self.replicate == 0:
            return 0
        return Capacity.parse(self.replicate, "dist.replicate").rows(total_rows, bytes_per_row)


class ScheduleConfig(_Section):
    """Popular / non-popular sample scheduling (FAE, Hotline; hotpipe/data/schedule.py).

    Opt-in and not exact: it trains the same samples per epoch in another order.
    """

    _section: ClassVar[str] = "schedule"
    # none = the data's order (the exact run); fae = per window, the popular
    # batches then the rest; hotline = both kinds interleaved within each window.
    mode: Literal["none", "fae", "hotline"] = "none"
    # Batches reordered together; cache.window's default, so the planner reads a
    # whole reordered window ahead. Larger than an epoch = per-epoch phases (FAE).
    window: int = Field(64, gt=0)
    # Steps between hot-set recomputations (rounded up to whole windows); 0 = one hot set.
    refresh: int = Field(0, ge=0)
    # Share of the samples whose lookups are counted for the hot set (FAE: 5 %).
    sample: float = Field(0.05, gt=0.0, le=1.0)


class SkipConfig(_Section):
    """Stale-sample skipping (Slipstream; hotpipe/train/skip.py).

    Opt-in and not exact: samples whose rows all stopped moving are not trained.
    """

    _section: ClassVar[str] = "skip"
    # none = train every sample (the exact run); slipstream = skip stale samples.
    mode: Literal["none", "slipstream"] = "none"
    # Steps before the first snapshot of the hot rows: rows still move fast early on.
    warmup: int = Field(100, gt=0)
    # Steps between snapshots; each comparison sets the stale rows for the next period.
    # Short enough that a ~1M-sample run (500 steps of 2048) sees several periods.
    interval: int = Field(50, gt=0)
    # Share of a period's samples to skip (the threshold is bisected to land near it).
    target_drop: float = Field(0.3, ge=0.0, lt=1.0)
    # Hot rows snapshotted (the most looked-up so far); 0 = the fast tier's size
    # (cache.capacity in rows), the rows Slipstream keeps in GPU memory.
    hot_rows: int = Field(0, ge=0)
    # Steps from an estimate to the first step it decides. "plan" (default) =
    # cache.window + cache.depth + 2, far enough ahead that the planner reads a
    # step after its stale set exists, so rows only skipped samples need are
    # never fetched; 0 = Slipstream's order (the next step), which fetches them.
    # A function of the config alone: tiered and untiered runs skip the same samples.
    lag: int | Literal["plan"] = "plan"

    @field_validator("lag", mode="before")
    @classmethod
    def _lag(cls, v: Any) -> int | str:
        if v == "plan" and isinstance(v, str):
            return v
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            return v
        raise ValueError(f"expected a step count >= 0 or 'plan', found {v!r}")


class RunConfig(_Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    cache: CacheConfig = CacheConfig()
    dist: DistConfig = DistConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    skip: SkipConfig = SkipConfig()


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


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                values: dict[str, Any] | None = None) -> RunConfig:
    """Read an optional YAML file, apply ``key=value`` overrides, then ``values``, validate.

    ``values`` are dotted keys with values taken as they are (not parsed as
    YAML): CLI flags such as ``--data`` go there, so a path like ``2024`` or
    ``runs/d #1`` stays the string it is.
    """
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
    for key, value in (values or {}).items():
        _set_dotted(tree, key, value)
    return validate(tree)


def validate(tree: dict[str, Any]) -> RunConfig:
    try:
        return RunConfig.model_validate(tree)
    except ConfigError:
        raise
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
