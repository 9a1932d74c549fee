"""What the rules' definitions share: the shell set-up of every job, config sections as parameters, and
the output folders commands take."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from mammoflow.matrix import keeps_weights


def shell_prefix(src: str | Path, python_dir: str | Path | None) -> str:
    """What every job's shell runs first: strict mode, this checkout's src/ on PYTHONPATH and (without
    conda) the folder of the Python that runs Snakemake first on PATH, so `python -m mammoflow` is that
    Python (a venv works without being activated). With --software-deployment-method conda the stage's
    environment (envs/*.yaml) provides Python: ``python_dir`` None."""
    path = "" if python_dir is None else f'export PATH={shlex.quote(str(python_dir))}:"$PATH"; '
    # Snakemake formats the prefix like a command: doubled braces stay shell braces.
    pythonpath = f"export PYTHONPATH={shlex.quote(str(src))}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
    return f"set -euo pipefail; {path}{pythonpath}"


def as_json(section: dict, drop=("threads",)) -> str:
    """A config section as a JSON argument; changing it re-runs the rule (Snakemake's params trigger)."""
    return json.dumps({k: v for k, v in section.items() if k not in drop}, sort_keys=True)


def parent(name: str):
    """A params function: the folder of one of the rule's outputs (or inputs), as its command wants it."""
    # (`name in output` would look among the paths: a Snakemake Namedlist is a list.)
    return lambda w, input, output: str(Path(output[name] if name in output.keys() else input[name]).parent)  # noqa: SIM118


def models_matching(config: dict, keep: bool) -> str:
    """A wildcard pattern for the models whose cells keep (or drop) their weights; one that never matches
    when there are none."""
    return "|".join(re.escape(m) for m in config["models"] if keeps_weights(config, m) == keep) or "(?!x)x"
