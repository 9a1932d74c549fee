"""The workflow as a user runs it: config checks, the tiny DAG end to end, re-running only what changed."""

import json
import subprocess
import sys

import browser
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, SNAKEMAKE_ENV

from mammoflow.config import problems
from mammoflow.store import open_store

SCHEMA = REPO / "workflow/schemas/config.schema.yaml"


def snakemake(workdir, *args, check=True):
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--cores", "2", "--configfile", str(REPO / "tests/config/tiny.yaml"), *args]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=SNAKEMAKE_ENV)
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
    missing = snakemake(tmp_path, "-n", "--config", f"rsna_dir={tmp_path}", check=False)
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

    cells = sorted((results / "train").glob("clean/*/*/*/fold*/metrics.json"))
    assert len(cells) == 2 * 3 * 1 * 2  # resolutions x {original, processed, augmented} x models x folds
    for path in cells:
        summary = json.loads(path.read_text())
        assert summary["metrics"]["n"] == summary["valid_images"] > 0
        assert summary["weights"] == "random" and summary["device"] == "cpu"
        predictions = pd.read_parquet(path.parent / "predictions.parquet")
        assert predictions["probability"].between(0, 1).all()
        assert set(predictions["image_id"]) == set(clean.loc[clean["fold"] == summary["fold"], "image_id"])
        assert len(pd.read_csv(path.parent / "history.csv")) == 1

    # Grad-CAM of every cell: its chosen validation images, boxes, maps, and the localisation score.
    cams = sorted((results / "cam").glob("clean/*/*/*/fold*/summary.json"))
    assert len(cams) == len(cells)
    for path in cams:
        summary = json.loads(path.read_text())
        boxes = pd.read_parquet(path.parent / "boxes.parquet")
        assert len(boxes) == summary["images"] > 0 and summary["scorable"] and summary["scored"] > 0
        assert np.load(path.parent / "maps.npy").shape == (len(boxes), 32, 32)
        assert (path.parent / "figure6.png").stat().st_size > 1000

    # The report closes the DAG: every cell in its table, a page that loads whole in a real browser, and
    # Snakemake's own report of the outputs marked for it.
    table = pd.read_csv(results / "report/table2.csv")
    assert len(table) == 2 * 3 * 1 and (table["folds_ok"] == 2).all()
    assert table["accuracy_paper"].isna().all()  # 32 and 64 px: not the paper's resolutions
    assert table["pooled_auc_low"].le(table["pooled_auc"]).all()
    assert (table["cam_scored"] > 0).all() and table["cam_hit_rate"].between(0, 1).all()
    assert "## clean protocol, 64 px" in (results / "report/table2.md").read_text()
    page = (results / "report/index.html").read_text()
    assert "Made on the built-in phantom data" in page and "Leakage audit" in page
    if browser.available():  # else tests/test_report_page.py says why the browser checks skip
        check, images, problems, _ = browser.load(results / "report/index.html", tmp_path / "report.png")
        assert (check, problems) == ("ok", []) and images >= 10
    snakemake(tmp_path, "--report", str(tmp_path / "snakemake-report.html"))
    own = (tmp_path / "snakemake-report.html").read_text()
    assert "Figure 1: GAN" in own and "table2.csv" in own

    # Nothing left to do. Each change re-runs exactly what depends on it:
    assert _dry_run_jobs(tmp_path) == {}
    override = tmp_path / "override.yaml"

    def rerun(text):
        override.write_text(text)
        return _dry_run_jobs(tmp_path, "--configfile", str(REPO / "tests/config/tiny.yaml"), str(override))

    # preprocessing: the `processed` stores, the GANs trained on them and the cells that read them, not
    # `original`, not decoding;
    assert rerun("preprocess:\n  crop_margin: 0.05\n") == {
        "preprocess": 2,
        "gan_stage": 6,
        "gan_fid": 2,
        "synthesize": 4,
        "train": 8,
        "cam": 8,
        "report": 1,
        "all": 1,
    }
    # a new resolution: its stores, its GAN stage and synthetic images, and its cells;
    assert rerun("resolutions: [32, 48]\n") == {
        "preprocess": 2,
        "gan_stage": 2,
        "gan_fid": 2,
        "synthesize": 2,
        "train": 6,
        "cam": 6,
        "report": 1,
        "all": 1,
    }
    # one model's settings: that model's cells only (another model's settings: nothing).
    one_model = {"train": 12, "cam": 12, "report": 1, "all": 1}
    assert rerun("model_settings:\n  resnet18: {lr: 0.01}\n") == one_model
    assert rerun("model_settings:\n  resnet34: {lr: 0.01}\n") == {}
    # One cell on request.
    one = "results/train/clean/32/processed/resnet18/fold1/metrics.json"
    # (--forcerun takes several files, so `all`, which only collects, comes along as the default target.)
    assert _dry_run_jobs(tmp_path, "--forcerun", one) == {"train": 1, "cam": 1, "report": 1, "all": 1}

    # A partial matrix (a cell lost): with report.partial the report asks only for what exists, marks the
    # missing cell and re-runs nothing else.
    (results / "train/clean/64/original/resnet18/fold1/metrics.json").unlink()
    partial = tmp_path / "partial.yaml"
    partial.write_text("report:\n  partial: true\n")
    tiny = str(REPO / "tests/config/tiny.yaml")
    assert _dry_run_jobs(tmp_path, "--configfile", tiny, str(partial), "--", "report") == {"report": 1}
    snakemake(tmp_path, "--configfile", tiny, str(partial), "--", "report")
    cells = pd.read_csv(results / "report/cells.csv")
    not_ok = cells.loc[cells["status"] != "ok", ["resolution", "dataset", "fold", "status"]]
    assert not_ok.values.tolist() == [[64, "original", 1, "missing"]]
    table = pd.read_csv(results / "report/table2.csv", dtype={"missing_folds": str})
    table = table.set_index(["resolution", "dataset"])
    row = table.loc[(64, "original")]
    assert row["folds_ok"] == 1 and row["missing_folds"] == "1"
