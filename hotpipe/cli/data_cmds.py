"""``hotpipe prepare`` and ``hotpipe synth``: thin wrappers over hotpipe.data."""

from __future__ import annotations

import argparse
from typing import Any

from hotpipe.data.prepare import prepare_criteo, prepare_tabular
from hotpipe.data.synth import synthesize
from hotpipe.errors import ConfigError

_DEFAULT_CHUNK_ROWS = 65536  # ~16 MB of Criteo text per chunk: ~0.5 GB peak RSS, as fast as larger


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "prepare", help="convert Criteo TSV or CSV/Parquet files into a columnar dataset",
        description="Convert Criteo TSV (plain or gzip) or CSV/Parquet files (with --schema) into a "
                    "memory-mapped columnar dataset directory.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="input files, read in order")
    p.add_argument("--out", required=True, help="dataset directory to create")
    p.add_argument("--format", choices=["criteo", "csv", "parquet"],
                   help="input format (default: criteo, or by extension when --schema is given)")
    p.add_argument("--encoding", choices=["vocab", "hash"], default="vocab",
                   help="categorical encoding (default: vocab)")
    p.add_argument("--min-count", type=int, help="vocab: values seen fewer times share the OOV row (default 1)")
    p.add_argument("--buckets", type=int, help="hash: rows per table (required with --encoding hash)")
    p.add_argument("--schema", help="YAML schema for CSV/Parquet input (label, categorical, dense)")
    p.add_argument("--on-bad-line", choices=["error", "skip"], default="error",
                   help="stop at the first malformed line (default) or skip and count them")
    p.add_argument("--chunk-rows", type=int, default=_DEFAULT_CHUNK_ROWS, help="lines parsed at a time")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_prepare)

    s = subparsers.add_parser("synth", help="generate a seeded synthetic Criteo-shaped dataset",
                              description="Generate a synthetic dataset with Criteo Kaggle's table sizes x "
                                          "--scale, Zipf skew, optional drift and a planted teacher model.")
    s.add_argument("--out", required=True, help="dataset directory to create")
    s.add_argument("--rows", type=int, required=True, help="samples to generate")
    s.add_argument("--scale", type=float, default=1.0, help="table sizes = Criteo Kaggle's x scale (default 1)")
    s.add_argument("--zipf", type=float, default=1.05, help="popularity skew exponent (default 1.05)")
    s.add_argument("--drift", type=float, default=0.0,
                   help="how far the hot set moves over the data, in tables (default 0)")
    s.add_argument("--num-dense", type=int, default=13, help="dense features (default 13)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--chunk-rows", type=int, default=_DEFAULT_CHUNK_ROWS, help="rows generated at a time")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=_synth)


def _prepare(args: argparse.Namespace) -> int:
    if args.encoding == "vocab" and args.buckets is not None:
        raise ConfigError("--buckets", "only applies to --encoding hash")
    if args.encoding == "hash" and args.min_count is not None:
        raise ConfigError("--min-count", "only applies to --encoding vocab")
    common = dict(encoding=args.encoding, min_count=args.min_count or 1, buckets=args.buckets,
                  on_bad_line=args.on_bad_line, chunk_rows=args.chunk_rows,
                  progress=not args.no_progress, overwrite=args.overwrite)
    if args.format == "criteo" or (args.format is None and args.schema is None):
        if args.schema is not None:
            raise ConfigError("--schema", "does not apply to --format criteo")
        summary = prepare_criteo(args.inputs, args.out, **common)
    else:
        if args.schema is None:
            raise ConfigError("--schema", f"required for --format {args.format} (names label/categorical/dense)")
        summary = prepare_tabular(args.inputs, args.out, schema=args.schema, format=args.format, **common)
    print(summary.format())
    return 0


def _synth(args: argparse.Namespace) -> int:
    summary = synthesize(args.out, rows=args.rows, scale=args.scale, zipf=args.zipf, drift=args.drift,
                         num_dense=args.num_dense, seed=args.seed, chunk_rows=args.chunk_rows,
                         overwrite=args.overwrite, progress=not args.no_progress)
    print(summary.format())
    return 0
