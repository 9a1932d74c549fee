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
