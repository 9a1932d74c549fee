"""The report's data audit and leakage audit, on a hand-made results folder whose counts are known.

Six patients, two images each (image_id = 10 * patient + 1 or 2); positives 11, 21, 41, 51. The clean
folds put patients 1-3 in fold 0 and 4-6 in fold 1, so fold 0 validates positives 11 and 21, and the
fold-0 GAN (trained on the other fold's positives) saw 41 and 51.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mammoflow.report.audit import (
    CHECK_GAN,
    CHECK_PATIENTS,
    CHECK_SYNTHETIC,
    PATIENTS_PER_CLASS,
    AuditError,
    data_audit,
    leakage_audit,
    leakage_summary,
    leakage_table,
)

PATIENTS = [1, 2, 3, 4, 5, 6]
POSITIVES = {11, 21, 41, 51}
K = 2


def index_frame() -> pd.DataFrame:
    rows = []
    for patient in PATIENTS:
        for j, laterality in ((1, "L"), (2, "R")):
            image = 10 * patient + j
            rows.append((image, patient, laterality, "CC", int(image in POSITIVES)))
    return pd.DataFrame(rows, columns=["image_id", "patient_id", "laterality", "view", "cancer"])


def clean_folds(index: pd.DataFrame) -> pd.DataFrame:
    folds = index[["image_id", "patient_id", "cancer"]].copy()
    folds["protocol"] = "clean"
    folds["fold"] = (folds["patient_id"] > 3).astype(int)
    return folds


def write(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)


def predictions_of(folds: pd.DataFrame, fold: int) -> pd.DataFrame:
    valid = folds[folds["fold"] == fold].copy()
    valid["laterality"], valid["view"], valid["source"], valid["probability"] = "L", "CC", "real", 0.5
    return valid[["image_id", "patient_id", "laterality", "view", "cancer", "source", "fold", "probability"]]


def synthetic_manifest(fold: int, n: int = 3) -> pd.DataFrame:
    ids = [9_000_000_000 + 100_000_000 * (fold + 1) + i for i in range(n)]
    return pd.DataFrame(
        {
            "row": range(n),
            "image_id": ids,
            "patient_id": [-(i - 9_000_000_000 + 1) for i in ids],
            "laterality": "L",
            "view": "SYN",
            "cancer": 1,
            "source": "synthetic",
        }
    )


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A clean run: folds grouped by patient, a GAN per fold, synthetic images only in training."""
    root = tmp_path / "results"
    index = index_frame()
    folds = clean_folds(index)
    write(index, root / "decoded" / "index.parquet")
    write(
        pd.DataFrame(
            {
                "image_id": [70, 71, 80],
                "patient_id": [7, 7, 8],
                "path": ["train_images/7/70.dcm", "train_images/7/71.dcm", "train_images/8/80.dcm"],
                "reason": ["truncated pixel data", "truncated pixel data", "unsupported transfer syntax"],
            }
        ),
        root / "decoded" / "errors.parquet",
    )
    write(folds, root / "data" / "folds.parquet")
    for fold in range(K):
        training = sorted(i for i in POSITIVES if folds.set_index("image_id").loc[i, "fold"] != fold)
        for stage in (16, 32):
            write(
                pd.DataFrame({"image_id": training, "shown": 5}),
                root / "gan" / "clean" / f"fold{fold}" / f"stage{stage}" / "training_images.parquet",
            )
        write(
            synthetic_manifest(fold), root / "synthetic" / "clean" / "32" / f"fold{fold}" / "manifest.parquet"
        )
        cell = root / "train" / "clean" / "32" / "augmented" / "resnet18" / f"fold{fold}"
        write(predictions_of(folds, fold), cell / "predictions.parquet")
    return root


def by_check(frame: pd.DataFrame, protocol: str, fold: int, check: str) -> pd.Series:
    row = frame[(frame["protocol"] == protocol) & (frame["fold"] == fold) & (frame["check"] == check)]
    assert len(row) == 1
    return row.iloc[0]


# ------------------------------------------------------------------------------------------- data audit


def test_data_audit_counts_classes_folds_and_errors(results: Path) -> None:
    audit = data_audit(results)
    classes = audit.classes.set_index("class")
    assert classes.loc["cancer", "images"] == 4 and classes.loc["cancer", PATIENTS_PER_CLASS] == 4
    assert classes.loc["normal", "images"] == 8 and classes.loc["normal", PATIENTS_PER_CLASS] == 6
    assert classes.loc["total", "images"] == 12 and classes.loc["total", PATIENTS_PER_CLASS] == 6

    assert list(audit.decode_errors.columns) == ["image_id", "patient_id", "path", "reason"]
    assert sorted(audit.decode_errors["image_id"]) == [70, 71, 80]
    reasons = dict(zip(audit.reasons["reason"], audit.reasons["count"], strict=True))
    assert reasons == {"truncated pixel data": 2, "unsupported transfer syntax": 1}
    assert audit.reasons["reason"].iloc[0] == "truncated pixel data"  # most frequent first

    balance = audit.fold_balance.set_index(["protocol", "fold"])
    assert list(audit.fold_balance.columns) == [
        "protocol",
        "fold",
        "images",
        "positives",
        "positive_rate",
        "patients",
    ]
    for fold in range(K):
        row = balance.loc[("clean", fold)]
        assert (row["images"], row["positives"], row["patients"]) == (6, 2, 3)
        assert row["positive_rate"] == pytest.approx(2 / 6, abs=1e-4)
    notes = " ".join(audit.notes)
    assert "3 files (2 patients) could not be decoded" in notes
    assert "4 patients have both cancer and normal images" in notes


def test_data_audit_without_errors_file_notes_it(results: Path) -> None:
    (results / "decoded" / "errors.parquet").unlink()
    audit = data_audit(results)
    assert audit.decode_errors.empty
    assert list(audit.decode_errors.columns) == ["image_id", "patient_id", "path", "reason"]
    assert audit.reasons.empty and list(audit.reasons.columns) == ["reason", "count"]
    assert any("errors.parquet was not found" in note for note in audit.notes)


def test_data_audit_with_empty_errors_file(results: Path) -> None:
    # decode writes an empty frame whose text columns come back as float64
    empty = pd.DataFrame({"image_id": pd.Series(dtype="int64"), "patient_id": pd.Series(dtype="int64")})
    empty["path"], empty["reason"] = pd.Series(dtype="float64"), pd.Series(dtype="float64")
    write(empty, results / "decoded" / "errors.parquet")
    audit = data_audit(results)
    assert audit.decode_errors.empty and audit.reasons.empty
    assert any("no decode errors" in note for note in audit.notes)


@pytest.mark.parametrize("missing", ["decoded/index.parquet", "data/folds.parquet"])
def test_missing_index_or_folds_names_the_file(results: Path, missing: str) -> None:
    (results / missing).unlink()
    with pytest.raises(AuditError, match=re.escape(missing.split("/")[-1])):
        data_audit(results)
    if missing == "data/folds.parquet":
        with pytest.raises(AuditError, match=r"folds\.parquet"):
            leakage_audit(results, ["clean"], K)


# ---------------------------------------------------------------------------------------- leakage audit


def test_clean_run_passes_every_check(results: Path) -> None:
    frame = leakage_audit(results, ["clean"], K)
    assert list(frame.columns) == ["protocol", "fold", "check", "count", "examples", "status", "evidence"]
    assert len(frame) == K * 3
    assert (frame["status"] == "clean").all(), frame
    assert (frame["count"] == 0).all()
    assert (frame["examples"] == "").all()
    synthetic = by_check(frame, "clean", 0, CHECK_SYNTHETIC)
    assert "predictions of 1 augmented cells (32/resnet18)" in synthetic["evidence"]
    assert "gan/clean/fold0 (stages 16, 32" in by_check(frame, "clean", 0, CHECK_GAN)["evidence"]
    summary = leakage_summary(frame)
    assert list(summary["verdict"]) == ["clean"] * 3
    assert list(summary["folds checked"]) == [2, 2, 2]


def test_patient_spanning_folds_is_flagged(results: Path) -> None:
    folds = pd.read_parquet(results / "data" / "folds.parquet")
    # patients 1 and 3 get one image each in fold 1: fold 0 validates both and trains on their other image
    folds.loc[folds["image_id"].isin([12, 32]), "fold"] = 1
    write(folds, results / "data" / "folds.parquet")
    frame = leakage_audit(results, ["clean"], K)
    for fold in range(K):
        row = by_check(frame, "clean", fold, CHECK_PATIENTS)
        assert (row["count"], row["examples"], row["status"]) == (2, "1, 3", "LEAK")
    summary = leakage_summary(frame).set_index("check")
    assert summary.loc[CHECK_PATIENTS, "folds with leak"] == 2
    assert summary.loc[CHECK_PATIENTS, "total count (sum over folds)"] == 4
    assert summary.loc[CHECK_PATIENTS, "verdict"] == "LEAK"
    assert summary.loc[CHECK_SYNTHETIC, "verdict"] == "clean"


def test_synthetic_row_in_validation_predictions_is_flagged(results: Path) -> None:
    path = results / "train" / "clean" / "32" / "augmented" / "resnet18" / "fold1" / "predictions.parquet"
    predictions = pd.read_parquet(path)
    planted = predictions.iloc[[0]].assign(
        image_id=9_200_000_000, patient_id=-200_000_001, source="synthetic", cancer=1, view="SYN"
    )
    write(pd.concat([predictions, planted], ignore_index=True), path)
    frame = leakage_audit(results, ["clean"], K)
    row = by_check(frame, "clean", 1, CHECK_SYNTHETIC)
    assert (row["count"], row["examples"], row["status"]) == (1, "9200000000", "LEAK")
    assert by_check(frame, "clean", 0, CHECK_SYNTHETIC)["status"] == "clean"
    summary = leakage_summary(frame).set_index("check")
    assert summary.loc[CHECK_SYNTHETIC, "folds with leak"] == 1
    assert summary.loc[CHECK_SYNTHETIC, "total count (sum over folds)"] == 1


def test_gan_training_image_in_validation_is_flagged(results: Path) -> None:
    # stage 32 of the fold-0 GAN also trained on 11 and 21, positives that fold 0 validates
    path = results / "gan" / "clean" / "fold0" / "stage32" / "training_images.parquet"
    seen = pd.read_parquet(path)
    write(pd.concat([seen, pd.DataFrame({"image_id": [21, 11], "shown": [1, 1]})]), path)
    frame = leakage_audit(results, ["clean"], K)
    row = by_check(frame, "clean", 0, CHECK_GAN)
    assert (row["count"], row["examples"], row["status"]) == (2, "11, 21", "LEAK")
    assert by_check(frame, "clean", 1, CHECK_GAN)["status"] == "clean"


def test_examples_show_at_most_three_ids(results: Path) -> None:
    folds = pd.read_parquet(results / "data" / "folds.parquet")
    folds.loc[folds["image_id"].isin([12, 22, 32, 42, 52]), "fold"] ^= 1  # every patient but 6 spans
    write(folds, results / "data" / "folds.parquet")
    row = by_check(leakage_audit(results, ["clean"], K), "clean", 0, CHECK_PATIENTS)
    assert row["count"] == 5
    assert row["examples"] == "1, 2, 3, …"


def test_missing_gan_and_augmented_inputs_are_not_run(results: Path) -> None:
    for name in ("gan", "synthetic", "train"):
        shutil.rmtree(results / name)
    frame = leakage_audit(results, ["clean"], K)
    for fold in range(K):
        assert by_check(frame, "clean", fold, CHECK_PATIENTS)["status"] == "clean"
        for check in (CHECK_SYNTHETIC, CHECK_GAN):
            row = by_check(frame, "clean", fold, check)
            assert row["status"] == "not run" and pd.isna(row["count"])
    summary = leakage_summary(frame).set_index("check")
    assert summary.loc[CHECK_SYNTHETIC, "verdict"] == "not run"
    assert summary.loc[CHECK_GAN, "folds checked"] == 0
    # a protocol absent from folds.parquet: nothing can be checked
    paper = leakage_audit(results, ["paper"], K)
    assert (paper["status"] == "not run").all()


def test_synthetic_check_falls_back_to_manifests(results: Path) -> None:
    shutil.rmtree(results / "train")
    frame = leakage_audit(results, ["clean"], K)
    row = by_check(frame, "clean", 0, CHECK_SYNTHETIC)
    assert row["status"] == "clean"
    assert "synthetic manifests (synthetic/clean/32/fold0)" in row["evidence"]
    assert "no fold column" in row["evidence"]
    # a manifest with a fold column sends its fold-k rows to fold k's validation
    path = results / "synthetic" / "clean" / "32" / "fold1" / "manifest.parquet"
    write(synthetic_manifest(1).assign(fold=[0, 1, 1]), path)
    row = by_check(leakage_audit(results, ["clean"], K), "clean", 1, CHECK_SYNTHETIC)
    assert (row["count"], row["examples"], row["status"]) == (2, "9200000001, 9200000002", "LEAK")


def test_paper_protocol_leaks_in_memory() -> None:
    """The paper's design, on frames: image-level folds, one GAN on every positive, synthetic images split
    with the real ones (and scored at two resolutions under the same ids)."""
    index = index_frame()
    folds = index[["image_id", "patient_id", "cancer"]].assign(protocol="paper")
    folds["fold"] = (folds["image_id"] % 10 == 2).astype(int)  # each patient's L image in fold 0, R in 1
    manifest = synthetic_manifest(-1, n=4).assign(fold=[0, 1, 0, 1])
    predictions, gan_seen = {}, {}
    for fold in range(K):
        scored = manifest[manifest["fold"] == fold]
        real = folds[folds["fold"] == fold].assign(source="real")
        cells = [
            pd.concat([real, scored], ignore_index=True).assign(resolution=res, cell=f"{res}/resnet18")
            for res in (32, 64)
        ]
        predictions[("paper", fold)] = pd.concat(cells, ignore_index=True)
        gan_seen[("paper", fold)] = pd.DataFrame({"image_id": sorted(POSITIVES), "stage": 16})
    frame = leakage_table(folds, ["paper"], K, predictions=predictions, gan_seen=gan_seen)
    assert list(frame["status"]) == ["LEAK"] * 5 + ["clean"]  # fold 1 validates no positive
    row = by_check(frame, "paper", 0, CHECK_PATIENTS)
    assert (row["count"], row["examples"]) == (6, "1, 2, 3, …")
    row = by_check(frame, "paper", 0, CHECK_SYNTHETIC)
    assert row["count"] == 4  # 2 ids x 2 resolutions
    assert row["examples"] == "9000000000, 9000000002"
    assert "2 distinct ids at 2 resolutions" in row["evidence"]
    # fold 0 (L images) validates positives 11, 21, 41, 51: all seen by the GAN; fold 1 validates none
    assert by_check(frame, "paper", 0, CHECK_GAN)["count"] == 4
    gan1 = by_check(frame, "paper", 1, CHECK_GAN)
    assert (gan1["count"], gan1["status"]) == (0, "clean")
    summary = leakage_summary(frame).set_index("check")
    assert summary.loc[CHECK_PATIENTS, "total count (sum over folds)"] == 12
    assert summary.loc[CHECK_GAN, "folds with leak"] == 1
    assert summary.loc[CHECK_GAN, "verdict"] == "LEAK"
