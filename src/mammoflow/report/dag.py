"""The workflow's picture for the report: Snakemake's own ``--rulegraph``, drawn by Graphviz.

Without Graphviz's ``dot`` program (or when it fails) the page gets the same graph as a plain table of
edges (rule → the rule that reads its output), so nothing about the workflow is lost, only the drawing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

_NODE = re.compile(r'^\s*(\w+)\s*\[\s*label\s*=\s*"([^"]*)"')
_EDGE = re.compile(r"^\s*(\w+)\s*->\s*(\w+)")


def rulegraph_dot(snakefile: Path, workdir: Path, config: dict, timeout: float = 600.0) -> str:
    """``snakemake --rulegraph`` of ``snakefile`` in ``workdir`` with ``config`` (as a --configfile, so it
    overlays the Snakefile's own). ``--nolock``: safe from inside a running job of the same workflow.
    RuntimeError with the end of Snakemake's output when it fails."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="mammoflow-rulegraph-") as handle:
        json.dump(config, handle, default=str)
        handle.flush()
        command = [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(Path(snakefile).resolve()),
            "--directory",
            str(Path(workdir).resolve()),
            "--rulegraph",
            "--nolock",
            "--configfile",
            handle.name,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    start, end = done.stdout.find("digraph"), done.stdout.rfind("}")
    if done.returncode != 0 or start < 0 or end < start:
        raise RuntimeError(
            f"snakemake --rulegraph failed (exit {done.returncode}): {(done.stderr or done.stdout)[-2000:]}"
        )
    return done.stdout[start : end + 1] + "\n"


def edges(dot: str) -> pd.DataFrame:
    """The graph's edges by rule name: columns ``rule`` and ``feeds``."""
    names = {m.group(1): m.group(2) for m in map(_NODE.match, dot.splitlines()) if m}
    pairs = [
        (names.get(m.group(1), m.group(1)), names.get(m.group(2), m.group(2)))
        for m in map(_EDGE.match, dot.splitlines())
        if m
    ]
    return pd.DataFrame(pairs, columns=["rule", "feeds"])


def with_counts(dot: str, counts: dict[str, int]) -> str:
    """Node labels "rule ×n" for the rules whose jobs ran (``counts``: rule -> jobs)."""
    return re.sub(
        r'label\s*=\s*"(\w+)"',
        lambda m: f'label = "{m.group(1)}{f" ×{counts[m.group(1)]}" if m.group(1) in counts else ""}"',
        dot,
    )


def svg(dot: str, timeout: float = 60.0) -> str:
    """Graphviz's drawing as inline SVG (without the XML prolog and doctype); RuntimeError without dot."""
    program = shutil.which("dot")
    if program is None:
        raise RuntimeError("Graphviz's dot program is not installed")
    done = subprocess.run([program, "-Tsvg"], input=dot, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0 or "<svg" not in done.stdout:
        raise RuntimeError(f"dot -Tsvg failed (exit {done.returncode}): {done.stderr[-1000:]}")
    return done.stdout[done.stdout.index("<svg") :]


def workflow_picture(snakefile: Path, workdir: Path, config: dict, counts: dict[str, int]) -> dict:
    """For the report: ``svg`` (or None), ``edges`` (the plain table when there is no drawing) and a
    ``note`` that says what is shown and, where something is missing, why."""
    try:
        dot = with_counts(rulegraph_dot(snakefile, workdir, config), counts)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as error:
        return {"svg": None, "edges": None, "note": f"the workflow could not be read: {error}"}
    note = "The workflow's rules (snakemake --rulegraph); ×n = jobs that ran (from benchmarks/)."
    try:
        return {"svg": svg(dot), "edges": None, "note": note}
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as error:
        return {"svg": None, "edges": edges(dot), "note": f"{note} Not drawn ({error}): its edges instead."}
