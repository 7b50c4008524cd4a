"""The FLuID server logic, free of any FL framework.

One :class:`FluidServer` per run decides, each round, which sub-model every
client gets (:meth:`plan`) and folds the replies into the next global model
(:meth:`aggregate`). The in-process simulator and the Flower strategy both
drive this same object, so the algorithm has a single owner.

Round ``t``::

    plan(t)        straggler (known after ``profile_rounds``) gets the neurons
                   chosen by the method; everyone else the full model
    aggregate(t)   check shapes -> expand -> masked average (FedAvg for
                   ``fedavg``) -> profile times -> flag invariant neurons on the
                   non-stragglers' updates -> threshold schedule
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from hotpipe.errors import ConfigError
from hotpipe.fl.aggregate import fedavg, masked_average
from hotpipe.fl.dropout import check_method, check_r, n_dropped, plan_submodel
from hotpipe.fl.errors import SubModelShapeError
from hotpipe.fl.groups import NeuronGroup, Shapes, check_groups, sub_shapes
from hotpipe.fl.invariance import (
    ThresholdConfig,
    ThresholdSchedule,
    invariant_neurons,
    max_relative_change,
)
from hotpipe.fl.profiling import StragglerProfiler
from hotpipe.fl.submodel import expand

State = Mapping[str, torch.Tensor]
KeepMap = dict[str, torch.Tensor]


@dataclass(frozen=True)
class FluidConfig:
    """How stragglers are treated.

    Args:
        method: ``fedavg`` | ``random`` | ``ordered`` | ``invariant``.
        r: fixed sub-model size in (0, 1]; ``None`` picks it from the time table.
        profile_rounds: rounds in which every client trains the full model, so
            the straggler is known before anyone is dropped (the reference: 1-2).
        threshold: invariance threshold knobs.
        seed: seeds the random choices (random dropout, invariant's random fill).
    """

    method: str = "invariant"
    r: float | None = None
    profile_rounds: int = 1
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        check_method(self.method)
        if self.r is not None:
            check_r(self.r)
        if self.profile_rounds < 1:
            raise ConfigError("profile_rounds", f"expected >= 1, got {self.profile_rounds}")


@dataclass(frozen=True)
class ClientUpdate:
    """One client's reply: its trained (sub-)model and what it took.

    Args:
        state: trained tensors, shaped like the sub-model the client was sent.
        num_examples: samples trained on (the FedAvg weight).
        time: reported training time, the profiler's input.
    """

    client: int
    state: Mapping[str, torch.Tensor]
    num_examples: int
    time: float


@dataclass
class RoundInfo:
    """What the server decided and saw in one round (logged per round)."""

    round: int
    straggler: int | None
    r: float
    kept: dict[str, int]  # neurons the straggler kept per group ({} when nobody dropped)
    invariant_fraction: float
    threshold: float
    aggregated: list[int]
    failures: dict[int, str]


class FluidServer:
    """Sub-model planning and masked aggregation for one run.

    Args:
        groups: the model's tied neuron groups.
        shapes: full-model tensor shapes.
        config: method and knobs.
        rounds: total rounds (the threshold starts rising at half of them).
        work_fraction: kept neurons -> the sub-model's share of the full
            model's work, to estimate a dropped client's full-model time
            (e.g. ``spec.macs(widths) / spec.macs()``). Default: its share
            of the parameters.

    Example:
        >>> srv = FluidServer(spec.groups(), shapes_of(global_state), FluidConfig(), rounds=20)
        >>> plans = srv.plan(1, clients=[0, 1, 2])        # {cid: keep or None}
        >>> global_state, info = srv.aggregate(1, global_state, updates)
    """

    def __init__(self, groups: list[NeuronGroup], shapes: Shapes, config: FluidConfig,
                 rounds: int, *,
                 work_fraction: Callable[[Mapping[str, torch.Tensor]], float] | None = None,
                 ) -> None:
        check_groups(groups, shapes)
        self.groups, self.shapes, self.config = groups, dict(shapes), config
        self.work_fraction = work_fraction or self._param_fraction
        self.profiler = StragglerProfiler()
        self.schedule = ThresholdSchedule(config.threshold, rounds)
        self.invariant: dict[str, torch.Tensor] = {}
        self.last_dropped: dict[int, dict[str, torch.Tensor]] = {}
        self._sent: dict[int, KeepMap | None] = {}
        self._work_sent: dict[int, float] = {}

    def _param_fraction(self, keep: Mapping[str, torch.Tensor]) -> float:
        sub = sub_shapes(self.groups, self.shapes, keep)
        return sum(math.prod(s) for s in sub.values()) / sum(math.prod(s) for s in self.shapes.values())

    @property
    def r(self) -> float:
        return self.config.r if self.config.r is not None else self.profiler.r

    def plan(self, rnd: int, clients: Sequence[int]) -> dict[int, KeepMap | None]:
        """Kept neurons per client for round ``rnd`` (``None`` = the full model)."""
        self._sent, self._work_sent = {}, {}
        strag = self.profiler.straggler
        drop = (self.config.method != "fedavg" and rnd > self.config.profile_rounds
                and strag in clients and self.r < 1.0)
        for c in clients:
            self._sent[c] = None
        if drop and strag is not None:
            gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + rnd)
            keep = plan_submodel(self.config.method, self.groups, self.r, gen,
                                 invariant=self.invariant,
                                 last_dropped=self.last_dropped.get(strag))
            self._sent[strag] = keep
            self._work_sent[strag] = self.work_fraction(keep)
            self.last_dropped[strag] = {g.name: _complement(g.size, keep[g.name])
                                        for g in self.groups}
        return dict(self._sent)

    def aggregate(self, rnd: int, global_state: State, updates: Sequence[ClientUpdate],
                  failures: Mapping[int, str] | None = None) -> tuple[dict[str, torch.Tensor], RoundInfo]:
        """The next global state from this round's replies.

        A reply from a client that was not sent a model this round, or whose
        tensors do not match what it was sent, is rejected into ``failures``
        and counts for nothing; if no reply is usable the global state is
        returned unchanged. Nothing the server holds is modified in place.
        """
        failed = dict(failures or {})
        full, masks, ok = [], [], []
        for u in updates:
            if u.client not in self._sent:
                failed[u.client] = f"client {u.client} replied but was not sent a model in round {rnd}"
                continue
            keep = self._sent[u.client]
            try:
                f, m = expand(u.state, self.shapes, self.groups, keep or {}, client=u.client)
            except SubModelShapeError as e:
                failed[u.client] = str(e)
                continue
            full.append(f)
            masks.append(m)
            ok.append(u)
        if not ok:
            new = {k: v.clone() for k, v in global_state.items()}
        elif self.config.method == "fedavg":
            new = fedavg(full, [u.num_examples for u in ok])
        else:
            new = masked_average(full, masks, [u.num_examples for u in ok], global_state)

        self.profiler.update({u.client: u.time for u in ok}, self._work_sent)
        th = self.schedule.before_round_aggregation(rnd)
        # only full-model replies of non-stragglers say which neurons stopped moving
        steady = [f for f, u in zip(full, ok, strict=True)
                  if self._sent[u.client] is None and u.client != self.profiler.straggler]
        inv_frac = 0.0
        if steady:
            self.invariant = invariant_neurons(global_state, steady, self.groups, th,
                                               self.config.threshold.quorum)
            smallest = min(float(v.min()) for v in
                           max_relative_change(global_state, steady, self.groups).values())
            enough = self.r < 1.0 and all(int(self.invariant[g.name].sum()) >= n_dropped(g.size, self.r)
                                          for g in self.groups)
            self.schedule.observe(rnd, smallest, enough)
            inv_frac = (sum(int(v.sum()) for v in self.invariant.values())
                        / sum(g.size for g in self.groups))
        strag_keep = next((k for k in self._sent.values() if k is not None), None)
        info = RoundInfo(
            round=rnd, straggler=self.profiler.straggler, r=self.r,
            kept={g: int(v.numel()) for g, v in strag_keep.items()} if strag_keep else {},
            invariant_fraction=inv_frac, threshold=th,
            aggregated=[u.client for u in ok], failures=failed)
        return new, info


def _complement(n: int, keep: torch.Tensor) -> torch.Tensor:
    mask = torch.ones(n, dtype=torch.bool)
    mask[keep] = False
    return mask
