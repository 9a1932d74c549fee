"""The workflow as a user runs it: config checks, the tiny DAG end to end, re-running only what changed."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from mammoflow.config import problems
from mammoflow.store import open_store

SCHEMA = REPO / "workflow/schemas/config.schema.yaml"


def snakemake(workdir, *args, check=True):
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--cores", "2", "--configfile", str(REPO / "tests/config/tiny.yaml"), *args]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if check and done.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
        )
    return done


def test_config_problems_name_the_key():
    assert problems({}, SCHEMA) == []
    found = problems({"phantom": {"patiens": 3}, "decode": {"shards": 0}, "resolutions": [256, "x"]}, SCHEMA)
    assert any(p.startswith("phantom:") and "'patiens'" in p for p in found)
    assert any(p.startswith("decode.shards:") for p in found)
    assert any(p.startswith("resolutions.1:") for p in found)


def test_bad_config_fails_at_start(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epoch: 3\n")
    done = snakemake(tmp_path, "-n", "--configfile", str(bad), check=False)
    assert done.returncode != 0
    assert (
        "train: Additional properties are not allowed ('epoch' was unexpected)" in done.stdout + done.stderr
    )
    missing = snakemake(tmp_path, "-n", "--config", f"data={{'rsna_dir': '{tmp_path}/nowhere'}}", check=False)
    assert missing.returncode != 0 and "no train.csv there" in missing.stdout + missing.stderr


def _dry_run_jobs(workdir, *args):
    out = snakemake(workdir, "-n", "--quiet", "rules", *args).stdout
    jobs = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
            jobs[parts[0]] = int(parts[1])
    return jobs


@pytest.mark.slow
def test_tiny_workflow_end_to_end(tmp_path):
    snakemake(tmp_path)
    results = tmp_path / "results"
    train = pd.read_csv(results / "phantom/train.csv")
    index = pd.read_parquet(results / "decoded/index.parquet")
    errors = pd.read_parquet(results / "decoded/errors.parquet")
    assert len(index) + len(errors) == len(train) and errors.empty
    assert set(index["decoder"]) == {"dicomsdl"}
    for res in (32, 64):
        for dataset in ("original", "processed"):
            images, manifest = open_store(results / f"data/{res}/{dataset}")
            assert images.shape == (len(train), res, res) and images.dtype == np.uint8
            assert manifest["row"].tolist() == list(range(len(manifest)))
            assert (manifest["cancer"] == 1).sum() == train["cancer"].sum()
            positives = manifest[manifest["cancer"] == 1]
            assert positives["lesion_x0"].notna().mean() > 0.9  # lesion boxes carried through the crop
            assert manifest.loc[manifest["cancer"] == 0, "lesion_x0"].isna().all()
            assert (results / f"data/{res}/{dataset}/contact_sheet.png").stat().st_size > 1000
            summary = json.loads((results / f"data/{res}/{dataset}/summary.json").read_text())
            assert summary["images"] == len(train)
    folds = pd.read_parquet(results / "data/folds.parquet")
    clean = folds[folds["protocol"] == "clean"]
    assert clean.groupby("patient_id")["fold"].nunique().max() == 1
    assert sorted(clean["image_id"]) == sorted(index["image_id"])

    # Nothing left to do; a preprocessing change re-runs only the `processed` stores.
    assert _dry_run_jobs(tmp_path) == {}
    override = tmp_path / "override.yaml"
    override.write_text("preprocess:\n  crop_margin: 0.05\n")
    assert _dry_run_jobs(tmp_path, "--configfile", str(REPO / "tests/config/tiny.yaml"), str(override)) == {
        "preprocess": 2,  # processed at 32 and 64; `original` does not depend on these settings
        "all": 1,
    }
    override.write_text("resolutions: [32, 48]\n")
    assert _dry_run_jobs(tmp_path, "--configfile", str(REPO / "tests/config/tiny.yaml"), str(override)) == {
        "preprocess": 2,  # the new resolution's two stores only
        "all": 1,
    }
