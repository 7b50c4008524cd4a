"""The `hotpipe` command: a thin layer over the library.

Each subcommand group lives in its own module with a ``register(subparsers)``
function; this file only assembles them and maps typed errors to exit codes.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hotpipe.errors import HotpipeError

# Modules providing `register(subparsers)`; missing ones are skipped so the
# CLI works while parts are being built.
_COMMAND_MODULES = ["data_cmds", "train_cmds", "plan_cmds", "report_cmds"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hotpipe", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"hotpipe.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"hotpipe.cli.{name}":
                raise
            continue
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HotpipeError as e:
        print(f"hotpipe {args.command}: error: {e}", file=sys.stderr)
        return 2
    except FileExistsError as e:
        print(f"hotpipe {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `hotpipe ... | head` closed our stdout: not an error worth a traceback.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
