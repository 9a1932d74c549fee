"""Numbers the docs quote about the DAG come from the DAG: a page whose job counts, GPU-job counts or
runtime limits differ from `snakemake -n` on the shipped config fails here (scripts/dag_costs.py --write
PAGE rewrites the block)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO, SNAKEMAKE_ENV

PAGES = sorted(p for p in (REPO / "docs").glob("*.md") if "<!-- dag-costs:begin -->" in p.read_text())


def test_some_page_quotes_the_dag():
    assert "scale.md" in [p.name for p in PAGES]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_quoted_dag_numbers_are_the_dags(page):
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts/dag_costs.py"), "--check", str(page)],
        capture_output=True,
        text=True,
        env=SNAKEMAKE_ENV,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
