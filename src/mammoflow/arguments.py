"""Argument types shared by the stages' command lines (each stage package owns its subcommands)."""

from __future__ import annotations

import argparse
import json


def json_object(text: str) -> dict:
    """argparse type: a JSON object (the rules pass config sections this way)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """The bounds on decoding one file (mammoflow.limits), for every command that decodes DICOMs."""
    from mammoflow import limits

    parser.add_argument(
        "--max-megapixels",
        type=float,
        default=limits.DEFAULT_MAX_MEGAPIXELS,
        help="refuse, before decoding, a file whose header or codestream declares more pixels than this",
    )
    parser.add_argument(
        "--max-memory-mb",
        type=int,
        default=limits.DEFAULT_MAX_MEMORY_MB,
        help="memory a decoder process may use above its size at start (0: no limit)",
    )
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=limits.DEFAULT_TIMEOUT_S,
        help="seconds a decoder process may spend on one file (0: no limit)",
    )
