"""A deterministic in-process federated run with simulated client speeds.

Clients train one after another in this process; their *simulated* time is

    time_i = work(r_i) / speed_i,   work(r) = MACs(sub-model) / MACs(full) * samples

(one unit = one full-model sample at speed 1), and a round lasts
``max_i time_i`` — the straggler's time unless its sub-model is small enough.
The measured CPU time of each client's training is logged beside it, but never
drives a decision, so a run is the same on a busy and on a quiet machine.

A client that raises while training is recorded as failed for that round and
the round goes on without it (the same recovery Flower applies to error
replies); the global model then averages only the replies that arrived.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from hotpipe.errors import ConfigError
from hotpipe.fl.models import ModelSpec, widths_of
from hotpipe.fl.server import ClientUpdate, FluidConfig, FluidServer
from hotpipe.fl.submodel import extract, shapes_of
from hotpipe.fl.tasks import Task
from hotpipe.fl.train import evaluate, train_local

# (round, client, state it was sent) -> raise to make that client fail this round
FaultHook = Callable[[int, int, Mapping[str, torch.Tensor]], None]


@dataclass(frozen=True)
class SimConfig:
    """Args:
        rounds: federated rounds.
        speeds: relative speed per client (1 = reference device); its length
            is the number of clients.
        seed: seeds the model init and every client's shuffles.
    """

    rounds: int
    speeds: tuple[float, ...]
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError("rounds", f"expected >= 1, got {self.rounds}")
        if not self.speeds or any(not s > 0 for s in self.speeds):
            raise ConfigError("speeds", f"expected positive speeds, got {self.speeds}")


@dataclass
class History:
    """Per-round records (round 0 = the initial model) and the final global state."""

    rounds: list[dict[str, Any]] = field(default_factory=list)
    final_state: dict[str, torch.Tensor] = field(default_factory=dict)


def client_generator(seed: int, rnd: int, client: int) -> torch.Generator:
    """One stream per (seed, round, client): independent of every other client's draws."""
    return torch.Generator().manual_seed((seed * 1_000_003 + rnd) * 1_009 + client)


def simulated_time(spec: ModelSpec, widths: Mapping[str, int], examples: int,
                   speed: float) -> float:
    """``work / speed``: full-model sample-equivalents trained, at relative ``speed``."""
    return spec.macs(widths) / spec.macs() * examples / speed


def work_fraction(spec: ModelSpec) -> Callable[[Mapping[str, torch.Tensor]], float]:
    """Kept neurons -> the sub-model's share of the full model's MACs."""
    full = spec.macs()
    return lambda keep: spec.macs(widths_of(spec, keep)) / full


def initial_state(spec: ModelSpec, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.detach().clone() for k, v in spec.build().state_dict().items()}


def pooled_test(task: Task) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.cat([c.x_test for c in task.clients]),
            torch.cat([c.y_test for c in task.clients]))


def simulate(task: Task, fluid: FluidConfig, sim: SimConfig, *,
             fault: FaultHook | None = None,
             on_round: Callable[[dict[str, Any]], None] | None = None) -> History:
    """Run ``sim.rounds`` rounds of FLuID (or a baseline) and return the history.

    Each record holds: round, accuracy, loss (pooled test set), round_time and
    sim_clock (simulated), cpu_time (measured, summed over clients), straggler,
    r, kept, invariant_fraction, threshold, failures, and per-client
    ``clients[cid] = {sim_time, cpu_time, r, examples}``.
    """
    if len(sim.speeds) != len(task.clients):
        raise ConfigError("speeds", f"{len(sim.speeds)} speeds for {len(task.clients)} clients")
    spec = task.spec
    state = initial_state(spec, sim.seed)
    server = FluidServer(spec.groups(), shapes_of(state), fluid, sim.rounds,
                         work_fraction=work_fraction(spec))
    x_test, y_test = pooled_test(task)
    hist = History()
    loss, acc = evaluate(_load(spec, state, None), x_test, y_test)
    hist.rounds.append({"round": 0, "accuracy": acc, "loss": loss, "round_time": 0.0,
                        "sim_clock": 0.0, "cpu_time": 0.0})
    clock = 0.0
    ids = list(range(len(task.clients)))
    for rnd in range(1, sim.rounds + 1):
        plans = server.plan(rnd, ids)
        updates, failures, per_client = [], {}, {}
        for cid in ids:
            keep = plans[cid]
            sent = extract(state, spec.groups(), keep) if keep is not None else state
            data = task.clients[cid]
            t0 = time.thread_time()
            try:
                if fault is not None:
                    fault(rnd, cid, sent)
                model = _load(spec, sent, keep)
                seen, _ = train_local(model, data.x_train, data.y_train, task.train,
                                      client_generator(sim.seed, rnd, cid))
            except Exception as e:  # a client's crash must not take the server down
                failures[cid] = f"{type(e).__name__}: {e}"
                continue
            cpu = time.thread_time() - t0
            sim_time = simulated_time(spec, widths_of(spec, keep or {}), seen, sim.speeds[cid])
            per_client[cid] = {"sim_time": sim_time, "cpu_time": cpu, "examples": seen,
                               "r": server.r if keep is not None else 1.0}
            updates.append(ClientUpdate(cid, model.state_dict(), seen, sim_time))
        state, info = server.aggregate(rnd, state, updates, failures)
        round_time = max((c["sim_time"] for c in per_client.values()), default=0.0)
        clock += round_time
        loss, acc = evaluate(_load(spec, state, None), x_test, y_test)
        rec = {"round": rnd, "accuracy": acc, "loss": loss, "round_time": round_time,
               "sim_clock": clock, "cpu_time": sum(c["cpu_time"] for c in per_client.values()),
               "straggler": info.straggler, "r": info.r, "kept": info.kept,
               "invariant_fraction": info.invariant_fraction, "threshold": info.threshold,
               "failures": {str(k): v for k, v in info.failures.items()},
               "clients": {str(k): v for k, v in per_client.items()}}
        hist.rounds.append(rec)
        if on_round is not None:
            on_round(rec)
    hist.final_state = state
    return hist


def _load(spec: ModelSpec, state: Mapping[str, torch.Tensor],
          keep: Mapping[str, torch.Tensor] | None) -> torch.nn.Module:
    model = spec.build(widths_of(spec, keep or {}))
    model.load_state_dict(state)
    return model
