"""``hotpipe prepare``, ``hotpipe synth`` and ``hotpipe verify``: thin wrappers over hotpipe.data.

The library is imported inside the command functions, so ``hotpipe --help``
does not pay for pyarrow, scikit-learn or numpy.
"""

from __future__ import annotations

import argparse
from typing import Any

from hotpipe.data.schema_doc import SCHEMA_REFERENCE
from hotpipe.errors import ConfigError

_DEFAULT_CHUNK_ROWS = 65536  # ~16 MB of Criteo text per chunk: ~0.5 GB peak RSS, as fast as larger
_TEXT_SVM = ("libsvm", "libfm", "ffm")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "prepare", help="convert Criteo TSV, CSV/Parquet or libSVM/libFM/FFM files into a columnar dataset",
        description="Convert Criteo TSV (plain or gzip), CSV/Parquet files (with --schema) or "
                    "libSVM/libFM/FFM text into a memory-mapped columnar dataset directory.",
        epilog=SCHEMA_REFERENCE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="training input files, read in order")
    p.add_argument("--out", required=True, help="dataset directory to create")
    p.add_argument("--format", choices=["criteo", "csv", "parquet", *_TEXT_SVM],
                   help="input format (default: criteo, or by extension when --schema is given)")
    p.add_argument("--val", action="append", metavar="VALFILE",
                   help="validation file (repeatable): encoded with the training vocabulary into OUT/val")
    p.add_argument("--encoding", choices=["vocab", "hash"], default="vocab",
                   help="categorical encoding (default: vocab)")
    p.add_argument("--min-count", type=int, help="vocab: values seen fewer times share the OOV row (default 1)")
    p.add_argument("--buckets", type=int, help="hash: rows per table (required with --encoding hash)")
    p.add_argument("--schema", help="YAML schema: columns of CSV/Parquet input (keys below), or a label "
                                    "rule for libsvm/libfm/ffm")
    p.add_argument("--feature-map", metavar="FILE",
                   help="libsvm/libfm: feature-index file, lines 'INDEX FIELD' (one table per field)")
    p.add_argument("--on-bad-line", choices=["error", "skip"], default="error",
                   help="stop at the first malformed line (default) or skip and count them")
    p.add_argument("--chunk-rows", type=int, default=_DEFAULT_CHUNK_ROWS, help="lines parsed at a time")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing dataset at --out (atomically: the old one stays until the new "
                        "one is complete)")
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
    s.add_argument("--kind", choices=("criteo", "behaviour"), default="criteo",
                   help="criteo: Criteo-shaped one-hot tables (default); behaviour: a multi-hot history "
                        "of item ids (oldest first) + target item, category, user, whose label depends on "
                        "the history (hotpipe/data/synth_behaviour.py; for model.arch=tbsm)")
    s.add_argument("--items", type=int, default=5000, help="behaviour: distinct items (default 5000)")
    s.add_argument("--users", type=int, default=2000, help="behaviour: distinct users (default 2000)")
    s.add_argument("--clusters", type=int, default=20, help="behaviour: item interest groups (default 20)")
    s.add_argument("--max-len", type=int, default=20,
                   help="behaviour: longest history; lengths are uniform in 0..max-len (default 20)")
    s.add_argument("--chunk-rows", type=int, default=_DEFAULT_CHUNK_ROWS, help="rows generated at a time")
    s.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out (atomically)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=_synth)

    v = subparsers.add_parser("verify", help="check a dataset's checksums and every id against its table",
                              description="Full integrity check of a dataset (and its val split): the sha256 "
                                          "of every file and every id against its table's cardinality. Opening "
                                          "a dataset only checks sizes, head/tail digests and recorded id bounds.")
    v.add_argument("data", help="dataset directory")
    v.set_defaults(func=_verify)


def _prepare(args: argparse.Namespace) -> int:
    from hotpipe.data.prepare import prepare_criteo, prepare_libsvm, prepare_tabular

    if args.encoding == "vocab" and args.buckets is not None:
        raise ConfigError("--buckets", "only applies to --encoding hash")
    if args.encoding == "hash" and args.min_count is not None:
        raise ConfigError("--min-count", "only applies to --encoding vocab")
    if args.min_count is not None and args.min_count < 1:
        raise ConfigError("--min-count", f"expected an integer >= 1 (1 keeps every value), found {args.min_count}")
    if args.feature_map is not None and args.format not in ("libsvm", "libfm"):
        raise ConfigError("--feature-map", "only applies to --format libsvm or libfm")
    common = dict(encoding=args.encoding, min_count=1 if args.min_count is None else args.min_count,
                  buckets=args.buckets, on_bad_line=args.on_bad_line, chunk_rows=args.chunk_rows,
                  progress=not args.no_progress, overwrite=args.overwrite, val=args.val)
    if args.format in _TEXT_SVM:
        summary = prepare_libsvm(args.inputs, args.out, format=args.format, feature_map=args.feature_map,
                                 label=_label_rule(args.schema) if args.schema else None, **common)
    elif args.format == "criteo" or (args.format is None and args.schema is None):
        if args.schema is not None:
            raise ConfigError("--schema", "does not apply to --format criteo")
        summary = prepare_criteo(args.inputs, args.out, **common)
    else:
        if args.schema is None:
            raise ConfigError("--schema", f"required for --format {args.format} (names label/categorical/dense)")
        summary = prepare_tabular(args.inputs, args.out, schema=args.schema, format=args.format, **common)
    print(summary.format())
    return 0


def _label_rule(path: str) -> Any:
    """A libsvm --schema: only a ``label`` rule (its column is not needed)."""
    import yaml

    from hotpipe.data.schema import LabelRule

    try:
        d = yaml.safe_load(open(path).read())  # noqa: SIM115
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError("--schema", f"cannot read {path}: {e}") from e
    if not isinstance(d, dict) or set(d) != {"label"}:
        raise ConfigError("--schema", "for libsvm/libfm/ffm input the schema holds only a label rule, e.g. "
                                      f"'label: {{threshold: 4}}'; found keys {sorted(d) if isinstance(d, dict) else d!r}")
    return LabelRule.parse(d["label"], column_required=False)


def _synth(args: argparse.Namespace) -> int:
    if args.kind == "behaviour":
        from hotpipe.data.synth_behaviour import synthesize_behaviour

        num_dense = args.num_dense if args.num_dense != 13 else 2  # 13 is the Criteo default
        print(synthesize_behaviour(args.out, rows=args.rows, items=args.items, users=args.users,
                                   clusters=args.clusters, max_len=args.max_len, zipf=args.zipf,
                                   num_dense=num_dense, seed=args.seed, overwrite=args.overwrite).format())
        return 0
    from hotpipe.data.synth import synthesize

    summary = synthesize(args.out, rows=args.rows, scale=args.scale, zipf=args.zipf, drift=args.drift,
                         num_dense=args.num_dense, seed=args.seed, chunk_rows=args.chunk_rows,
                         overwrite=args.overwrite, progress=not args.no_progress)
    print(summary.format())
    return 0


def _verify(args: argparse.Namespace) -> int:
    import time
    import warnings

    from hotpipe.data.columnar import ColumnarDataset, UnverifiedDatasetWarning

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnverifiedDatasetWarning)
        ds = ColumnarDataset.open(args.data)
        parts = [ds] + ([v] if (v := ds.open_val()) is not None else [])
    for d in parts:
        d.verify()
        what = ("sha256 of every file and every id" if d.verified == "full"
                else "every id (no checksums recorded: written before integrity checks)")
        print(f"ok {d.path}: {d.rows:,} rows, {d.num_tables} tables; checked {what}")
    print(f"fingerprint {ds.fingerprint} ({time.perf_counter() - t0:.2f} s)")
    return 0
