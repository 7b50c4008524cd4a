"""`hotpipe train`: the CLI face of ``hotpipe.train.run.train``."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hotpipe.config import RunConfig


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "train", help="train a model (DLRM, DCN-v2, Ad-Rec) on a prepared/synthetic dataset",
        description="Train a recommendation model (model.arch=dlrm|dcn|adrec). Settings come from --config (YAML) and key=value overrides, "
                    "e.g. cache.policy=lookahead cache.capacity=0.1 cache.window=64 cache.backing=file.")
    p.add_argument("--data", required=True, help="dataset directory (from `hotpipe prepare` or `hotpipe synth`)")
    p.add_argument("--out", required=True, help="run directory (metrics, history, checkpoints)")
    p.add_argument("--config", help="YAML config file")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's latest checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a run already in --out (without it, an existing run is refused)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true", help="skip report.md and plots")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log to RUN/tensorboard (needs the tensorboard package)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from hotpipe.config import load_config
    from hotpipe.train.run import train  # keep `hotpipe --help` fast

    values: dict[str, object] = {"data.path": args.data}  # a path, never parsed as YAML
    if args.no_progress:
        values["train.progress"] = False
    cfg = load_config(args.config, args.overrides, values=values)
    from hotpipe.distributed.launch import world_size_from_env

    if world_size_from_env() > 1:  # started by torchrun: every rank runs this command
        return _train_ranks(cfg, args)
    m = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite,
              report=not args.no_report, tensorboard=args.tensorboard)
    summary = {k: m.get(k) for k in ("steps", "final_loss", "val_auc", "val_logloss", "samples_per_s")}
    if "teacher_auc" in m:
        summary["teacher_auc"] = m["teacher_auc"]
    c = m["cache"]
    if c["policy"] != "none":
        summary["cache_hit_rate"] = c["hit_rate"]
        summary["rows_fetched"] = c["rows_fetched"]
        summary["stall_seconds"] = c["stall_seconds"]
    print(json.dumps(summary, indent=2))
    return 0


def _train_ranks(cfg: RunConfig, args: argparse.Namespace) -> int:
    """One rank of a torchrun job: rows partitioned over ranks, hot rows replicated."""
    import os

    from hotpipe.distributed.launch import train_from_env

    d = cfg.dist
    # The runtime resolves dist.replicate itself (one reading, its errors name the key).
    m = train_from_env(cfg, args.out, timeout=d.timeout, resume=args.resume, overwrite=args.overwrite,
                       profile_steps=d.profile_steps or None)
    if os.environ.get("RANK", "0") == "0":
        summary = {k: m.get(k) for k in ("steps", "final_loss", "val_auc", "val_logloss",
                                          "samples_per_s")}
        summary["world_size"] = int(os.environ["WORLD_SIZE"])
        summary["bytes_per_sample"] = m.get("dist", {}).get("bytes_per_sample")
        print(json.dumps(summary, indent=2))
    return 0
