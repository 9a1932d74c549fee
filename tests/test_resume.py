"""Recovery: a killed Snakemake driver, resumed by the commands docs/troubleshooting.md prints; a damaged
store, rebuilt by the command its refusal names.

The driver alone is killed (SIGKILL) while the `decode_index` job runs: the job goes on without it and
finishes its outputs, so the dead driver leaves its lock and an incomplete mark on complete files, the two
things a second run trips over. The test checks that it trips over exactly what the page says, types the
page's commands (with the tiny configuration's options and targets added, as the page says to add yours),
and compares every output with an uninterrupted run of the same command.

The same uninterrupted run then has one store damaged in place (the issue's inverted store): its cell
refuses it by name, and the command the message gives rebuilds store and cell to the same results.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, SNAKEMAKE_ENV

PAGE = REPO / "docs/troubleshooting.md"
CELLS = ["results/train/clean/32/processed/resnet18/fold0"]
# The command that is killed: the tiny configuration, up to one training cell (phantom, decoding, folds,
# one store, one cell).
OPTIONS = ["-s", str(REPO / "Snakefile"), "--configfile", str(REPO / "tests/config/tiny.yaml")]
TARGETS = ["--", *(f"{cell}/metrics.json" for cell in CELLS)]


def documented_commands() -> list[list[str]]:
    """The commands of the page's section on stopping and resuming, split into arguments."""
    text = PAGE.read_text()
    section = text[text.index("## Stopping and resuming a run") :]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [shlex.split(line) for line in block.splitlines() if line.startswith("snakemake ")]


def _snakemake(workdir: Path, arguments: list[str], check: bool = True) -> subprocess.CompletedProcess:
    cores = [a if a != "all" else "2" for a in arguments]  # the page's `--cores all`: this machine's 2
    command = [sys.executable, "-m", "snakemake", *cores, "--directory", str(workdir), *OPTIONS, *TARGETS]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900, env=SNAKEMAKE_ENV)
    if check:
        assert done.returncode == 0, f"{shlex.join(arguments)}:\n{done.stdout[-3000:]}\n{done.stderr[-4000:]}"
    return done


def _running_in_group(group: int) -> list[int]:
    """Processes of a process group that have not ended (zombies left to an init that may not reap them
    do not count), from /proc."""
    running = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended while we looked
        if int(fields[2]) == group and fields[0] != "Z":
            running.append(int(stat.parent.name))
    return running


def _kill_driver_during_decode_index(workdir: Path) -> None:
    """Start the run, SIGKILL the driver (only) as soon as decode_index starts, wait for its orphaned job."""
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "2",
        "--directory",
        str(workdir),
        *OPTIONS,
        *TARGETS,
    ]
    log = workdir / "logs/decode_index.log"
    driver = subprocess.Popen(command, cwd=REPO, env=SNAKEMAKE_ENV, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 600
    while not log.exists():
        assert driver.poll() is None, "the run ended before decode_index started"
        assert time.monotonic() < deadline, "decode_index did not start in 10 minutes"
        time.sleep(0.02)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    # The jobs it started are still in its process group: wait until they are done (the page's step 1).
    while _running_in_group(driver.pid):
        assert time.monotonic() < deadline, "the killed driver's jobs did not end"
        time.sleep(0.2)
    assert (workdir / "results/decoded/index.parquet").is_file()  # finished by the orphaned job


def _same_results(reference: Path, resumed: Path) -> None:
    """Byte for byte where bytes are deterministic; tables equal but for timings and the run's own folder."""

    def same_bytes(name: str) -> None:
        assert (reference / name).read_bytes() == (resumed / name).read_bytes(), name

    def same_table(name: str) -> None:
        tables = []
        for root in (reference, resumed):
            table = pd.read_parquet(root / name)
            table = table.drop(columns=[c for c in table.columns if "seconds" in c])
            for column in table.select_dtypes(exclude="number").columns:
                for folder in (reference, resumed):  # a copied run's index may name the original's folder
                    table[column] = table[column].astype(str).str.replace(str(folder), "", regex=False)
            tables.append(table)
        pd.testing.assert_frame_equal(*tables, obj=name)

    same_bytes("results/data/32/processed/images.npy")
    for name in ("results/data/32/processed/manifest.parquet", "results/decoded/index.parquet",
                 "results/data/folds.parquet"):  # fmt: skip
        same_table(name)
    for cell in CELLS:
        same_table(f"{cell}/predictions.parquet")
        same_bytes(f"{cell}/model.safetensors")
    assert np.isfinite(pd.read_parquet(resumed / CELLS[0] / "predictions.parquet")["probability"]).all()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The command run once, never interrupted."""
    workdir = tmp_path_factory.mktemp("reference")
    _snakemake(workdir, ["--cores", "2"])
    return workdir


@pytest.mark.slow
def test_a_killed_driver_resumes_by_the_documented_commands(reference, tmp_path):
    unlock, again = documented_commands()
    assert "--unlock" in unlock and again == [a for a in unlock if a != "--unlock"]
    killed = tmp_path / "killed"
    _kill_driver_during_decode_index(killed)
    # What the page says a plain re-run meets: the lock, then (unlocked, without the default profile's
    # rerun-incomplete) the incomplete mark on the files the orphaned job finished.
    locked = _snakemake(killed, again[1:], check=False)
    assert locked.returncode != 0 and "LockException" in locked.stdout + locked.stderr
    _snakemake(killed, unlock[1:])
    bare = _snakemake(killed, ["-n", "--workflow-profile", "none", *again[1:]], check=False)
    assert bare.returncode != 0 and "IncompleteFilesException" in bare.stdout + bare.stderr
    assert "results/decoded/index.parquet" in bare.stdout + bare.stderr

    resumed = _snakemake(killed, again[1:])
    assert "Using workflow specific profile profiles/default" in resumed.stderr
    _same_results(reference, killed)


@pytest.mark.slow
def test_a_damaged_store_stops_its_cell_and_the_named_command_rebuilds_it(reference, tmp_path):
    """The issue's case through Snakemake: a store's pixels inverted in place. The newer file makes
    Snakemake re-run the cell, which refuses the store by name; the command its message gives rebuilds the
    store and the cell, to the results of the undamaged run."""
    copy = tmp_path / "damaged"
    shutil.copytree(reference, copy, symlinks=True)
    images = np.load(copy / "results/data/32/processed/images.npy", mmap_mode="r+")
    images[:] = 255 - images
    images.flush()
    del images
    failed = _snakemake(copy, ["--cores", "2"], check=False)
    assert failed.returncode != 0
    log = (copy / "logs/train/clean/32/processed/resnet18/fold0.log").read_text()
    (line,) = [x for x in log.splitlines() if x.startswith("mammoflow train: error: store ")]
    assert "results/data/32/processed: images.npy differs from the checksum its manifest records" in line
    (command,) = re.findall(r"\(e\.g\. `(snakemake [^`]+)`\)", line)
    _snakemake(copy, shlex.split(command)[1:])
    _same_results(reference, copy)
