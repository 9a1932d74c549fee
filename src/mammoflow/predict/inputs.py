"""What to predict: the images of an input folder, one row each, with the path of its DICOM.

Three layouts are read:
The sample sheets are read and checked by mammoflow.samplesheet (every problem listed, one line each).

- RSNA with labels: ``train.csv`` (patient_id, image_id, laterality, view, cancer) and
  ``train_images/<patient_id>/<image_id>.dcm``; the predictions are then also an external validation;
- RSNA without labels: ``test.csv`` (the same without ``cancer``; ``prediction_id`` may be present) and
  ``test_images/<patient_id>/<image_id>.dcm``, Kaggle's test layout;
- a plain folder of DICOM files, searched recursively: patient, laterality and view come from each file's
  header (PatientID, ImageLaterality or Laterality, ViewPosition). A file whose header cannot be read is
  kept, with the reason, so that it is listed among the failures rather than lost.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mammoflow.decode import DataError
from mammoflow.samplesheet import read_sheet

# Files taken as DICOMs in a plain folder: these suffixes, or the DICM marker after the 128-byte preamble.
DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}


def _prediction_ids(table: pd.DataFrame, where: str) -> pd.Series:
    """Kaggle's breast key, patient_laterality; a given prediction_id must name one breast."""
    made = table["patient_id"].astype(str) + "_" + table["laterality"].astype(str)
    if "prediction_id" not in table.columns:
        return made
    given = table["prediction_id"].astype(str)
    per_breast = given.groupby(made).nunique()
    if (per_breast > 1).any():
        raise DataError(
            f"{where}: breast {per_breast[per_breast > 1].index[0]} has several prediction_id values"
        )
    per_id = made.groupby(given).nunique()
    if (per_id > 1).any():
        raise DataError(f"{where}: prediction_id {per_id[per_id > 1].index[0]} covers several breasts")
    return given


def read_inputs(data_dir: str | Path) -> tuple[pd.DataFrame, str]:
    """(images, layout): one row per image with image_id, patient_id, laterality, view, prediction_id,
    path, cancer (labelled layouts only), header_error (plain folders; empty when the header was read);
    layout is "rsna-train", "rsna-test" or "dicom-folder"."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: not a folder")
    for name, images, labelled in (("train.csv", "train_images", True), ("test.csv", "test_images", False)):
        csv = data_dir / name
        if csv.is_file():
            table = read_sheet(csv, labels=labelled)
            table["laterality"] = table["laterality"].astype(str)
            table["view"] = table["view"].astype(str)
            table["prediction_id"] = _prediction_ids(table, str(csv)).to_numpy()
            table["path"] = [
                str(data_dir / images / str(p) / f"{i}.dcm")
                for p, i in zip(table["patient_id"], table["image_id"], strict=True)
            ]
            table["header_error"] = ""
            layout = "rsna-train" if labelled else "rsna-test"
            return table.sort_values(["patient_id", "image_id"], kind="stable").reset_index(drop=True), layout
    return _scan_folder(data_dir), "dicom-folder"


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _scan_folder(data_dir: Path) -> pd.DataFrame:
    import pydicom

    files = sorted(p for p in data_dir.rglob("*") if p.is_file() and _is_dicom(p))
    if not files:
        raise DataError(
            f"{data_dir}: no train.csv, no test.csv and no DICOM files (*.dcm, or files with the DICM marker)"
        )
    rows = []
    for path in files:
        relative = str(path.relative_to(data_dir))
        row = {"image_id": relative, "patient_id": path.parent.name or "unknown", "laterality": "U",
               "view": "", "path": str(path), "header_error": ""}  # fmt: skip
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
            row["patient_id"] = str(header.get("PatientID", "") or row["patient_id"])
            side = str(header.get("ImageLaterality", "") or header.get("Laterality", "") or "U").upper()
            row["laterality"] = side if side in ("L", "R") else "U"
            row["view"] = str(header.get("ViewPosition", "") or "")
        except Exception as exc:  # any unreadable header: listed with its reason, never skipped
            row["header_error"] = f"header cannot be read: {' '.join(str(exc).split())[:200]}"
        rows.append(row)
    table = pd.DataFrame(rows)
    table["prediction_id"] = _prediction_ids(table, str(data_dir)).to_numpy()
    return table.sort_values(["patient_id", "image_id"], kind="stable").reset_index(drop=True)


# Kaggle's test.csv: train.csv without the labels and label-derived columns, plus prediction_id.
TEST_COLUMNS = ("site_id", "patient_id", "image_id", "laterality", "view", "age", "implant", "machine_id")


def write_test_layout(train_dir: str | Path, out_dir: str | Path) -> pd.DataFrame:
    """Copy an RSNA training-layout folder as Kaggle's test layout: ``test.csv`` without labels (with
    prediction_id) and ``test_images/`` (hard links where the file system allows, else copies)."""
    import os
    import shutil

    from mammoflow.atomic import atomic_path

    train_dir, out_dir = Path(train_dir), Path(out_dir)
    train = read_sheet(train_dir / "train.csv", labels=None)
    test = train[[c for c in TEST_COLUMNS if c in train.columns]].copy()
    test["prediction_id"] = test["patient_id"].astype(str) + "_" + test["laterality"].astype(str)
    for row in test.itertuples(index=False):
        source = train_dir / "train_images" / str(row.patient_id) / f"{row.image_id}.dcm"
        target = out_dir / "test_images" / str(row.patient_id) / f"{row.image_id}.dcm"
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target.unlink()
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
    with atomic_path(out_dir / "test.csv") as tmp:
        test.to_csv(tmp, index=False)
    return test
