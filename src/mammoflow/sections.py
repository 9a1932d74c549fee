"""One home for every default: the settings types are built from config.yaml's sections, never from values
written in the code.

The workflow's ``config.yaml`` holds each setting's value; its schema
(``workflow/schemas/config.schema.yaml``) says what each may be. A settings type (``TrainSettings``,
``CamSettings``, ``ProcessOptions``, ``PhantomSpec``) declares its fields with types and no defaults,
names its section, and is built by ``from_config(section)``: every field must be there, no key may be
unknown, and the section is checked once, against the schema and the semantic checks the workflow runs at
start (``mammoflow.config``), so a job given a section by hand gets the same one-line problems as
``snakemake -n``.

Library callers (tests, notebooks, benchmarks) start from the shipped values and change what they need::

    from mammoflow.classify.train import TrainSettings
    settings = TrainSettings.configured(lr=1e-3, pretrained=False)   # config.yaml's train: + the two
    defaults("decode")["working_size"]                                # one value, from config.yaml

Standard library, PyYAML and jsonschema only (like mammoflow.config).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from mammoflow.config import coerce, load_yaml, merge, non_finite_problems, schema_problems, semantic_problems

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "config.yaml"
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


@cache
def _read(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: not found. mammoflow reads its defaults from the workflow's config.yaml; install it "
            "from a checkout (pip install -e .), as the Makefile does"
        )
    return load_yaml(path)


def defaults(section: str | None = None) -> Any:
    """config.yaml's values (a copy the caller may change): the whole configuration, or one section."""
    shipped = _read(SHIPPED)
    if section is None:
        return copy.deepcopy(shipped)
    if section not in shipped:
        raise KeyError(f"config.yaml has no section {section!r} (it has {', '.join(shipped)})")
    return copy.deepcopy(shipped[section])


def section_problems(name: str, section: dict) -> list[str]:
    """Every problem of one section, as the workflow reports it at start (``name.key: message``)."""
    schema = _read(SCHEMA)
    one = {**schema, "properties": {name: schema["properties"][name]}, "required": []}
    config = {name: json.loads(json.dumps(section))}  # as a config file gives it: tuples as lists
    coerce(config, one)
    found = non_finite_problems(config) or schema_problems(config, one)
    return found or semantic_problems(config)


class FromSection:
    """For a frozen dataclass of one config section: ``from_config`` and ``configured``."""

    SECTION: ClassVar[str]  # its config.yaml section

    @classmethod
    def _converted(cls, values: dict) -> dict:
        """The field values as the type holds them (YAML lists as tuples, say); the identity by default."""
        return values

    @classmethod
    def from_config(cls, section: dict):
        fields = {f.name for f in dataclasses.fields(cls)}
        allowed = fields | set(defaults(cls.SECTION))  # config-only keys (threads, cam.models) pass by
        unknown = sorted(set(section) - allowed)
        if unknown:
            raise ValueError(f"{cls.SECTION}: unknown setting(s) {', '.join(unknown)}")
        missing = sorted(fields - set(section))
        if missing:
            raise ValueError(
                f"{cls.SECTION}: missing setting(s) {', '.join(missing)} (config.yaml gives each a value; "
                f"build from it with {cls.__name__}.configured(...))"
            )
        problems = section_problems(cls.SECTION, section)
        if problems:
            raise ValueError("; ".join(problems))
        return cls(**cls._converted({k: section[k] for k in fields}))

    @classmethod
    def configured(cls, **changes):
        """config.yaml's section with ``changes`` laid over it (mappings merge), checked."""
        return cls.from_config(merge(defaults(cls.SECTION), changes))
