"""One home per default: the settings types carry types and no values; config.yaml holds the values."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from conftest import REPO

from mammoflow.classify.train import TrainSettings
from mammoflow.explain.stage import CamSettings
from mammoflow.phantom import PhantomSpec
from mammoflow.preprocess import ProcessOptions
from mammoflow.sections import FromSection, defaults

SHIPPED = yaml.safe_load((REPO / "config.yaml").read_text())


def _settings_types() -> list[type]:
    """Every FromSection type of the package (each imported above registers itself as a subclass)."""
    found, todo = [], list(FromSection.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return found


def test_the_settings_types_are_all_found():
    assert {TrainSettings, CamSettings, ProcessOptions, PhantomSpec} <= set(_settings_types())


@pytest.mark.parametrize("cls", _settings_types(), ids=lambda c: c.__name__)
def test_a_settings_type_holds_no_default_and_every_field_is_a_config_key(cls):
    fields = dataclasses.fields(cls)
    with_values = [f.name for f in fields if f.default is not dataclasses.MISSING]
    with_values += [f.name for f in fields if f.default_factory is not dataclasses.MISSING]
    assert not with_values, f"{cls.__name__} repeats config.yaml's values: {with_values}"
    assert {f.name for f in fields} <= set(SHIPPED[cls.SECTION]), "a field config.yaml does not set"
    built = cls.configured()
    for f in fields:  # the shipped values, as the type holds them (YAML lists as tuples)
        value = SHIPPED[cls.SECTION][f.name]
        assert getattr(built, f.name) == (tuple(value) if isinstance(value, list) else value), f.name


@pytest.mark.parametrize("cls", _settings_types(), ids=lambda c: c.__name__)
def test_a_section_without_a_key_names_it(cls):
    section = defaults(cls.SECTION)
    name = dataclasses.fields(cls)[0].name
    section.pop(name)
    with pytest.raises(ValueError, match=rf"{cls.SECTION}: missing setting\(s\) {name} "):
        cls.from_config(section)


def test_defaults_are_a_copy_of_config_yaml():
    assert defaults() == SHIPPED and defaults("train") == SHIPPED["train"]
    defaults("train")["lr"] = 1.0
    assert defaults("train")["lr"] == SHIPPED["train"]["lr"]  # the caller's change stays the caller's
    with pytest.raises(KeyError, match="no section 'trian'"):
        defaults("trian")


def test_a_value_is_checked_once_by_the_schema_and_the_semantic_pass():
    with pytest.raises(ValueError, match=r"train\.lr: 0 is less than or equal to the minimum of 0"):
        TrainSettings.configured(lr=0)
    with pytest.raises(ValueError, match=r"preprocess\.fallback_percentiles: \[99, 1\] must rise"):
        ProcessOptions.configured(fallback_percentiles=[99, 1])


def _leaves(section: dict, path: tuple = ()) -> list[tuple[tuple, object]]:
    found = []
    for key, value in section.items():
        found += _leaves(value, (*path, key)) if isinstance(value, dict) else [((*path, key), value)]
    return found


def test_no_config_value_is_repeated_as_a_default_in_the_code():
    """``name: type = value`` or ``name=value`` in src/ for a config.yaml key of that name and value: a second
    home for it. (0, 1, booleans, null and empty values are too common to tell.)"""
    import re

    sources = {p: p.read_text() for p in (REPO / "src").rglob("*.py")}
    found = []
    for path, value in _leaves(SHIPPED):
        if isinstance(value, bool | list | dict) or value in (0, 1, None, ""):
            continue
        shown = f"[\"']{re.escape(value)}[\"']" if isinstance(value, str) else re.escape(str(value)) + r"\b"
        pattern = re.compile(rf"\b{path[-1]}\s*(?::[^=\n]+)?=\s*{shown}")
        for source, text in sources.items():
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{source.relative_to(REPO)}:{line}: {'.'.join(path)} = {value!r}")
    assert not found, "config.yaml's values repeated in the code:\n" + "\n".join(found)


def test_the_repetition_check_finds_what_it_looks_for(tmp_path):
    import re

    line = "    opening: float = 0.05  # a copy"
    assert re.search(rf"\bopening\s*(?::[^=\n]+)?=\s*{re.escape('0.05')}\b", line)
