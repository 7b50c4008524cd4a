"""`hotpipe profile`: skew, hot set per budget, hot samples, reuse and drift of a dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hotpipe.capacity import parse_size


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("profile", help="profile a dataset's embedding accesses (skew, hot set, reuse, drift)",
                       description="Profile the embedding accesses of a dataset before training on it. "
                                   "Rows are sized as training sizes them: the embedding dim and "
                                   "optimizer come from --config / key=value overrides (run config "
                                   "defaults otherwise) unless --dim/--optimizer say otherwise.")
    p.add_argument("--data", required=True, help="dataset directory")
    p.add_argument("--out", required=True, help="report directory (profile.json, profile.md, plots)")
    p.add_argument("--exact", action="store_true", help="count every row exactly (small data)")
    p.add_argument("--sample", type=float, default=0.05, help="fraction of rows counted (default 0.05)")
    p.add_argument("--budget", default="64MiB,1GiB", help="fast-tier budgets, comma-separated")
    p.add_argument("--dim", type=int, help="embedding dim (default: the run config's model.embedding_dim)")
    p.add_argument("--optimizer", help="row optimizer (default: the run config's optim.embedding)")
    p.add_argument("--batch-size", type=int,
                   help="samples per step, for reuse distances (default: data.batch_size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", help="YAML run config (model, optimizers, batch size)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="run config overrides")
    p.set_defaults(func=_profile)


def _profile(args: argparse.Namespace) -> int:
    from hotpipe.config import load_config
    from hotpipe.profile.profiler import ProfileSettings, profile_dataset
    from hotpipe.profile.report import write_profile_report

    cfg = load_config(args.config, args.overrides)
    budgets = tuple(parse_size(b, "--budget") for b in args.budget.split(",") if b.strip())
    settings = ProfileSettings(exact=args.exact, sample=args.sample,
                               batch_size=args.batch_size or cfg.data.batch_size,
                               dim=args.dim or cfg.model.embedding_dim,
                               optimizer=args.optimizer or cfg.optim.embedding,
                               budgets=budgets, seed=args.seed)
    prof = profile_dataset(args.data, settings)
    paths = write_profile_report(prof, args.out)
    o = prof["overall"]
    print(json.dumps({"report": str(Path(args.out) / "profile.md"),
                      "top_share_pooled": o["top_share_pooled"],
                      "budgets": [{k: b[k] for k in ("budget_bytes", "rows", "lookup_share", "hot_samples")}
                                  for b in o["budgets"]],
                      "files": [str(p) for p in paths]}, indent=2))
    return 0
