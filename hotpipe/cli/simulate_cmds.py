"""`hotpipe simulate`: replay a run's training steps through the planner alone."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hotpipe.plan.simulate import SimResult


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "simulate", help="compare cache policies on a dataset's access trace (no training)",
        description="Plan the training steps of a run (the steps `hotpipe train` runs: validation "
                    "rows left out, a short last batch dropped) with each policy at each capacity "
                    "and report rows fetched, hit rate and planning speed. Writes OUT/simulate.json and "
                    "OUT/miss_ratio_curve.png.")
    p.add_argument("--data", required=True,
                   help="dataset directory (from `hotpipe prepare` or `hotpipe synth`)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--policy", default="lookahead,lru,lfu,static",
                   help="comma-separated policies: lookahead, lru, lfu, static (default: all)")
    p.add_argument("--capacity", default="0.01,0.05,0.1,0.25",
                   help="comma-separated capacities, spelled as cache.capacity is: fractions of "
                        "all rows (0.05, 1.0, 10%%), row counts (4096; 1 is one row) or sizes (64MiB)")
    p.add_argument("--window", type=int, default=64,
                   help="steps read ahead, current included (default 64)")
    p.add_argument("--depth", type=int, default=1,
                   help="prefetch depth: steps in flight besides the current one (default 1)")
    p.add_argument("--batch-size", type=int,
                   help="samples per step (default: the run config's data.batch_size)")
    p.add_argument("--max-steps", type=int, help="plan at most this many steps")
    p.add_argument("--config", help="YAML run config: batch size, validation split, epochs, "
                                    "row size (model.embedding_dim, optim.embedding) and sample order "
                                    "(schedule.*: each capacity plans the order a run at that capacity "
                                    "trains) as training uses them")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="run config overrides")
    p.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    from hotpipe.config import load_config
    from hotpipe.model.sparse_optim import make_row_optimizer
    from hotpipe.plan.simulate import format_table, plot_miss_ratio_curve, simulate
    from hotpipe.storage.slots import record_bytes

    cfg = load_config(args.config, args.overrides)
    dim = cfg.model.embedding_dim
    opt = make_row_optimizer(cfg.optim.embedding, lr=cfg.optim.embedding_lr, dim=dim)

    def progress(r: SimResult) -> None:
        status = f"error: {r.error}" if r.error else f"{r.steps} steps in {r.seconds:.2f}s"
        print(f"  {r.policy} at capacity {r.capacity_rows} rows: {status}", file=sys.stderr)

    results = simulate(args.data, policies=_split(args.policy), capacities=_split(args.capacity),
                       window=args.window, depth=args.depth,
                       batch_size=args.batch_size or cfg.data.batch_size,
                       val_fraction=cfg.data.val_fraction, epochs=cfg.train.epochs,
                       max_steps=args.max_steps or cfg.train.max_steps or None,
                       bytes_per_row=record_bytes(dim, opt), schedule=cfg.schedule,
                       seed=cfg.train.seed, on_result=progress)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "simulate.json").write_text(json.dumps([r.to_dict() for r in results], indent=2))
    plot_miss_ratio_curve(results, out / "miss_ratio_curve.png")
    print(format_table(results))
    print("fetched/1k: rows read from backing per 1000 samples (static's hot-set load included); "
          "hit rate: 1 - misses / distinct ids per step, summed over steps")
    if cfg.skip.mode != "none":
        # Which samples a skipping run drops depends on weights only training produces.
        print(f"note: skip.mode={cfg.skip.mode} is not replayed: every sample's rows are planned "
              "(an upper bound when the skipper leaves skipped samples out of the plans)",
              file=sys.stderr)
    print(f"wrote {out / 'simulate.json'} and {out / 'miss_ratio_curve.png'}")
    return 0


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]
