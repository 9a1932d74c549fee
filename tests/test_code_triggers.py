"""Code triggers (mammoflow.plan.code): the static import closure of each command, and the rules that hash
it. The checks against real jobs (what they load, what an edit re-runs) use the tiny run in
tests/test_workflow.py."""

import re
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO
from rule_commands import RULES, rule_commands

from mammoflow.cli import build_parser
from mammoflow.commands import COMMANDS
from mammoflow.plan.code import Package


def test_every_rule_hashes_the_files_of_its_own_command():
    commands = rule_commands()
    assert {"phantom", "decode", "decode_index", "train", "train_without_weights", "cam", "predict"} <= set(
        commands
    )
    for path in sorted(RULES.glob("*.smk")):
        for name, body in re.findall(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", path.read_text(), flags=re.M | re.S):
            if name in commands:
                assert f'code=code_digest("{commands[name]}")' in body, f"{path.name}: rule {name}"
    assert set(commands.values()) <= set(COMMANDS)


def test_the_command_table_is_what_the_parsers_run():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert list(sub.choices) == list(COMMANDS)  # also the order `mammoflow --help` lists them in
    for name, command in COMMANDS.items():
        handler = sub.choices[name].get_default("func")
        assert (handler.__module__, handler.__name__) == (command.module, command.handler), name


def test_a_job_imports_the_command_line_and_its_own_stage_only():
    probe = "import sys; from mammoflow.cli import build_parser; build_parser('decode').parse_args(%r); "
    probe += "print(' '.join(sorted(m for m in sys.modules if m.startswith('mammoflow'))))"
    argv = ["decode", "--data-dir", "d", "--out", "o", "--shard", "0", "--shards", "1"]
    done = subprocess.run([sys.executable, "-c", probe % argv], capture_output=True, text=True, check=True)
    loaded = set(done.stdout.split())
    # sections, config and matrix: the defaults read from config.yaml and checked (mammoflow.sections)
    assert loaded == {"mammoflow", "mammoflow.cli", "mammoflow.commands", "mammoflow.errors",
                      "mammoflow.data_cli", "mammoflow.arguments", "mammoflow.limits",
                      "mammoflow.sections", "mammoflow.config", "mammoflow.matrix"}  # fmt: skip
    assert loaded <= Package(REPO / "src").command_modules("decode")


def _write(root, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_the_closure_follows_every_kind_of_import(tmp_path):
    _write(
        tmp_path / "mammoflow",
        {
            "__init__.py": "",
            "entry.py": """
                from __future__ import annotations
                from typing import TYPE_CHECKING
                from mammoflow import plain
                if TYPE_CHECKING:
                    from mammoflow import typing_only
                def register(sub):
                    return helper()
                def helper():
                    from .pkg import sub_module
                def run_this(args):
                    import mammoflow.deep.inner.leaf
                    from mammoflow.pkg import named  # a function of pkg/__init__.py, not a module
                def run_other(args):
                    from mammoflow import other_stage
                def unused(args):
                    from mammoflow import unused_stage
            """,
            "plain.py": """
                import importlib
                def later():
                    return importlib.import_module("mammoflow.by_name")
            """,
            "by_name.py": "TABLE = 'table.csv'\n",
            "table.csv": "a,b\n",
            "typing_only.py": "",
            "other_stage.py": "",
            "unused_stage.py": "",
            "pkg/__init__.py": "def named():\n    pass\n",
            "pkg/sub_module.py": "from ..plain import later\n",
            "deep/__init__.py": "",
            "deep/inner/__init__.py": "",
            "deep/inner/leaf.py": "",
        },
    )
    package = Package(tmp_path)
    found = package.closure([], ("mammoflow.entry", ["register", "run_this"], {"run_other"}))
    assert found == {
        "mammoflow",
        "mammoflow.entry",
        "mammoflow.plain",
        "mammoflow.by_name",
        "mammoflow.pkg",
        "mammoflow.pkg.sub_module",
        "mammoflow.deep",
        "mammoflow.deep.inner",
        "mammoflow.deep.inner.leaf",
    }  # fmt: skip (unused() is named by no code that runs: its import is not counted)
    assert package.module("mammoflow.by_name").data == [tmp_path / "mammoflow/table.csv"]
    # Another module importing the entry module may call any of its functions.
    _write(tmp_path / "mammoflow", {"plain.py": "import mammoflow.entry\n"})
    again = Package(tmp_path).closure([], ("mammoflow.entry", ["register", "run_this"], {"run_other"}))
    assert {"mammoflow.other_stage", "mammoflow.unused_stage"} <= again
    assert "mammoflow.typing_only" not in again


def test_only_the_command_line_imports_by_a_computed_name():
    """The command line imports a command's module by name (roots of the closure, from the same table);
    any other computed import would hide a module from the code triggers."""
    package = Package(REPO / "src")
    dynamic = {
        name
        for name in package.known
        if (m := package.module(name)).top.dynamic or any(f.dynamic for f in m.functions.values())
    }
    assert dynamic == {"mammoflow.cli"}


def test_every_data_file_of_the_package_is_hashed_by_the_jobs_that_read_it():
    package = Package(REPO / "src")
    data = {p for p in (REPO / "src/mammoflow").rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")}
    assert data, "the report's templates and the paper's table are package data"
    hashed = {p for command in COMMANDS for p in package.command_files(command)}
    assert data <= hashed
    assert REPO / "src/mammoflow/report/templates/report.html.j2" in package.command_files("report")
    assert not [p for p in package.command_files("train") if p.suffix != ".py"]


@pytest.mark.parametrize(
    ("command", "holds", "lacks"),
    [
        # A training cell writes the thresholds (stats), reads the store; no other stage's code.
        ("train", {"mammoflow.stats", "mammoflow.store", "mammoflow.devices", "mammoflow.classify.train"},
         {"mammoflow.explain.stage", "mammoflow.gan.train", "mammoflow.report.table2", "mammoflow.folds"}),
        ("cam", {"mammoflow.classify.models", "mammoflow.explain.stage"}, {"mammoflow.classify.train"}),
        ("gan-stage", {"mammoflow.gan.train"}, {"mammoflow.gan.fid", "mammoflow.gan.sample"}),
        ("gan-fid", {"mammoflow.gan.fid"}, {"mammoflow.gan.train"}),
        ("decode", {"mammoflow.dicom", "mammoflow.j2k"}, {"mammoflow.devices", "mammoflow.phantom"}),
        ("phantom", {"mammoflow.phantom.render"}, {"mammoflow.decode", "mammoflow.folds"}),
    ],
)  # fmt: skip
def test_closures_hold_their_stage_and_no_other(command, holds, lacks):
    found = Package(REPO / "src").command_modules(command)
    assert holds <= found and not lacks & found
