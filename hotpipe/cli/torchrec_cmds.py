"""`hotpipe torchrec export|import`: a run's tables as a TorchRec EmbeddingBagCollection state dict.

Neither direction needs TorchRec installed: the file is ``torch.save`` of::

    {"state_dict": {"embedding_bags.<table>.weight": (rows, dim), ...},
     "optimizer_state": {"embedding_bags.<table>.weight": {"<table>.momentum1": ...}}}

``import`` also takes a bare state dict (``torch.save(ebc.state_dict(), F)``,
or a whole model's: only the ``embedding_bags.<table>.weight`` keys are read).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "torchrec", help="export/import a run's tables as a TorchRec EmbeddingBagCollection state dict",
        description="Move a run's embedding tables to TorchRec and back. The file holds "
                    "embedding_bags.<table>.weight (rows, dim) per table and, apart, the row-wise "
                    "optimizer state in TorchRec's fused-optimizer shape (<table>.momentum1).")
    cmds = p.add_subparsers(dest="torchrec_command", required=True)
    ex = cmds.add_parser("export", help="write a run's latest checkpoint's tables to a file")
    ex.add_argument("run", help="run directory (its latest checkpoint is read and verified)")
    ex.add_argument("--out", required=True, help="output file (torch.save)")
    ex.add_argument("--data", help="the run's dataset, if not at its data.path (names the tables)")
    ex.add_argument("--no-optimizer-state", action="store_true",
                    help="leave out the rows' optimizer state")
    ex.set_defaults(func=_export)
    im = cmds.add_parser("import", help="replace a run's tables by a file's: a new checkpoint "
                                        "at the same step (--resume then continues from it)")
    im.add_argument("file", help="state dict file (from `export`, or torch.save of an EBC's state dict)")
    im.add_argument("run", help="run directory with a checkpoint to take the dense part from")
    im.add_argument("--data", help="the run's dataset, if not at its data.path")
    im.add_argument("--no-optimizer-state", action="store_true",
                    help="start the rows' optimizer state afresh even if the file has it")
    im.add_argument("--ignore-extra", action="store_true",
                    help="ignore tables the run does not have (default: an error)")
    im.set_defaults(func=_import)


def _export(args: argparse.Namespace) -> int:
    import torch

    from hotpipe.interop.runs import export_run

    state, optim = export_run(args.run, data=args.data)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "optimizer_state": {} if args.no_optimizer_state else optim}, out)
    rows = sum(int(v.shape[0]) for v in state.values())
    print(f"wrote {out}: {len(state)} tables, {rows} rows"
          f"{'' if args.no_optimizer_state or not optim else ', with optimizer state'}")
    return 0


def _import(args: argparse.Namespace) -> int:
    import torch

    from hotpipe.errors import DataFormatError
    from hotpipe.interop.runs import import_run

    try:
        obj = torch.load(args.file, map_location="cpu", weights_only=False)
    except Exception as e:  # torch.load raises many types for a missing or garbled file
        raise DataFormatError(f"cannot read the state dict file: {type(e).__name__}: {e}",
                              path=args.file) from e
    if not isinstance(obj, dict):
        raise DataFormatError("expected a state dict", path=args.file, field="file",
                              expected="dict", found=type(obj).__name__)
    state = obj.get("state_dict", obj)
    optim = None if args.no_optimizer_state else (obj.get("optimizer_state") or None)
    ck = import_run(args.run, state, data=args.data, optimizer_state=optim,
                    strict=not args.ignore_extra)
    print(f"wrote checkpoint {ck} ({'with' if optim else 'fresh'} optimizer state)")
    return 0
