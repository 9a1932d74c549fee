"""The reference pages are the configuration and the parsers themselves: docs/configuration.md's tables
(every key's value, schema, meaning; every preset's changes) and each command's option table
(`<!-- cli:COMMAND:... -->` blocks) fail here when they differ from what config.yaml, the schema and the
argparse parsers say now. The re-run column of docs/configuration.md is Snakemake's answer for ~150 DAGs (a
minute or two): `python scripts/config_reference.py --check docs/configuration.md` checks it too."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO, SNAKEMAKE_ENV

CLI_PAGES = sorted(p for p in (REPO / "docs").glob("*.md") if "<!-- cli:" in p.read_text())


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300, env=SNAKEMAKE_ENV
    )


def test_the_configuration_reference_is_the_configuration():
    """(A key without a description, in the schema or beside it in config.yaml, fails the script too.)"""
    done = _run("scripts/config_reference.py", "--check", "docs/configuration.md", "--skip-reruns")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


@pytest.mark.parametrize("page", CLI_PAGES, ids=[p.name for p in CLI_PAGES])
def test_a_command_reference_is_its_parser(page):
    done = _run("scripts/cli_reference.py", "--check", str(page))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_the_predict_page_has_its_reference():
    assert any(p.name == "predict.md" for p in CLI_PAGES)
