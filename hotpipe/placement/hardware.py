"""What the cost model knows about a machine: measured rates, saved as JSON.

Every rate is a small linear fit measured by ``hotpipe calibrate``
(:mod:`hotpipe.placement.calibrate`) on the code paths training runs, or given
by hand in the same JSON for a machine that cannot be measured here::

    {
      "compute":  {"per_step_s": .., "per_sample_s": .., "model": {...}},
      "tiers":    {"host": {"per_apply_s": .., "per_fetch_s": .., "per_writeback_s": ..},
                   "file": {...}},
      "planner":  {"lookahead": {"per_step_s": .., "per_lookup_s": .., "per_miss_s": ..}, ...},
      "batch_read_per_sample_s": ..,
      "overlap":  {"compute_rate": .., "mover_rate": ..},
      "link":     {"bytes_per_s": .., "latency_s": .., "allreduce_bytes_per_s": ..,
                   "allreduce_latency_s": .., "measured": true, "how": ".."},
      "route":    {"per_step_s": .., "per_rank_s": .., "per_lookup_s": .., "per_scan_s": ..,
                   "measured": true},
      "machine":  {...}
    }
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hotpipe.errors import ConfigError, DataFormatError


@dataclass(frozen=True)
class ComputeFit:
    """One training step's compute: ``per_step_s + per_sample_s * B``.

    Measured for one model (``model``: dim, MLPs, tables, optimizers); the
    cost model refuses to use it for another.
    """

    per_step_s: float
    per_sample_s: float
    model: dict[str, Any] = field(default_factory=dict)

    def step_s(self, batch: int) -> float:
        return self.per_step_s + self.per_sample_s * batch


@dataclass(frozen=True)
class TierRates:
    """Applying one step's plan against a backing tier.

    ``per_apply_s + per_fetch_s * fetched + per_writeback_s * written_back``;
    a fetch is a backing gather plus a cache scatter, a write-back a cache
    gather plus a backing scatter (rows of dim + optimizer state).
    """

    per_apply_s: float
    per_fetch_s: float
    per_writeback_s: float

    def apply_s(self, fetched: Any, written_back: Any) -> Any:
        # No plan work at all costs nothing: TieredStore.apply returns at once.
        busy = (fetched + written_back) > 0
        return busy * self.per_apply_s + self.per_fetch_s * fetched + self.per_writeback_s * written_back


@dataclass(frozen=True)
class PlannerFit:
    """Planning one step: ``per_step_s + per_lookup_s * lookups + per_miss_s * misses``.

    Plus, once before the first step, ``per_profiled_lookup_s`` per lookup
    of the steps a policy profiles up front (``static`` ranks its hot set on
    them; other policies profile nothing).
    """

    per_step_s: float
    per_lookup_s: float
    per_miss_s: float
    per_profiled_lookup_s: float = 0.0

    def plan_s(self, lookups: Any, misses: Any) -> Any:
        return self.per_step_s + self.per_lookup_s * lookups + self.per_miss_s * misses


@dataclass(frozen=True)
class Overlap:
    """Speeds of compute and mover, relative to running alone, while both run.

    1.0 each: perfect overlap (separate resources, e.g. a GPU plus a copy
    engine); on a CPU the two share cores, so each slows the other.
    """

    compute_rate: float = 1.0
    mover_rate: float = 1.0


@dataclass(frozen=True)
class Link:
    """Collectives between ranks, as the distributed runtime calls them.

    ``hotpipe calibrate`` measures gloo on this machine's loopback with two
    ranks (``measured``, ``how`` say so); a hand-written file can describe a
    cluster's network instead. Costs, for W ranks::

        all_to_all  (W - 1) * latency_s + bytes / bytes_per_s
                    bytes: the most one rank sends or receives
        all_reduce  2 (W - 1) * allreduce_latency_s
                    + 2 (W - 1) / W * payload / allreduce_bytes_per_s   (a ring)

    ``allreduce_*`` of 0 take the all-to-all's values. ``sync_penalty``: on a
    machine that ranks share with each other (and with other work), how much
    longer a step of equal work on every rank lasts than the work, because
    the collective waits for whichever rank was descheduled (measured with
    the link's ranks; 0 for ranks on machines of their own).
    ``concurrency_slowdown``: how much slower the same work runs on each of
    ``world_size`` ranks at once than on one alone (shared cores, caches,
    memory bandwidth, other load).
    """

    bytes_per_s: float = 10e9
    latency_s: float = 20e-6
    measured: bool = False
    allreduce_bytes_per_s: float = 0.0
    allreduce_latency_s: float = 0.0
    sync_penalty: float = 0.0
    concurrency_slowdown: float = 1.0
    world_size: int = 2
    how: str = "assumed"

    def all_to_all_s(self, world_size: int, nbytes: Any) -> Any:
        return (world_size - 1) * self.latency_s + nbytes / self.bytes_per_s

    def all_reduce_s(self, world_size: int, payload: Any) -> Any:
        lat = self.allreduce_latency_s or self.latency_s
        bw = self.allreduce_bytes_per_s or self.bytes_per_s
        w = world_size
        return 2 * (w - 1) * lat + 2 * (w - 1) / w * payload / bw


@dataclass(frozen=True)
class RouteFit:
    """CPU work a distributed step adds on every rank, beyond one process's step at B/W.

    Every rank reads the whole global batch and works out every peer's routes
    (``placement/routing.py``: one pass over the L = B * T lookups of the
    global batch for the rows it owns, then sorts of about ``L / W`` ids), so
    this grows with the *global* batch::

        per_step_s + per_rank_s * W + per_scan_s * L
                   + per_lookup_s * (L / W) * log2(max(2, L / W))
    """

    per_step_s: float = 0.0
    per_rank_s: float = 0.0
    per_lookup_s: float = 0.0
    measured: bool = False
    per_scan_s: float = 0.0

    @staticmethod
    def sort_units(world_size: int, lookups: Any) -> Any:
        """``(L / W) * log2(L / W)``: the work of sorting the L / W ids one rank routes."""
        per = np.asarray(lookups, dtype=np.float64) / world_size
        return per * np.log2(np.maximum(2.0, per))

    def route_s(self, world_size: int, lookups: Any) -> Any:
        return (self.per_step_s + self.per_rank_s * world_size + self.per_scan_s * lookups
                + self.per_lookup_s * self.sort_units(world_size, lookups))


@dataclass(frozen=True)
class Hardware:
    """The measured (or given) rates the cost model uses."""

    compute: ComputeFit
    tiers: dict[str, TierRates]
    planner: dict[str, PlannerFit]
    batch_read_per_sample_s: float = 0.0
    overlap: Overlap = field(default_factory=Overlap)
    link: Link = field(default_factory=Link)
    route: RouteFit = field(default_factory=RouteFit)
    #: One rank's step on the distributed runtime's own loop at world size 1
    #: (exchange path, coalescing, all-reduce copies included), per rank batch;
    #: None: the cost model uses ``compute`` (one process's step) instead.
    rank_compute: ComputeFit | None = None
    machine: dict[str, Any] = field(default_factory=dict)

    def tier(self, name: str) -> TierRates:
        if name not in self.tiers:
            raise ConfigError("backing", f"no rates for tier {name!r} in the hardware file "
                                         f"(has {sorted(self.tiers)})")
        return self.tiers[name]

    def planner_fit(self, policy: str) -> PlannerFit:
        if policy not in self.planner:
            raise ConfigError("policy", f"no planner timing for policy {policy!r} in the hardware "
                                        f"file (has {sorted(self.planner)})")
        return self.planner[policy]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def median(cls, runs: list[Hardware]) -> Hardware:
        """Combine calibrations taken at different times: the median of every rate.

        On a shared machine one calibration can land in a burst of someone
        else's load; calibrating between the runs being predicted and taking
        medians exposes the rates to the same noise as the runs.
        """
        if not runs:
            raise ValueError("no calibrations to combine")
        dicts = [r.to_dict() for r in runs]
        out = {k: _median_tree([d[k] for d in dicts]) for k in dicts[0] if k != "machine"}
        out["machine"] = {**dicts[0]["machine"], "calibrations": len(runs),
                          "loadavg_each": [d["machine"].get("loadavg_before") for d in dicts]}
        return cls.from_dict(out)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>") -> Hardware:
        try:
            return cls(
                compute=ComputeFit(**d["compute"]),
                tiers={k: TierRates(**v) for k, v in d["tiers"].items()},
                planner={k: PlannerFit(**v) for k, v in d["planner"].items()},
                batch_read_per_sample_s=float(d.get("batch_read_per_sample_s", 0.0)),
                overlap=Overlap(**d.get("overlap", {})),
                link=Link(**d.get("link", {})),
                route=_route_fit(d.get("route", {})),
                rank_compute=ComputeFit(**d["rank_compute"]) if d.get("rank_compute") else None,
                machine=dict(d.get("machine", {})),
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise DataFormatError(f"not a hotpipe hardware file: {e}", path=source,
                                  expected="the keys written by `hotpipe calibrate`") from e

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Hardware:
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataFormatError(f"cannot read hardware file: {e}", path=str(p)) from e
        return cls.from_dict(d, str(p))


def _median_tree(nodes: list[Any]) -> Any:
    """Element-wise median of same-shaped JSON trees (non-numbers: the first one's)."""
    first = nodes[0]
    if isinstance(first, dict):
        return {k: _median_tree([n[k] for n in nodes]) for k in first}
    if isinstance(first, bool) or not isinstance(first, int | float) or all(n == first for n in nodes):
        return first
    return float(np.median(nodes))


def _route_fit(d: dict[str, Any]) -> RouteFit:
    """A stored :class:`RouteFit`; a measured one without ``per_scan_s`` was fitted to the
    per-peer routing (``per_lookup_s`` then multiplied ``L * log2(L / W)``), which this
    model would under-predict about W-fold: refuse it rather than mislead."""
    if d.get("measured") and "per_scan_s" not in d:
        raise ConfigError("route", "the hardware file's routing fit predates the vectorized "
                                   "routing (no per_scan_s); run `hotpipe calibrate` again")
    return RouteFit(**d)
