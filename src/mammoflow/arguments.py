"""Argument types shared by the stages' command lines (each stage package owns its subcommands)."""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Callable

WHOLE = re.compile(r"-?[0-9]+")


def json_object(text: str) -> dict:
    """argparse type: a JSON object (the rules pass config sections this way)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


# Every numeric option of every subcommand takes one of these types, so that `--batch-size 0`,
# `--threads -5` or `--max-failed-fraction nan` stop at parsing with argparse's one-line error (usage, then
# "error: argument --batch-size: ...", exit 2) instead of a traceback deep in a stage.
# tests/test_arguments.py checks that no option is left with a bare int or float.


def whole_number(minimum: int) -> Callable[[str], int]:
    """argparse type: a whole number (ASCII digits, an optional minus sign) of at least ``minimum``."""

    def parse(text: str) -> int:
        if not WHOLE.fullmatch(text.strip()):
            raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}")
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    parse.minimum = minimum  # read by the test that tries every option's bad values
    parse.__name__ = f"whole number >= {minimum}"
    return parse


def finite_number(low: float | None = None, high: float | None = None, low_open: bool = False):
    """argparse type: a finite number in [low, high] (``low_open``: above ``low``, not equal to it)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
        if low is not None and (value <= low if low_open else value < low):
            bound = "above" if low_open else "at least"
            raise argparse.ArgumentTypeError(f"must be {bound} {low}, not {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, not {text}")
        return value

    parse.bounds = (low, high, low_open)
    parse.__name__ = "finite number"
    return parse


COUNT = whole_number(1)  # workers, shards, sizes, batch sizes, resolutions
NON_NEGATIVE = whole_number(0)  # fold indices, seeds, thread counts where 0 means "torch's default"
FRACTION = finite_number(0.0, 1.0)


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """The bounds on decoding one file (mammoflow.limits), for every command that decodes DICOMs."""
    from mammoflow import limits

    parser.add_argument(
        "--max-megapixels",
        type=finite_number(0.0, low_open=True),
        default=limits.DEFAULT_MAX_MEGAPIXELS,
        help="refuse, before decoding, a file whose header or codestream declares more pixels than this",
    )
    parser.add_argument(
        "--max-memory-mb",
        type=NON_NEGATIVE,
        default=limits.DEFAULT_MAX_MEMORY_MB,
        help="memory a decoder process may use above its size at start (0: no limit)",
    )
    parser.add_argument(
        "--timeout-s",
        type=finite_number(0.0),
        default=limits.DEFAULT_TIMEOUT_S,
        help="seconds a decoder process may spend on one file (0: no limit)",
    )
