"""Every `snakemake ...` command the README and docs/ print works as printed, so the documentation cannot rot.

Each command is read out of the Markdown (fenced blocks and inline code), pointed at test folders (the data
folder becomes an RSNA-layout folder whose path has a space and a quote) and run in a copy of the workflow;
as a dry run where the real run would be long. One command, the README's real-data command, runs for real
through preprocessing. A plain Snakemake, with mammoflow not importable from its environment, reads the
Snakefile.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import markdown_pages
import pandas as pd
import pytest
from conftest import REPO, SNAKEMAKE_ENV

from mammoflow.phantom import PhantomSpec, generate

DOCS = markdown_pages.PAGES
SHELL = ("", "bash", "sh", "console")  # fenced blocks whose lines are commands
COPY_IGNORE = shutil.ignore_patterns(
    ".venv", ".git", "results", "logs", "benchmarks", ".snakemake", "*.egg-info", "resources"
)
SNAKEMAKE = re.compile(r"^(?:\.venv/bin/)?snakemake(?:\s|$)")
# What the docs put before a command and the test leaves off: timing it, lowering its priority, bounding it.
PREFIX = re.compile(r"^(?:time\s+|nice\s+-n\s+\d+\s+|timeout\s+(?:-k\s+\S+\s+)?\S+\s+)+")


def documented_commands() -> list[tuple[str, list[str], str]]:
    """(where, lines run before it in its block, command) for every snakemake command in the docs."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for block in markdown_pages.code_blocks(text, SHELL):
            before = []
            for line in block.body.replace("\\\n", " ").splitlines():
                line = PREFIX.sub("", line.split(" # ")[0].strip())
                if SNAKEMAKE.match(line):
                    found.append((doc.name, list(before), line))
                elif line.startswith("printf "):
                    before.append(line)
        prose = markdown_pages.prose(text).replace("\n", " ")
        for span in re.findall(r"`([^`]+)`", prose):
            span = PREFIX.sub("", span.strip())
            if SNAKEMAKE.match(span) and span != "snakemake":
                found.append((doc.name, [], span))
    # A command printed on several pages runs once, named after every page that prints it.
    pages: dict[tuple, list[str]] = {}
    for where, before, command in found:
        pages.setdefault((tuple(before), command), []).append(where)
    return [("+".join(dict.fromkeys(w)), list(b), c) for (b, c), w in pages.items()]


COMMANDS = documented_commands()


@pytest.fixture(scope="module")
def rsna(tmp_path_factory) -> Path:
    """A small data set in the Kaggle layout, in a folder whose path has a space and a quote."""
    root = tmp_path_factory.mktemp("data") / "RSNA breast's data"
    spec = PhantomSpec.configured(patients=6, prevalence=0.5, size_scale=0.06, seed=5)
    generate(root, spec, workers=2)
    (root / "lesions.csv").unlink()  # not an RSNA file
    return root


def _workflow_copy(tmp_path: Path) -> Path:
    """The checkout, with its weights folder filled as `snakemake weights` (or a user, by hand) fills it:
    without the pretrained files the paper's configuration stops at DAG build, by design. Empty stand-ins
    will do: the commands run dry, except one that stops before training."""
    from mammoflow.config import load_yaml
    from mammoflow.weights import catalog

    copy = tmp_path / "check out"
    shutil.copytree(REPO, copy, ignore=COPY_IGNORE)
    config = load_yaml(copy / "config.yaml")
    for need in catalog.needed(config):
        path = catalog.folder(config, copy) / need.candidates[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return copy


def _pointed(command: str, rsna: Path, scratch: Path, dry: bool) -> list[str]:
    args = [a for a in shlex.split(command)[1:] if a != "..."]
    out = []
    for i, arg in enumerate(args):
        if i and args[i - 1] in ("-s", "--snakefile"):
            arg = "Snakefile"  # the copy's
        elif arg.startswith("rsna_dir="):
            arg = f"rsna_dir={rsna}"
        elif arg.startswith("/") and not Path(arg).exists():  # /tmp/tiny, /somewhere/empty
            arg = str(scratch / Path(arg).name)
        out.append(arg)
    if dry and "-n" not in out and "--dry-run" not in out:
        out.insert(0, "-n")
    return [sys.executable, "-m", "snakemake", *out]


def test_the_docs_print_the_commands_this_test_runs():
    where = {page for w, _, _ in COMMANDS for page in w.split("+")}
    assert {"README.md", "cluster.md"} <= where
    assert any("rsna_dir=" in c for _, _, c in COMMANDS)
    assert not [c for _, _, c in COMMANDS if "data.rsna_dir" in c], (
        "Snakemake's --config takes top-level keys"
    )


@pytest.mark.slow  # a copy of the workflow and a Snakemake run each
@pytest.mark.parametrize("where,before,command", COMMANDS, ids=[f"{w}:{c[:60]}" for w, _, c in COMMANDS])
def test_documented_command_runs(where, before, command, rsna, tmp_path):
    copy = _workflow_copy(tmp_path)
    for line in before:
        subprocess.run(["bash", "-c", line], cwd=copy, check=True)
    if "--report" in command:
        pytest.skip("needs a finished run: tests/test_workflow.py runs `snakemake --report` after one")
    if "--software-deployment-method conda" in command and shutil.which("conda") is None:
        pytest.skip(
            "needs conda, which this machine does not have (Snakemake asks `conda info` at DAG build)"
        )
    pointed = _pointed(command, rsna, tmp_path, dry=True)
    done = subprocess.run(
        pointed,
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=300,
        env=SNAKEMAKE_ENV,
    )
    assert done.returncode == 0, f"{where}: {command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.mark.slow
def test_real_data_command_runs_through_preprocessing(rsna, tmp_path):
    """The README's real-data command as printed, with the data folder's path swapped, up to the stores."""
    (command,) = [
        c for w, _, c in COMMANDS if "README.md" in w.split("+") and "--cores all" in c and "rsna_dir=" in c
    ]
    copy = _workflow_copy(tmp_path)
    targets = ["results/data/folds.parquet", "results/data/256/processed/images.npy"]
    done = subprocess.run(
        [*_pointed(command, rsna, tmp_path, dry=False), "--", *targets],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=600,
        env=SNAKEMAKE_ENV,
    )
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    sheet = pd.read_csv(rsna / "train.csv")
    manifest = pd.read_parquet(copy / "results/data/256/processed/manifest.parquet")
    assert sorted(manifest["image_id"]) == sorted(sheet["image_id"])
    assert "decode: 24 images decoded, 0 could not be decoded" in done.stderr


def test_plain_snakemake_reads_the_snakefile_without_mammoflow_installed(rsna, tmp_path):
    """As with --software-deployment-method conda: the driver's environment has Snakemake, not mammoflow and
    not its heavy dependencies; the Snakefile finds the checkout's own src/ and needs nothing else."""
    copy = _workflow_copy(tmp_path)
    # (pandas and numpy may be there: the SLURM executor plugin imports pandas.)
    blocked = ["mammoflow", "torch", "timm", "cv2", "pydicom", "dicomsdl", "sklearn"]
    driver = f"""
import sys, importlib.abc
src = {str(REPO / "src")!r}
sys.path[:] = [p for p in sys.path if p.rstrip("/") != src]
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top == "mammoflow" and path is None and not any(p.startswith({str(copy)!r}) for p in sys.path):
            raise ImportError("mammoflow is not installed here")
        if top in {blocked[1:]!r}:
            raise ImportError(f"{{top}} is not installed here")
sys.meta_path.insert(0, Block())
from snakemake.cli import main
sys.argv = ["snakemake", "-n", "--cores", "1", "--config", "rsna_dir=" + {str(rsna)!r}]
main()
"""
    done = subprocess.run(
        [sys.executable, "-c", driver],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=300,
        env=SNAKEMAKE_ENV,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "decode" in done.stdout and "train" in done.stdout
