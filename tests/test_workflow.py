"""The workflow as a user runs it: config checks, the tiny DAG end to end, re-running only what changed:
after a config change, and after a code edit (the code triggers of mammoflow.plan.code)."""

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from types import SimpleNamespace

import browser
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, SNAKEMAKE_ENV
from rule_commands import rule_commands

from mammoflow.config import problems
from mammoflow.plan.code import Package
from mammoflow.store import open_store

SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
TINY = REPO / "tests/config/tiny.yaml"
# The predict job of the tiny run: the phantom's own folder, labelled, so external metrics are computed too.
PREDICT = "predict:\n  data: {tiny: results/phantom}\n  bootstrap: 20\n  cam_max: 2\n  threads: 1\n"


def snakemake(workdir, *args, check=True, repo=REPO, env=None):
    command = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--directory", str(workdir),
               "--cores", "2", "--configfile", str(TINY), *args]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env or SNAKEMAKE_ENV)
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


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny DAG run once, then its predict job, for every check below (in file order: the last one
    deletes a cell). Every job records the mammoflow modules it loaded (mammoflow/__main__.py)."""
    workdir = tmp_path_factory.mktemp("tiny")
    loaded = workdir / "loaded"
    loaded.mkdir()
    (workdir / "predict.yaml").write_text(PREDICT)
    env = {**SNAKEMAKE_ENV, "MAMMOFLOW_RECORD_MODULES": str(loaded)}
    snakemake(workdir, env=env)
    snakemake(workdir, "--configfile", str(TINY), str(workdir / "predict.yaml"), "--", "predict_all", env=env)
    return SimpleNamespace(workdir=workdir, results=workdir / "results", loaded=loaded)


def scheduled(output: str) -> list[tuple[str, str]]:
    """(rule, reason) of every job a dry run prints."""
    blocks = re.findall(r"^(?:local)?rule (\w+):\n(.*?)(?=^\S|\Z)", output, flags=re.M | re.S)
    return [(rule, re.search(r"^\s+reason: (.*)$", body, flags=re.M).group(1)) for rule, body in blocks]


@pytest.mark.slow
def test_tiny_workflow_end_to_end(tiny_run):
    tmp_path = tiny_run.workdir
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

    # The report closes the DAG: every cell in its table (the page in a browser: the next test), and
    # Snakemake's own report of the outputs marked for it.
    table = pd.read_csv(results / "report/table2.csv")
    assert len(table) == 2 * 3 * 1 and (table["folds_ok"] == 2).all()
    assert table["accuracy_paper"].isna().all()  # 32 and 64 px: not the paper's resolutions
    assert table["pooled_auc_low"].le(table["pooled_auc"]).all()
    assert (table["cam_scored"] > 0).all() and table["cam_hit_rate"].between(0, 1).all()
    assert "## clean protocol, 64 px" in (results / "report/table2.md").read_text()
    page = (results / "report/index.html").read_text()
    assert "Made on the built-in phantom data" in page and "Leakage audit" in page
    snakemake(tmp_path, "--report", str(tmp_path / "snakemake-report.html"))
    own = (tmp_path / "snakemake-report.html").read_text()
    assert "Figure 1: GAN" in own and "table2.csv" in own

    # The predict job on the phantom's own (labelled) folder: a submission and the external metrics.
    submission = pd.read_csv(results / "predict/tiny/submission.csv")
    assert len(submission) == train.groupby(["patient_id", "laterality"]).ngroups
    assert (
        json.loads((results / "predict/tiny/external.json").read_text())["image"]["auc"]["value"] is not None
    )


@pytest.mark.slow
def test_report_page_loads_whole_in_a_browser(tiny_run):
    """Skips, saying why, where there is no headless browser (browser.find_browser)."""
    check, images, problems, _ = browser.load(
        tiny_run.results / "report/index.html", tiny_run.workdir / "report.png"
    )
    assert (check, problems) == ("ok", []) and images >= 10


@pytest.mark.slow
def test_each_change_reruns_exactly_what_depends_on_it(tiny_run):
    tmp_path = tiny_run.workdir
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


@pytest.mark.slow
def test_every_job_loads_only_modules_its_code_trigger_hashes(tiny_run):
    """What each job of the tiny run had in sys.modules at exit is inside its command's static closure."""
    package = Package(REPO / "src")
    records = [json.loads(path.read_text()) for path in sorted(tiny_run.loaded.glob("*.json"))]
    ran = {record["command"] for record in records}
    assert ran == {"phantom", "decode", "index", "preprocess", "folds", "gan-stage", "gan-fid", "synthesize",
                   "train", "cam", "report", "predict"}  # fmt: skip
    for record in records:
        outside = set(record["modules"]) - package.command_modules(record["command"])
        assert not outside, f"{record['command']} loaded {sorted(outside)}, which its code trigger misses"


def _edits(package: Package, rules: dict[str, str]) -> dict[str, frozenset]:
    """One file per set of rules whose commands' closures hold it (files of one set are alike to the
    triggers), with that set; mammoflow.stats (which predict/thresholds.py became) and a report template
    among them."""
    holders = {}
    for name in sorted(package.known, key=lambda n: (n != "mammoflow.stats", n)):
        held = frozenset(r for r, c in rules.items() if name in package.command_modules(c))
        holders.setdefault(held, package.path_of(name))
    edits = {path: held for held, path in holders.items()}
    edits[package.root / "report/templates/report.html.j2"] = frozenset({"report"})
    return {str(path): held for path, held in edits.items()}


@pytest.mark.slow
def test_an_edit_reruns_exactly_the_jobs_that_load_the_edited_file(tiny_run, tmp_path):
    """In a copy of the repository, a comment appended to one file at a time: a dry run on the finished tiny
    run schedules every job whose command's closure holds the file (params changed: code; downstream of
    another such job Snakemake gives only that reason), and beside them only what depends on them (input
    updated). Editing mammoflow.stats re-runs the training cells."""
    copy = tmp_path / "repo"
    copy.mkdir()
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / name, copy / name)
    for name in ("workflow", "src"):
        shutil.copytree(REPO / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    configs = ["--configfile", str(TINY), str(tiny_run.workdir / "predict.yaml")]
    argv = ["-s", str(copy / "Snakefile"), "--directory", str(tiny_run.workdir), "--cores", "2", "-n",
            *configs, "--", "all", "predict_all"]  # fmt: skip
    rules = rule_commands()
    edits = _edits(Package(copy / "src"), rules)
    assert edits[str(copy / "src/mammoflow/stats.py")] >= {"train", "train_without_weights", "cam", "report"}
    runs = [{"argv": ["--forceall", *argv], "edit": None}] + [{"argv": argv, "edit": path} for path in edits]
    spec = tmp_path / "runs.json"
    spec.write_text(json.dumps(runs))
    command = [sys.executable, str(REPO / "tests/dry_runs.py"), str(spec)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=SNAKEMAKE_ENV, check=True)
    everything, *outputs = json.loads(done.stdout)
    jobs_of = Counter(rule for rule, _ in scheduled(everything))
    for (path, held), output in zip(edits.items(), outputs, strict=True):
        jobs = scheduled(output)
        # Every job of a rule that loads the file, its code trigger changed (or an input, by one of them);
        # any other job only because an input was updated by one of them.
        held_jobs = {rule: n for rule, n in jobs_of.items() if rule in held}
        count = Counter(rule for rule, _ in jobs)
        assert {rule: count[rule] for rule in held_jobs} == held_jobs, path
        changed = {rule for rule, reason in jobs if "Params have changed" in reason}
        assert changed <= held and bool(changed) == bool(held_jobs), f"{path}: code of {changed}, not {held}"
        others = {reason for rule, reason in jobs if rule not in held}
        assert all(reason.startswith("Input files updated by another job") for reason in others), path
        assert not any("Params have changed" in reason for reason in others), path


@pytest.mark.slow
def test_a_partial_matrix_still_gets_its_report(tiny_run):
    """Last: it deletes a cell of the tiny run."""
    tmp_path, results = tiny_run.workdir, tiny_run.results
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
