"""The command line the Snakemake rules call: `mammoflow <command> ...`; each stage runs alone too.

Each subcommand's parser and code live in its stage's module (mammoflow.commands.COMMANDS). Only the module
of the command asked for is imported, so a job loads its own stage and no other (the workflow's code
triggers hash exactly that, mammoflow.plan.code); `mammoflow --help` imports them all to list them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mammoflow import __version__
from mammoflow.commands import COMMANDS, GPU_COMMANDS, LEASE_MODULE
from mammoflow.errors import DataError, DiskFullError


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``command`` alone, or (None or unknown) of every subcommand."""
    parser = argparse.ArgumentParser(prog="mammoflow", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"mammoflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    wanted = [COMMANDS[command]] if command in COMMANDS else COMMANDS.values()
    for module in dict.fromkeys(c.module for c in wanted):  # a module registers all its commands at once
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    asked = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(asked).parse_args(argv)
    try:
        if args.command in GPU_COMMANDS:
            # Several GPU jobs on one machine: each takes a free device before torch touches CUDA.
            devices = importlib.import_module(LEASE_MODULE)
            devices.lease_for_command(args.command, getattr(args, "device", None))
        args.func(args)
    except (
        DataError,
        DiskFullError,
        ValueError,
        FileNotFoundError,
    ) as exc:  # SheetError and FoldError are ValueErrors
        print(f"mammoflow {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
