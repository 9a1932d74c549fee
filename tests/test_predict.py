"""`mammoflow predict` end to end on phantoms: the artifact reproduces its cell, an unlabelled folder in
Kaggle's test layout gives a valid submission, a broken DICOM is listed, labels give external metrics."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from mammoflow.classify.train import Cell, TrainSettings, run_cell
from mammoflow.cli import main
from mammoflow.decode import decode_shard, index_shards
from mammoflow.folds import make_folds
from mammoflow.limits import DecodeSettings
from mammoflow.phantom import PhantomSpec, generate
from mammoflow.predict.run import PredictOptions, run_predict
from mammoflow.store import build_store

torch.set_num_threads(2)
RES = 32
WORKING_SIZE = 256
DECODE = {"working_size": WORKING_SIZE, "decoders": ["dicomsdl", "pydicom"], "reduce": True}
SPEC = dict(patients=8, prevalence=0.5, size_scale=0.08, mass_contrast=0.3, mass_diameter_mm=(30.0, 40.0))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run's results tree: phantom -> decode -> processed store -> folds -> two resnet18 cells."""
    root = tmp_path_factory.mktemp("run")
    generate(root / "phantom", PhantomSpec.configured(**SPEC), workers=2, progress=False)
    decode_shard(
        root / "phantom",
        root / "shard",
        0,
        1,
        settings=DecodeSettings.configured(working_size=WORKING_SIZE),
        workers=2,
    )
    index = index_shards([root / "shard"], root / "index.parquet", root / "errors.parquet")
    store = root / "results/data/32/processed"
    build_store(root / "index.parquet", "processed", RES, store, workers=1)
    make_folds(index[["image_id", "patient_id", "cancer"]], 2, 0).to_parquet(root / "folds.parquet")
    settings = TrainSettings.configured(
        epochs=1, batch_size=8, lr=1e-3, recipe="fit_one_cycle", pretrained=False
    )
    for fold in (0, 1):
        out = root / f"results/train/clean/{RES}/processed/resnet18/fold{fold}"
        cell = Cell(store, root / "folds.parquet", "resnet18", fold, "clean", out, decode=DECODE)
        run_cell(cell, settings, threads=2)
    return root


def _cell(run, fold):
    return run / f"results/train/clean/{RES}/processed/resnet18/fold{fold}"


def test_cell_writes_artifact_not_pickle(run):
    cell = _cell(run, 0)
    assert (cell / "model.safetensors").is_file() and (cell / "model.json").is_file()
    assert not (cell / "model.pt").exists() and not (cell / "checkpoint.pt").exists()
    metadata = json.loads((cell / "model.json").read_text())
    assert metadata["decode"] == DECODE and metadata["preprocess"]["dataset"] == "processed"
    assert metadata["preprocess"]["options"]["resize"] == "stretch"
    assert set(metadata["thresholds"]["image"]) == {"pf1", "spec90"}


def test_artifact_reproduces_the_cells_validation_predictions(run, tmp_path):
    """Predicting the training folder (DICOMs, decode, preprocess) with fold 0's artifact alone gives that
    cell's predictions.parquet on its validation images: the artifact carries everything needed."""
    options = PredictOptions.configured(artifacts=[str(_cell(run, 0))], bootstrap=50, cam_max=2, workers=2)
    summary = run_predict(run / "phantom", tmp_path / "again", options)
    assert summary["n_failed"] == 0 and summary["layout"] == "rsna-train"
    images = pd.read_parquet(tmp_path / "again/images.parquet")
    expected = pd.read_parquet(_cell(run, 0) / "predictions.parquet")
    both = expected.merge(images[["image_id", "probability"]], on="image_id", suffixes=("", "_new"))
    assert len(both) == len(expected) > 0
    # fp16 weights, bf16 autocast on CPUs that have it: at most 0.0015 measured at demo scale.
    np.testing.assert_allclose(both["probability_new"], both["probability"], atol=0.01)
    assert np.corrcoef(both["probability_new"], both["probability"])[0, 1] > 0.99

    external = json.loads((tmp_path / "again/external.json").read_text())
    for key in ("name", "data_dir", "models", "protocol", "resolution", "dataset", "aggregation", "n_images",
                "n_breasts", "n_failed", "image", "breast", "thresholds"):  # fmt: skip
        assert key in external, key
    assert external["n_images"] == len(images) and external["resolution"] == RES
    for level in ("image", "breast"):
        for metric in ("auc", "pf1", "sensitivity", "specificity", "sens_at_90spec"):
            entry = external[level][metric]
            assert set(entry) == {"value", "lo", "hi"}
            if entry["value"] is not None and entry["lo"] is not None:
                assert entry["lo"] <= entry["value"] + 1e-9 and entry["value"] <= entry["hi"] + 1e-9
    assert set(external["thresholds"]) >= {"pf1_oof", "spec90_oof"}


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory):
    """A second phantom (another seed) in Kaggle's test layout, one of its DICOMs truncated."""
    root = tmp_path_factory.mktemp("test_layout")
    generate(
        root / "made", PhantomSpec.configured(**{**SPEC, "patients": 4, "seed": 7}), workers=2, progress=False
    )
    train = pd.read_csv(root / "made/train.csv")
    labels = ["cancer", "biopsy", "invasive", "BIRADS", "density", "difficult_negative_case"]
    test = train.drop(columns=labels, errors="ignore")
    test["prediction_id"] = test["patient_id"].astype(str) + "_" + test["laterality"]
    folder = root / "rsna-test"
    folder.mkdir()
    test.to_csv(folder / "test.csv", index=False)
    shutil.copytree(root / "made/train_images", folder / "test_images")
    broken = test.iloc[0]
    path = folder / "test_images" / str(broken.patient_id) / f"{broken.image_id}.dcm"
    path.write_bytes(path.read_bytes()[:600])
    return folder, broken, train


def test_unlabelled_folder_gives_a_submission_and_lists_the_broken_file(run, unlabelled, tmp_path):
    """Into a folder a labelled prediction wrote before: its external.json and CAM panels do not survive
    beside the new submission, and the report finds no external test there."""
    from mammoflow.report.compare import external_tests

    folder, broken, train = unlabelled
    out = tmp_path / "results/predict/clinic"
    (out / "cam").mkdir(parents=True)
    (out / "cam/1_L.png").write_bytes(b"an earlier run's panel")
    (out / "external.json").write_text(json.dumps({"name": "clinic", "image": {}, "breast": {}}))
    assert len(external_tests(tmp_path / "results")) == 1
    code = main(["predict", "--data", str(folder), "--out", str(out), "--results", str(run / "results"),
                 "--workers", "2", "--cam-max", "1"])  # fmt: skip
    assert code == 0
    assert not (out / "cam/1_L.png").exists() and external_tests(tmp_path / "results") == []
    submission = pd.read_csv(out / "submission.csv")
    assert list(submission.columns) == ["prediction_id", "cancer"]
    breasts = (train["patient_id"].astype(str) + "_" + train["laterality"]).unique()
    assert sorted(submission["prediction_id"]) == sorted(breasts)
    assert submission["cancer"].between(0, 1).all()
    assert not (out / "external.json").exists()

    failed = pd.read_csv(out / "failed.csv")
    assert failed["image_id"].tolist() == [broken.image_id]
    assert failed["reason"].iloc[0]  # the decoders' reasons
    table = pd.read_parquet(out / "breasts.parquet").set_index("prediction_id")
    row = table.loc[f"{broken.patient_id}_{broken.laterality}"]
    assert row["status"] == "partial" and row["views_decoded"] == row["views"] - 1
    assert np.isfinite(row["probability"])  # from the view that remains

    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"][0]["model"] == f"clean/{RES}/processed/resnet18"
    assert len(summary["models"][0]["folds"]) == 2
    assert "out-of-fold" in summary["thresholds"]["source"]
    if summary["breasts_flagged_pf1"]:
        assert summary["cam_panels"]["breasts"] == 1 and (out / "cam/boxes.parquet").is_file()


def test_artifacts_are_checked_before_the_folder_is_read(run, tmp_path, capsys):
    """An edited model.json stops predict in seconds with one line naming it, before the data folder is
    even looked at (here it does not exist), let alone decoded."""
    cell = tmp_path / "fold0 copy"
    shutil.copytree(_cell(run, 0), cell)
    document = json.loads((cell / "model.json").read_text())
    document["resolution"] = 16
    (cell / "model.json").write_text(json.dumps(document))
    code = main(["predict", "--data", str(tmp_path / "not there"), "--out", str(tmp_path / "out"),
                 "--artifacts", str(cell)])  # fmt: skip
    assert code == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error:" in x]
    assert line == (
        f"mammoflow predict: error: {cell}/model.json: input.shape is [32, 32] but resolution is 16: "
        "model.json contradicts itself (edited?)"
    )


def test_plain_dicom_folder_reads_headers_and_lists_what_it_cannot_use(unlabelled, tmp_path):
    """A folder of DICOMs without a sheet: patient, side and view from the headers; a file that is not a
    DICOM at all, and a truncated one, are listed with their reasons."""
    from mammoflow.predict.inputs import read_inputs
    from mammoflow.predict.prepare import Preparation, prepare_images

    folder, broken, train = unlabelled
    plain = tmp_path / "clinic"
    shutil.copytree(folder / "test_images", plain / "exams")
    (plain / "exams/notes.dcm").write_text("not a DICOM")
    images, layout = read_inputs(plain)
    assert layout == "dicom-folder" and len(images) == len(train) + 1
    known = images[images["header_error"] == ""]
    first = train.iloc[1]
    row = known[known["image_id"].str.endswith(f"{first.image_id}.dcm")].iloc[0]
    assert (row.patient_id, row.laterality, row.view) == (str(first.patient_id), first.laterality, first.view)
    assert row.prediction_id == f"{first.patient_id}_{first.laterality}"
    assert images.loc[images["image_id"].str.endswith("notes.dcm"), "header_error"].iloc[0]

    prep = Preparation("original", RES)
    arrays, status = prepare_images(
        images, [prep], tmp_path, WORKING_SIZE, ("dicomsdl", "pydicom"), workers=2
    )
    failed = images.loc[~status["decoded"], "image_id"].tolist()
    assert sorted(failed) == sorted(["exams/notes.dcm", f"exams/{broken.patient_id}/{broken.image_id}.dcm"])
    assert status.loc[~status["decoded"], "reason"].str.len().gt(0).all()
    assert arrays[prep][status["decoded"].to_numpy()].max() > 0


def test_snakemake_target_asks_for_exactly_the_cells_it_uses(tmp_path):
    """`predict_all` on the tiny config: one predict job per folder, over the chosen resolution's cells."""
    import subprocess
    import sys

    from conftest import REPO, SNAKEMAKE_ENV

    (tmp_path / "clinic a").mkdir()
    (tmp_path / "more.yaml").write_text(
        f"predict:\n  data:\n    clinic: {tmp_path / 'clinic a'}\n  resolution: 32\n  models: [resnet18]\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "-p", "-s", str(REPO / "Snakefile"),
         "--configfile", str(REPO / "tests/config/tiny.yaml"), str(tmp_path / "more.yaml"),
         "-d", str(tmp_path), "--", "predict_all"],
        capture_output=True, text=True, timeout=300, env=SNAKEMAKE_ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "rule predict:" in out and "results/predict/clinic/submission.csv" in out
    assert "--resolution 32 --dataset processed --models resnet18" in out
    assert "results/train/clean/32/processed/resnet18/fold1/model.safetensors" in out
    assert "results/train/clean/64/processed" not in out.split("rule predict:")[1].split("rule ")[0]
