"""`hotpipe calibrate | plan`: where rows should live, and how fast that trains.

- ``calibrate``: measure this machine's rates for the cost model -> hw.json.
- ``plan``: search tier configurations that fit a memory budget and print the
  best few with predicted samples/s, hit rate, bytes moved and memory per tier;
  with ``--ranks 8,16,64``, the distributed runtime's predicted samples/s,
  bytes exchanged per sample and what limits each world size (validated
  against the runtime on this machine: ``benchmarks/validate_ranks.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hotpipe.capacity import parse_size
from hotpipe.errors import ConfigError

if TYPE_CHECKING:
    from hotpipe.config import RunConfig
    from hotpipe.placement.costmodel import Prediction
    from hotpipe.placement.ranks import RankPrediction

def _floats(text: str, key: str) -> tuple[float, ...]:
    try:
        out = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(key, f"expected comma-separated numbers, found {text!r}") from None
    if not out or min(out) < 0 or max(out) > 1:
        raise ConfigError(key, f"expected shares in [0, 1], found {text!r}")
    return out


def _ints(text: str, key: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(key, f"expected comma-separated integers, found {text!r}") from None
    if not out or min(out) < 0:
        raise ConfigError(key, f"expected non-negative integers, found {text!r}")
    return out


def _log(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    c = sub.add_parser("calibrate", help="measure this machine's rates for the cost model",
                       description="Microbenchmarks on the training code paths; writes hw.json. "
                                   "Model settings come from --config and key=value overrides.")
    c.add_argument("--out", default="hw.json", help="hardware file to write (default hw.json)")
    c.add_argument("--data", help="dataset whose shape (tables, dense features) to calibrate for")
    c.add_argument("--config", help="YAML run config (model, optimizers, batch size, threads)")
    c.add_argument("--tables", type=int, default=26, help="tables, when no --data (default 26)")
    c.add_argument("--rows-per-table", type=int, default=1 << 15,
                   help="rows of each calibration table for tier/planner rates (default 32768)")
    c.add_argument("--steps", type=int, default=30, help="training steps per compute measurement")
    c.add_argument("--repeats", type=int, default=3, help="measurements per point (median)")
    c.add_argument("--rank-compute", action="store_true",
                   help="also time one rank of the distributed runtime (W = 1, spawned) at B/2 and "
                        "B/4: `plan --ranks` then uses it for a rank's CPU time (validated this way)")
    c.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    c.set_defaults(func=_calibrate)

    q = sub.add_parser("plan", help="search tier configurations for a memory budget",
                       description="Predict samples/s of tier configurations that fit --memory and "
                                   "print the best. Model settings come from --config and overrides. "
                                   "With --ranks W1,W2,..: the distributed runtime on each world size "
                                   "(bytes exchanged are counted exactly from the trace; samples/s from "
                                   "the calibrated compute, routing and link rates).")
    src = q.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="dataset directory")
    src.add_argument("--tables", choices=("terabyte", "kaggle"),
                     help="no dataset: a sampled synthetic trace over Criteo Terabyte's (MLPerf, "
                          "40M-capped) or Kaggle's table sizes; --steps global batches of "
                          "data.batch_size, Zipf --zipf")
    q.add_argument("--zipf", type=float, default=1.05, help="skew of the --tables trace (default 1.05)")
    q.add_argument("--memory", required=True, help="fast-tier memory per rank, e.g. 8GiB")
    q.add_argument("--host-memory", help="RAM a host backing may use (default: no limit)")
    q.add_argument("--ranks", default="1",
                   help="world sizes, comma-separated (e.g. 8,16,64). > 1: rows partitioned over "
                        "ranks as `torchrun ... -m hotpipe train` runs them, hot rows replicated; "
                        "bytes exchanged equal the runtime's, samples/s is compared with measured "
                        "runs in BENCHMARKS.md)")
    q.add_argument("--ranks-per-host", type=int, default=1,
                   help="ranks sharing one machine like the --hw one (default 1: a cluster of such "
                        "machines; the world size: every rank on this machine)")
    q.add_argument("--replicate", default="0,0.001,0.01",
                   help="shares of all rows replicated on every rank to try (ranks > 1)")
    q.add_argument("--hw", help="hardware file from `hotpipe calibrate` (default: calibrate now, quickly)")
    q.add_argument("--top", type=int, default=5, help="how many configurations to print")
    q.add_argument("--steps", type=int, help="plan this many training steps (0: all; default 200, "
                                             "4 with --tables)")
    q.add_argument("--windows", default="8,64,256", help="lookahead windows to try")
    q.add_argument("--depths", default="1,2", help="prefetch depths to try")
    q.add_argument("--policies", default="lookahead,lru,lfu,static",
                   help="planner policies to try (with --ranks: 'none' = only resident rows)")
    q.add_argument("--tiers", default="host,file", help="backing tiers to try")
    q.add_argument("--config", help="YAML run config")
    q.add_argument("--json", help="also write every prediction to this JSON file")
    q.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    q.set_defaults(func=_plan)


def _run_config(args: argparse.Namespace, data: str | None) -> RunConfig:
    from hotpipe.config import load_config

    return load_config(args.config, list(args.overrides),
                       values={"data.path": data} if data is not None else None)


def _calibrate(args: argparse.Namespace) -> int:
    from hotpipe.data.columnar import ColumnarDataset
    from hotpipe.placement.calibrate import CalibrationSpec, calibrate

    cfg = _run_config(args, args.data)
    tables, dense = args.tables, 13
    if args.data:
        ds = ColumnarDataset.open(args.data)
        tables, dense = ds.num_tables, ds.num_dense
    for key in ("tables", "rows_per_table", "steps", "repeats"):
        if getattr(args, key) < 1:
            raise ConfigError(f"--{key.replace('_', '-')}", f"expected >= 1, found {getattr(args, key)}")
    hw = calibrate(CalibrationSpec(run=cfg, tables=tables, num_dense=dense, steps=args.steps,
                                   repeats=args.repeats, rows_per_table=args.rows_per_table), log=_log)
    if args.rank_compute:
        hw = dataclasses.replace(hw, rank_compute=_rank_compute(args, cfg, tables, dense))
    hw.save(args.out)
    print(json.dumps({"out": args.out, **hw.to_dict()}, indent=2))
    return 0


def _rank_compute(args: argparse.Namespace, cfg: Any, tables: int, dense: int) -> Any:
    """One rank of the runtime at the per-rank batches of 2 and 4 ranks, on --data or
    on a Zipf calibration set of the configured shape."""
    import tempfile

    from hotpipe.distributed.calibrate import measure_rank_compute
    from hotpipe.placement.calibrate import make_calibration_data

    big = cfg.data.batch_size
    batches = [max(2, big // 2), max(1, big // 4)]
    _log(f"rank compute: the distributed runtime at W = 1, batches {batches}")
    with tempfile.TemporaryDirectory(prefix="hotpipe-rank-data-") as tmp:
        data = args.data or make_calibration_data(
            Path(tmp) / "data", rows=int((args.steps + 2) * big / 0.99) + 512, tables=tables,
            rows_per_table=args.rows_per_table, num_dense=dense, seed=cfg.train.seed)
        run = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": args.steps})})
        return measure_rank_compute(run, data, batches, log=_log)


def _plan(args: argparse.Namespace) -> int:

    from hotpipe.data.columnar import ColumnarDataset
    from hotpipe.placement.calibrate import CalibrationSpec, calibrate
    from hotpipe.placement.costmodel import run_trace, workload_from_config
    from hotpipe.placement.hardware import Hardware
    from hotpipe.placement.search import SearchSpace, search
    from hotpipe.placement.synthetic_trace import synthetic_steps, table_set

    cfg = _run_config(args, args.data)
    ranks = _ints(args.ranks, "--ranks")
    if min(ranks) < 1 or args.ranks_per_host < 1:
        raise ConfigError("--ranks", f"expected world sizes >= 1 and --ranks-per-host >= 1, found "
                                     f"{args.ranks} and {args.ranks_per_host}")
    trace: Any  # the run's scheduled trace (a ScheduledTrace) or sampled synthetic steps
    if args.data:
        ds = ColumnarDataset.open(args.data)
        cards, num_dense = list(ds.cardinalities), ds.num_dense
        # The order the run trains (schedule.mode), planned per candidate capacity.
        trace = run_trace(cfg, ds, max_steps=200 if args.steps is None else args.steps)
    else:
        cards, num_dense = list(table_set(args.tables)), 13
        _log(f"sampling {args.steps or 4} global batches of {cfg.data.batch_size} over {args.tables} "
             f"tables ({sum(cards):,} rows), Zipf {args.zipf}")
        trace = synthetic_steps(cards, batch_size=cfg.data.batch_size, steps=args.steps or 4,
                                zipf=args.zipf, seed=cfg.train.seed)
    work = workload_from_config(cfg, cards, num_dense)
    if args.hw:
        hw = Hardware.load(args.hw)
    else:
        _log("no --hw given: calibrating quickly (use `hotpipe calibrate` once for better numbers)")
        hw = calibrate(CalibrationSpec(run=cfg, tables=len(cards), num_dense=num_dense,
                                       steps=15, repeats=2), log=_log)
    steps_planned = len(trace)
    out: dict[str, object] = {"steps_planned": steps_planned, "hardware": hw.to_dict()}
    best: list[tuple[int, Prediction]] = []
    for w in ranks:
        space = SearchSpace(
            memory=parse_size(args.memory, "--memory"),
            host_memory=parse_size(args.host_memory, "--host-memory") if args.host_memory else None,
            windows=_ints(args.windows, "--windows"), depths=_ints(args.depths, "--depths"),
            policies=tuple(p for p in args.policies.split(",") if p),
            tiers=tuple(t for t in args.tiers.split(",") if t), ranks=w,
            replicate_shares=_floats(args.replicate, "--replicate"),
            ranks_per_host=min(args.ranks_per_host, w), cardinalities=tuple(cards),
            fetch_ahead=cfg.dist.fetch_ahead, staleness=cfg.dist.staleness)
        preds, skipped = search(trace, space, work, hw, log=_log)
        if len(ranks) == 1:
            print(render_plan(preds[: args.top], steps_planned, skipped))
        best.append((w, preds[0]))
        entry = {"predictions": [p.to_dict() for p in preds], "skipped": skipped}
        if len(ranks) == 1:
            out.update(entry)
        else:
            out.setdefault("world_sizes", {})[str(w)] = entry  # type: ignore[index]
    if len(ranks) > 1:
        print(render_ranks(best, steps_planned, args.ranks_per_host))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


def render_ranks(best: list[tuple[int, Prediction]], steps: int, per_host: int) -> str:
    """One line per world size: its best configuration, samples/s, bytes and what limits it."""
    from hotpipe.placement.ranks import RankPrediction

    lines = [f"best configuration per world size (from {steps} sampled global steps; "
             f"{per_host} rank(s) per machine like the hardware file's):", "",
             f"{'W':>4}  {'configuration':<44} {'samples/s':>10} {'bytes/sample':>12} "
             f"{'step ms':>8} {'link ms':>8} {'rank GiB':>8}  limit"]
    for w, p in best:
        if isinstance(p, RankPrediction):
            r: RankPrediction = p
            c = r.candidate
            # Candidate.label() says "untiered" for resident rows; name the replicas too.
            label = (f"rows resident, {r.replicated_rows:,} replicated" if c.policy == "none"
                     else c.label())
            lines.append(f"{w:>4}  {label:<44} {r.samples_per_s:>10,.0f} "
                         f"{r.bytes_per_sample:>12,.0f} {r.step_s * 1e3:>8.1f} "
                         f"{r.times_ms.get('link', 0.0):>8.1f} {r.memory_per_rank / 2**30:>8.2f}  {r.limit}")
        else:
            lines.append(f"{w:>4}  {p.candidate.label():<44} {p.samples_per_s:>10,.0f} {'-':>12} "
                         f"{p.step_s * 1e3:>8.1f} {'-':>8} {p.memory['fast'] / 2**30:>8.2f}  one process")
    return "\n".join(lines)


def render_plan(preds: list[Prediction], steps: int, skipped: list[str]) -> str:
    """A plain-text table of the best predictions."""
    def gib(n: int) -> str:
        return f"{n / 2**30:.2f}"

    lines = [f"best configurations (predicted from {steps} planned steps):", "",
             f"{'#':>2}  {'configuration':<44} {'samples/s':>10} {'hit rate':>8} "
             f"{'moved GiB':>9} {'fast GiB':>8} {'host GiB':>8} {'file GiB':>8}"]
    for i, p in enumerate(preds, 1):
        m = p.memory
        lines.append(f"{i:>2}  {p.candidate.label():<44} {p.samples_per_s:>10,.0f} {p.hit_rate:>8.1%} "
                     f"{gib(p.bytes_moved):>9} {gib(m['fast']):>8} {gib(m['host']):>8} {gib(m['file']):>8}")
        lines.extend(f"      note: {n}" for n in p.notes)
    if skipped:
        lines += ["", f"{len(skipped)} configuration(s) cannot run (capacity below one step's working set):"]
        lines += [f"  - {s}" for s in skipped[:5]]
    return "\n".join(lines)
