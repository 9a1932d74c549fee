"""Config checking with short messages: one line per problem, naming the key, before anything runs."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml


def problems(config: dict, schema_path: str | Path) -> list[str]:
    """Every schema violation as ``dotted.key: message``; empty when the config is valid."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    found = []
    for error in sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]):
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        found.append(f"{where}: {error.message}")
    return found
