"""Snakemake dry runs of one workflow, each after a one-file edit, in one Python process: Snakemake's
start-up is paid once instead of once per run (tests/test_workflow.py makes about 25 of them).

    python tests/dry_runs.py RUNS.json

RUNS.json: a list of {"argv": [snakemake arguments], "edit": a file to append a comment to for this run, or
null}. Each file is restored after its run. Prints a JSON list: each run's output (stdout and stderr).
"""

import contextlib
import io
import json
import sys
from pathlib import Path

from snakemake.cli import main

EDIT = b"\n# an edit that changes nothing but the file\n"


def dry_run(argv: list[str]) -> str:
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
        try:
            main(argv)
        except SystemExit as done:
            if done.code:
                raise RuntimeError(
                    f"snakemake {' '.join(argv)} failed:\n{captured.getvalue()[-3000:]}"
                ) from None
    return captured.getvalue()


def edited(path: str | None, argv: list[str]) -> str:
    if path is None:
        return dry_run(argv)
    original = Path(path).read_bytes()
    Path(path).write_bytes(original + EDIT)
    try:
        return dry_run(argv)
    finally:
        Path(path).write_bytes(original)


if __name__ == "__main__":
    runs = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps([edited(run["edit"], run["argv"]) for run in runs]))
