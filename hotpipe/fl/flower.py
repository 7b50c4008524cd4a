"""FLuID on Flower (flwr 1.42, Message API) with the simulation engine.

    ServerApp  FluidStrategy(FedAvg): configure_train sends the straggler the
               sub-model FluidServer planned (other nodes get the global
               arrays); aggregate_train re-expands and masked-averages
    ClientApp  builds the model at the widths it was sent (read off the
               tensor shapes), trains it, replies arrays + num-examples +
               sim-time (work / its speed) + cpu-time

Failure handling is Flower's: a ClientApp that raises comes back as an error
reply; the strategy records it in the round's ``failures`` and averages the
rest, so the server's model is never touched by a failed or malformed reply.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from hotpipe.errors import ConfigError
from hotpipe.fl.errors import FLError
from hotpipe.fl.groups import widths_from_shapes
from hotpipe.fl.server import ClientUpdate, FluidConfig, FluidServer, RoundInfo
from hotpipe.fl.simulator import (
    client_generator,
    initial_state,
    pooled_test,
    simulated_time,
    work_fraction,
)
from hotpipe.fl.submodel import extract, shapes_of
from hotpipe.fl.tasks import Task, load_task
from hotpipe.fl.train import TrainConfig, evaluate, train_local


def _arrays(content: RecordDict, key: str) -> ArrayRecord:
    rec = content[key]
    if not isinstance(rec, ArrayRecord):
        raise TypeError(f"{key!r} holds a {type(rec).__name__}, expected an ArrayRecord")
    return rec


def _number(content: RecordDict, record: str, key: str) -> float:
    """A numeric entry of a Metric/ConfigRecord; TypeError names it when it is not a number."""
    value = content[record][key]  # type: ignore[index]
    if not isinstance(value, int | float):
        raise TypeError(f"{record}[{key!r}] is {value!r}, expected a number")
    return float(value)


class FluidStrategy(FedAvg):
    """FedAvg that sends stragglers sub-models and re-expands their replies.

    Args:
        server: the run's :class:`FluidServer` (plans and aggregates).
        **kwargs: passed to :class:`flwr.serverapp.strategy.FedAvg`.
    """

    def __init__(self, server: FluidServer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.server = server
        self.infos: list[RoundInfo] = []
        self.round_times: list[float] = []
        self._global: dict[str, torch.Tensor] = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self._global = dict(arrays.to_torch_state_dict())
        plans = self.server.plan(server_round, [m.metadata.dst_node_id for m in messages])
        out = []
        for m in messages:
            keep = plans[m.metadata.dst_node_id]
            if keep is None:
                out.append(m)
                continue
            sub = ArrayRecord(extract(self._global, self.server.groups, keep))
            record = RecordDict({self.arrayrecord_key: sub,
                                 self.configrecord_key: m.content[self.configrecord_key]})
            out.append(Message(content=record, message_type=m.metadata.message_type,
                               dst_node_id=m.metadata.dst_node_id))
        return out

    def aggregate_train(self, server_round: int, replies: Iterable[Message],
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        # shapes differ between replies on purpose: FluidServer checks each one
        valid, errors = self._check_and_log_replies(replies, is_train=True, validate=False)
        failures = {e.metadata.src_node_id: str(e.error.reason) for e in errors}
        updates = []
        for m in valid:
            try:
                arrays = _arrays(m.content, self.arrayrecord_key).to_torch_state_dict()
                updates.append(ClientUpdate(
                    m.metadata.src_node_id, arrays,
                    int(_number(m.content, "metrics", "num-examples")),
                    _number(m.content, "metrics", "sim-time")))
            except (KeyError, TypeError, ValueError) as e:
                failures[m.metadata.src_node_id] = f"malformed reply: {e!r}"
        new, info = self.server.aggregate(server_round, self._global, updates, failures)
        self.infos.append(info)
        times = [u.time for u in updates if u.client in info.aggregated]
        self.round_times.append(max(times, default=0.0))
        summary = MetricRecord({"r": info.r, "invariant-fraction": info.invariant_fraction,
                                "round-time": self.round_times[-1],
                                "failures": len(info.failures)})
        return ArrayRecord(new), summary


@functools.lru_cache(maxsize=4)
def _cached_task(name: str, n_clients: int, seed: int, data_dir: str | None,
                 train: TrainConfig | None) -> Task:
    # each Ray actor loads the task once, not once per round
    return load_task(name, n_clients, seed, Path(data_dir) if data_dir else None, train)


def make_client_app(task: str, n_clients: int, speeds: Sequence[float], seed: int,
                    data_dir: Path | None = None, fail: set[tuple[int, int]] | None = None,
                    train: TrainConfig | None = None) -> ClientApp:
    """A ClientApp for partition ``context.node_config['partition-id']`` of ``task``.

    ``fail`` holds (round, partition) pairs whose training raises, to exercise
    Flower's failure path in tests.
    """
    app = ClientApp()
    faults = frozenset(fail or ())
    speeds = tuple(speeds)

    @app.train()
    def _train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)  # each simulated client gets one core
        pid = int(context.node_config["partition-id"])
        rnd = int(_number(msg.content, "config", "server-round"))
        if (rnd, pid) in faults:
            raise RuntimeError(f"injected fault: partition {pid}, round {rnd}")
        t = _cached_task(task, n_clients, seed, str(data_dir) if data_dir else None, train)
        state = _arrays(msg.content, "arrays").to_torch_state_dict()
        widths = widths_from_shapes(t.spec.groups(), shapes_of(state))
        model = t.spec.build(widths)
        model.load_state_dict(state)
        data = t.clients[pid]
        t0 = time.thread_time()
        seen, loss = train_local(model, data.x_train, data.y_train, t.train,
                                 client_generator(seed, rnd, pid))
        cpu = time.thread_time() - t0
        metrics = MetricRecord({"num-examples": seen, "train-loss": loss, "partition-id": pid,
                                "sim-time": simulated_time(t.spec, widths, seen, speeds[pid]),
                                "cpu-time": cpu})
        return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()),
                                   "metrics": metrics}), reply_to=msg)

    return app


def run_flower(task: str, fluid: FluidConfig, rounds: int, speeds: Sequence[float], *,
               seed: int = 0, data_dir: Path | None = None,
               fail: set[tuple[int, int]] | None = None, num_cpus: int = 2,
               train: TrainConfig | None = None) -> list[dict[str, Any]]:
    """Run FLuID with Flower's simulation engine (Ray); return one record per round.

    ``train`` overrides the task's default client training (lr, batch, epochs).
    Records hold round, accuracy, loss (centralized, pooled test set),
    round_time (simulated), r, straggler (a Flower node id), kept,
    invariant_fraction and failures.
    """
    from flwr.simulation import run_simulation  # pulls in Ray

    if rounds < 1:
        raise ConfigError("rounds", f"expected >= 1, got {rounds}")
    t = _cached_task(task, len(speeds), seed, str(data_dir) if data_dir else None, train)
    init = initial_state(t.spec, seed)
    x_test, y_test = pooled_test(t)
    records: list[dict[str, Any]] = []

    def central_eval(rnd: int, arrays: ArrayRecord) -> MetricRecord:
        model = t.spec.build()
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = evaluate(model, x_test, y_test)
        records.append({"round": rnd, "accuracy": acc, "loss": loss})
        return MetricRecord({"accuracy": acc, "loss": loss})

    server_app = ServerApp()
    strategies: list[FluidStrategy] = []

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        n = len(speeds)
        server = FluidServer(t.spec.groups(), shapes_of(init), fluid, rounds,
                             work_fraction=work_fraction(t.spec))
        strategy = FluidStrategy(server,
                                 fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)
        strategies.append(strategy)
        strategy.start(grid=grid, initial_arrays=ArrayRecord(init), num_rounds=rounds,
                       evaluate_fn=central_eval)

    try:
        run_simulation(server_app,
                       make_client_app(task, len(speeds), speeds, seed, data_dir, fail, train),
                       num_supernodes=len(speeds),
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                       "init_args": {"num_cpus": num_cpus,
                                                     "include_dashboard": False}})
    except RuntimeError as e:
        # seen on an overloaded machine: Ray's node times out during startup
        raise FLError(f"Flower's simulation engine crashed ({e}); its log above names the "
                      "cause, e.g. Ray failing to start") from e
    if not strategies or len(records) != rounds + 1:
        raise ConfigError("flower", f"the simulation stopped early: {len(records) - 1} of "
                                    f"{rounds} rounds evaluated (see Flower's log above)")
    strategy = strategies[0]
    for rec, info, rt in zip(records[1:], strategy.infos, strategy.round_times, strict=False):
        rec.update(round_time=rt, r=info.r, straggler=info.straggler, kept=info.kept,
                   invariant_fraction=info.invariant_fraction,
                   failures={str(k): v for k, v in info.failures.items()})
    return records
