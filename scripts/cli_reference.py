"""A `mammoflow` subcommand's reference, written from its own argparse parser into a docs page.

A page carries a block per command between ``<!-- cli:COMMAND:begin -->`` and ``<!-- cli:COMMAND:end -->``;
``--write PAGE`` fills every block of the page from the parsers, ``--check PAGE`` fails when a block differs
from what the parsers give now (tests/test_docs_reference.py runs the check), so an option added, renamed
or given another default changes the page or fails the test. An option without a help text is an error:
the reference would have nothing to say about it.

    python scripts/cli_reference.py predict            # print the block
    python scripts/cli_reference.py --check docs/predict.md
    python scripts/cli_reference.py --write docs/predict.md
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- cli:([\w-]+):begin -->\n.*?<!-- cli:\1:end -->", re.S)


def subparser(command: str) -> argparse.ArgumentParser:
    sys.path.insert(0, str(REPO / "src"))
    from mammoflow.cli import build_parser

    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if command not in sub.choices:
        raise SystemExit(f"mammoflow has no command {command!r}")
    return sub.choices[command]


def _summary(command: str) -> str:
    """The one line `mammoflow --help` lists for the command (its add_parser help)."""
    from mammoflow.cli import build_parser

    sub = next(a for a in build_parser(command)._actions if isinstance(a, argparse._SubParsersAction))
    return next((a.help for a in sub._choices_actions if a.dest == command), "") or ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("%%", "%").replace("\n", " ")


def _value(action: argparse.Action) -> str:
    """What the option takes: its choices, its type's name, or a word for its metavar."""
    if action.nargs == 0:
        return "flag"
    if action.choices:
        kind = " \\| ".join(f"`{c}`" for c in action.choices)
    elif hasattr(action.type, "bounds"):  # mammoflow.arguments.finite_number
        low, high, low_open = action.type.bounds
        kind = "number" + (f" {'>' if low_open else '≥'} {low:g}" if low is not None else "")
        kind += f", ≤ {high:g}" if high is not None else ""
    elif action.type is not None and hasattr(action.type, "__name__"):
        kind = action.type.__name__.replace(">=", "≥")
    else:
        kind = "text"
    if action.nargs in ("+", "*"):
        kind += ", one or more" if action.nargs == "+" else ", any number"
    return kind


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if action.default is None or action.default == [] or (action.nargs == 0 and action.default is False):
        return "—"
    if isinstance(action.default, list):
        return " ".join(f"`{v}`" for v in action.default)
    return f"`{action.default}`"


def block(command: str) -> str:
    parser = subparser(command)
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    missing = [a.option_strings[0] for a in options if not a.help]
    if missing:
        raise SystemExit(f"mammoflow {command}: options without a help text: {', '.join(missing)}")
    required = " ".join(f"{a.option_strings[-1]} {a.dest.upper()}" for a in options if a.required)
    rows = ["| option | takes | default | what it does |", "|---|---|---|---|"]
    for action in options:
        names = ", ".join(f"`{n}`" for n in action.option_strings)
        rows.append(f"| {names} | {_value(action)} | {_default(action)} | {_cell(action.help)} |")
    about = _cell(parser.description or _summary(command))
    return "\n".join(
        [
            f"<!-- cli:{command}:begin -->",
            f"`mammoflow {command} {required} [options]`: {about}",
            f"(`python scripts/cli_reference.py --write PAGE` writes this table from `mammoflow {command}`'s "
            "own parser.)",
            "",
            *rows,
            f"<!-- cli:{command}:end -->",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("command", nargs="?", help="print this command's block")
    parser.add_argument("--check", type=Path, help="fail when a block of this page differs from the parser")
    parser.add_argument("--write", type=Path, help="rewrite every block of this page")
    args = parser.parse_args(argv)
    page = args.check or args.write
    if page is None:
        if not args.command:
            parser.error("give a command, --check PAGE or --write PAGE")
        print(block(args.command))
        return 0
    text = page.read_text()
    found = [(m.group(0), m.group(1)) for m in BLOCK.finditer(text)]
    if not found:
        raise SystemExit(f"{page}: no <!-- cli:COMMAND:begin --> ... <!-- cli:COMMAND:end --> block")
    stale = [command for old, command in found if old != block(command)]
    if args.write:
        page.write_text(BLOCK.sub(lambda m: block(m.group(1)), text))
        return 0
    for command in stale:
        print(
            f"{page}: the reference of `mammoflow {command}` differs from its parser; now:\n{block(command)}"
        )
    if stale:
        print(f"rewrite with: python scripts/cli_reference.py --write {page}")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
