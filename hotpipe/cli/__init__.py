"""The `hotpipe` command: a thin layer over the library.

Each module registers the subcommands its name says (``register(subparsers)``);
this file assembles them and maps typed errors to exit codes. Command modules
import nothing heavy at the top (torch, pyarrow, sklearn, matplotlib load
inside the command that needs them), so ``hotpipe --help`` and argument
errors answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hotpipe.errors import HotpipeError

# module -> the subcommands it registers. A module that fails to import is a
# bug to report, not a command to hide.
COMMAND_MODULES = {
    "data_cmds": ("prepare", "synth"),
    "profile_cmds": ("profile",),
    "simulate_cmds": ("simulate",),
    "placement_cmds": ("calibrate", "plan"),
    "train_cmds": ("train",),
    "kv_cmds": ("kv",),
    "fl_cmds": ("fl",),
    "torchrec_cmds": ("torchrec",),
}
# Optional parts that are built separately: absent in a checkout that lacks them.
_OPTIONAL = {"kv_cmds", "fl_cmds"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hotpipe", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"hotpipe.cli.{name}")
        except ModuleNotFoundError as e:
            if name in _OPTIONAL and e.name == f"hotpipe.cli.{name}":
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # argparse matches a `key=value ...` positional only once: overrides that come
        # after a flag (`train ... --resume train.max_steps=10`) arrive here.
        stray = [x for x in extra if x.startswith("-") or "=" not in x]
        if stray or not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        return int(args.func(args) or 0)
    except HotpipeError as e:
        print(f"hotpipe {args.command}: error: {e}", file=sys.stderr)
        return 2
    except FileExistsError as e:
        print(f"hotpipe {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hotpipe {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `hotpipe ... | head` closed our stdout: not an error worth a traceback.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
