"""`hotpipe fl run`: FLuID and its baselines on digits / FEMNIST / Shakespeare."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hotpipe.errors import ConfigError

_METHODS = ("fedavg", "random", "ordered", "invariant")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("fl", help="federated learning with invariant dropout (FLuID)",
                       description="Federated learning where the straggler trains a sub-model.")
    fl_sub = p.add_subparsers(dest="fl_command", required=True)
    r = fl_sub.add_parser(
        "run", help="run one or more methods and write metrics + a plot",
        description="Run FedAvg / random / ordered / invariant dropout with simulated client "
                    "speeds; writes OUT/metrics.json and OUT/accuracy_vs_time.png.")
    r.add_argument("--task", required=True, choices=("digits", "femnist", "shakespeare"))
    r.add_argument("--method", default="invariant",
                   help=f"one or a comma list of {','.join(_METHODS)} (default invariant)")
    r.add_argument("--rounds", type=int, default=20)
    r.add_argument("--clients", type=int, default=5)
    r.add_argument("--speeds", default="1,1,0.9,0.8,0.5",
                   help="relative speed per client, comma separated (one per client)")
    r.add_argument("--r", type=float, default=None,
                   help="fixed sub-model size in (0,1]; default: chosen from profiled times")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", required=True, help="output directory")
    r.add_argument("--data-dir", default=None, help="shared data dir (default ../shared/data)")
    r.add_argument("--engine", choices=("sim", "flower"), default="sim",
                   help="sim: deterministic in-process; flower: Flower simulation engine (Ray)")
    r.add_argument("--lr", type=float, default=None, help="client SGD step (task default)")
    r.add_argument("--batch-size", type=int, default=None)
    r.add_argument("--epochs", type=int, default=1)
    r.add_argument("--threshold-every", type=int, default=10,
                   help="rounds between threshold raises in the second half")
    r.add_argument("--no-plot", action="store_true")
    r.set_defaults(func=_run)


def _parse_speeds(text: str, clients: int) -> tuple[float, ...]:
    try:
        speeds = tuple(float(s) for s in text.split(","))
    except ValueError as e:
        raise ConfigError("speeds", f"expected comma-separated numbers, got {text!r}") from e
    if len(speeds) != clients or any(not s > 0 for s in speeds):
        raise ConfigError("speeds", f"expected {clients} positive numbers (one per client), "
                                    f"got {text!r}")
    return speeds


def _parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in methods if m not in _METHODS]
    if bad or not methods:
        raise ConfigError("method", f"expected one or more of {','.join(_METHODS)}, got {text!r}")
    return methods


def _run(args: argparse.Namespace) -> int:
    import torch  # keep `hotpipe --help` fast

    from hotpipe.fl.invariance import ThresholdConfig
    from hotpipe.fl.report import summarize, write_run
    from hotpipe.fl.server import FluidConfig
    from hotpipe.fl.simulator import SimConfig, simulate
    from hotpipe.fl.tasks import load_task
    from hotpipe.fl.train import TrainConfig

    torch.set_num_threads(1)
    speeds = _parse_speeds(args.speeds, args.clients)
    methods = _parse_methods(args.method)
    data_dir = Path(args.data_dir) if args.data_dir else None
    task = load_task(args.task, args.clients, args.seed, data_dir)
    train = TrainConfig(lr=args.lr if args.lr is not None else task.train.lr,
                        batch_size=args.batch_size or task.train.batch_size, epochs=args.epochs)
    task = type(task)(task.name, task.spec, task.clients, train)
    sim = SimConfig(rounds=args.rounds, speeds=speeds, seed=args.seed)
    runs = {}
    for m in methods:
        fluid = FluidConfig(method=m, r=args.r, seed=args.seed,
                            threshold=ThresholdConfig(every=args.threshold_every))
        if args.engine == "flower":
            from hotpipe.fl.flower import run_flower  # needs the `fl` extra

            runs[m] = run_flower(args.task, fluid, args.rounds, speeds, seed=args.seed,
                                 data_dir=data_dir, train=train)
        else:
            runs[m] = simulate(task, fluid, sim).rounds
    meta = {k: v for k, v in vars(args).items() if k != "func"}
    write_run(Path(args.out), runs, meta, plot=not args.no_plot)
    print(json.dumps({m: summarize(recs) for m, recs in runs.items()}, indent=2))
    return 0
