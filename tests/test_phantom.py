"""Tests of the synthetic RSNA-layout data set (mammoflow.phantom)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from mammoflow.phantom import (
    LESION_COLUMNS,
    MACHINES,
    TRAIN_COLUMNS,
    ImageTask,
    PhantomSpec,
    build_catalog,
    generate,
    image_path,
    render_image,
)
from mammoflow.sections import defaults

# Tiny but complete: 6 patients cover all six scanner profiles; high prevalence and contrast so the
# lesion checks have masses and clusters to look at.
SPEC = PhantomSpec.configured(
    patients=6, prevalence=0.5, seed=11, size_scale=0.08, mass_contrast=0.5, calcification_fraction=0.5
)
MACHINE = {m.machine_id: m for m in MACHINES}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("phantom")
    frame = generate(out, SPEC, workers=1, progress=False)
    return out, frame


@pytest.fixture(scope="module")
def tasks() -> list[ImageTask]:
    return build_catalog(SPEC)[1]


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _display(pixels: np.ndarray, photometric: str, bits: int) -> np.ndarray:
    """0..1 with bright = dense, whatever the photometric interpretation."""
    x = pixels.astype(np.float64) / (2**bits - 1)
    return 1.0 - x if photometric == "MONOCHROME1" else x


def _read_display(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return _display(ds.pixel_array, ds.PhotometricInterpretation, ds.BitsStored)


# ------------------------------------------------------------------------------------------ layout


def test_layout_and_columns(dataset: tuple[Path, pd.DataFrame]) -> None:
    out, frame = dataset
    on_disk = pd.read_csv(out / "train.csv")
    assert list(on_disk.columns) == list(TRAIN_COLUMNS)
    assert list(frame.columns) == list(TRAIN_COLUMNS)
    assert list(pd.read_csv(out / "lesions.csv").columns) == list(LESION_COLUMNS)
    assert len(on_disk) == 4 * SPEC.patients
    files = sorted((out / "train_images").rglob("*.dcm"))
    assert len(files) == len(on_disk)
    for row in on_disk.itertuples():
        assert image_path(out, row.patient_id, row.image_id).is_file()
    assert not [p for p in out.rglob("*") if ".tmp" in p.name], "temporary files left behind"
    assert set(on_disk["difficult_negative_case"].unique()) <= {True, False}
    assert (on_disk["prediction_id"] == on_disk["patient_id"].astype(str) + "_" + on_disk["laterality"]).all()
    assert on_disk["age"].between(40, 89).all()
    assert set(on_disk["density"].dropna()) <= set("ABCD")
    assert set(on_disk["BIRADS"].dropna()) <= {0, 1, 2}


def test_four_images_per_patient(dataset: tuple[Path, pd.DataFrame]) -> None:
    frame = dataset[1]
    for _, group in frame.groupby("patient_id"):
        assert list(zip(group["laterality"], group["view"], strict=True)) == [
            ("L", "CC"),
            ("L", "MLO"),
            ("R", "CC"),
            ("R", "MLO"),
        ]
        assert group["machine_id"].nunique() == 1 and group["age"].nunique() == 1
    assert frame["image_id"].is_unique
    assert frame["patient_id"].between(10_000, 99_999).all()
    assert frame["image_id"].between(1, 9_999_999_999).all()


def test_breast_level_labels(dataset: tuple[Path, pd.DataFrame]) -> None:
    frame = dataset[1]
    per_breast = frame.groupby(["patient_id", "laterality"])
    for column in ("cancer", "biopsy", "invasive", "BIRADS", "difficult_negative_case"):
        assert (per_breast[column].nunique(dropna=False) == 1).all(), column
    positive_breasts = frame[frame["cancer"] == 1].groupby("patient_id")["laterality"].nunique()
    assert (positive_breasts == 1).all(), "cancer must be in exactly one breast"
    assert (frame.loc[frame["cancer"] == 1, "biopsy"] == 1).all()
    assert (frame.loc[frame["cancer"] == 0, "invasive"] == 0).all()
    difficult = frame[frame["difficult_negative_case"]]
    assert (difficult["cancer"] == 0).all() and (difficult["biopsy"] == 1).all()


@pytest.mark.parametrize(
    ("patients", "prevalence", "expected"),
    [(6, 0.1, 1), (40, 0.1, 4), (10, 0.0, 0), (2, 0.9, 1), (5, 1.0, 4), (30, 0.02, 1)],
)
def test_prevalence_count(patients: int, prevalence: float, expected: int) -> None:
    frame, _ = build_catalog(
        PhantomSpec.configured(patients=patients, prevalence=prevalence, size_scale=0.05)
    )
    positives = frame.loc[frame["cancer"] == 1, "patient_id"].nunique()
    assert positives == expected
    assert frame["patient_id"].nunique() - positives >= 1


def test_positive_images_have_lesions_and_only_they(dataset: tuple[Path, pd.DataFrame]) -> None:
    out, frame = dataset
    lesions = pd.read_csv(out / "lesions.csv")
    positive_ids = set(frame.loc[frame["cancer"] == 1, "image_id"])
    assert set(lesions["image_id"]) == positive_ids
    assert set(lesions["kind"]) == {"mass", "calcification"}, "test spec should produce both kinds"
    merged = lesions.merge(frame, on=["image_id", "patient_id", "laterality", "view"], how="left")
    assert (merged["cancer"] == 1).all()


# ----------------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_any_worker_count(dataset: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    reference = _tree_digest(dataset[0])
    generate(tmp_path / "again", SPEC, workers=1, progress=False)
    assert _tree_digest(tmp_path / "again") == reference
    generate(tmp_path / "pool", SPEC, workers=2, progress=False)
    assert _tree_digest(tmp_path / "pool") == reference


def test_different_seed_differs(dataset: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    other = generate(tmp_path / "other", dataclasses.replace(SPEC, seed=SPEC.seed + 1), progress=False)
    assert not set(other["image_id"]) & set(dataset[1]["image_id"])
    a = _read_display(next((dataset[0] / "train_images").rglob("*.dcm")))
    b = _read_display(next((tmp_path / "other" / "train_images").rglob("*.dcm")))
    assert a.shape != b.shape or not np.array_equal(a, b)


# ---------------------------------------------------------------------------------------- headers


def test_every_profile_present(dataset: tuple[Path, pd.DataFrame]) -> None:
    out, frame = dataset
    assert set(frame["machine_id"]) == set(MACHINE)
    syntaxes, photometrics = set(), set()
    for path in (out / "train_images").rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        syntaxes.add(ds.file_meta.TransferSyntaxUID)
        photometrics.add(ds.PhotometricInterpretation)
    assert syntaxes == {
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.1",
    }
    assert photometrics == {"MONOCHROME1", "MONOCHROME2"}


def test_headers(dataset: tuple[Path, pd.DataFrame]) -> None:
    out, frame = dataset
    for row in frame.itertuples():
        m = MACHINE[row.machine_id]
        ds = pydicom.dcmread(image_path(out, row.patient_id, row.image_id), stop_before_pixels=True)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.2"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.Modality == "MG" and ds.BodyPartExamined == "BREAST"
        assert ds.PatientID == str(row.patient_id)
        assert (ds.ImageLaterality, ds.ViewPosition) == (row.laterality, row.view)
        assert ds.Manufacturer == m.manufacturer
        assert (ds.Rows, ds.Columns) == m.size(SPEC.size_scale)
        assert float(ds.PixelSpacing[0]) == pytest.approx(m.spacing_mm / SPEC.size_scale, rel=1e-4)
        assert float(ds.ImagerPixelSpacing[1]) == pytest.approx(m.spacing_mm / SPEC.size_scale, rel=1e-4)
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, m.bits_stored, m.bits_stored - 1)
        assert ds.PixelRepresentation == 0 and ds.SamplesPerPixel == 1
        assert ds.PhotometricInterpretation == m.photometric
        assert ds.PresentationIntentType == "FOR PRESENTATION"
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, 0.0)
        assert ds.get("VOILUTFunction") == m.voi_function
        if m.n_windows == 0:
            assert "WindowCenter" not in ds and "WindowWidth" not in ds
            continue
        centres, widths = ds["WindowCenter"], ds["WindowWidth"]
        explanations = ds["WindowCenterWidthExplanation"]
        assert m.n_windows == centres.VM == widths.VM == explanations.VM


def test_uids_distinct_and_study_per_patient(dataset: tuple[Path, pd.DataFrame]) -> None:
    out, frame = dataset
    sops, studies = set(), {}
    for row in frame.itertuples():
        ds = pydicom.dcmread(image_path(out, row.patient_id, row.image_id), stop_before_pixels=True)
        sops.add(ds.SOPInstanceUID)
        studies.setdefault(row.patient_id, set()).add(ds.StudyInstanceUID)
    assert len(sops) == len(frame)
    assert all(len(s) == 1 for s in studies.values())
    assert len({next(iter(s)) for s in studies.values()}) == SPEC.patients


def test_lossless_round_trip(dataset: tuple[Path, pd.DataFrame], tasks: list[ImageTask]) -> None:
    out = dataset[0]
    for machine in MACHINES:
        task = next(t for t in tasks if t.machine_id == machine.machine_id)
        ds = pydicom.dcmread(image_path(out, task.patient_id, task.image_id))
        decoded = ds.pixel_array
        expected = render_image(SPEC, task).pixels
        assert decoded.dtype == np.uint16
        np.testing.assert_array_equal(decoded, expected, err_msg=str(machine.machine_id))
        assert int(decoded.max()) <= 2**machine.bits_stored - 1


def test_first_window_brackets_breast_tissue(tasks: list[ImageTask]) -> None:
    for task in tasks:
        m = task.machine
        image = render_image(SPEC, task)
        if not image.windows:
            continue
        centre, width = image.windows[0]
        if m.photometric == "MONOCHROME1":
            centre = m.max_value - centre
        values = image.pixels.astype(np.float64)
        if m.photometric == "MONOCHROME1":
            values = m.max_value - values
        tissue = np.percentile(values[image.breast_mask], [5, 50, 95])
        low, high = centre - width / 2, centre + width / 2
        assert low <= tissue[0] and tissue[2] <= high, (task.index, low, high, tissue)
        assert width < 0.75 * m.max_value, "window must be narrower than the stored range"
        air = np.median(values[~image.breast_mask])
        assert air < low + 0.1 * width, "air should fall at or below the bottom of the window"


# ---------------------------------------------------------------------------------------- anatomy


def test_chest_wall_side_follows_laterality(dataset: tuple[Path, pd.DataFrame]) -> None:
    out, frame = dataset
    for row in frame.itertuples():
        img = _read_display(image_path(out, row.patient_id, row.image_id))
        third = img.shape[1] // 3
        left, right = np.median(img[:, :third]), np.median(img[:, -third:])
        chest, far = (left, right) if row.laterality == "L" else (right, left)
        # Ratio and difference: the darkest profile (Siemens, 16 bit) keeps fat near 0.17 of full range.
        assert chest > 2 * far and chest - far > 0.08, (row.image_id, row.laterality, chest, far)


def _corner_means(img: np.ndarray, laterality: str) -> tuple[float, float]:
    """Mean of the upper and of the lower chest-wall corner."""
    h, w = img.shape
    cols = slice(0, w // 8) if laterality == "L" else slice(w - w // 8, w)
    return float(img[: h // 8, cols].mean()), float(img[h - h // 5 :, cols].mean())


def test_pectoral_muscle_on_mlo_only(dataset: tuple[Path, pd.DataFrame], tasks: list[ImageTask]) -> None:
    out, frame = dataset
    for row, task in zip(frame.itertuples(), tasks, strict=True):
        img = _read_display(image_path(out, row.patient_id, row.image_id))
        upper, lower = _corner_means(img, row.laterality)
        image = render_image(SPEC, task)
        pectoral = image.pectoral_mask
        tissue_p90 = np.percentile(img[image.breast_mask & ~pectoral], 90)
        if row.view == "MLO":
            assert pectoral.any()
            assert upper > lower + 0.1, (row.image_id, upper, lower)
            # The muscle fills the corner and is brighter than the glandular tissue beside it.
            assert upper > tissue_p90, (row.image_id, upper, tissue_p90)
            assert np.median(img[pectoral]) > tissue_p90
        else:
            assert not pectoral.any()
            assert upper < tissue_p90, (row.image_id, upper, tissue_p90)


def test_density_is_visible(tasks: list[ImageTask]) -> None:
    task = next(t for t in tasks if t.view == "CC" and not t.lesions)
    means = []
    for density in "ABCD":
        image = render_image(SPEC, dataclasses.replace(task, density=density))
        values = _display(image.pixels, task.machine.photometric, task.machine.bits_stored)
        means.append(float(values[image.breast_mask].mean()))
    assert means == sorted(means)
    assert means[3] - means[0] > 0.05, means


def test_bright_annotations_outside_breast(
    dataset: tuple[Path, pd.DataFrame], tasks: list[ImageTask]
) -> None:
    out, frame = dataset
    for row, task in zip(frame.itertuples(), tasks, strict=True):
        img = _read_display(image_path(out, row.patient_id, row.image_id))
        outside = ~render_image(SPEC, task).breast_mask
        saturated = (img >= 1.0 - 1e-9) & outside  # burned-in text
        assert saturated.sum() >= 10, row.image_id
        air = np.median(img[outside])
        bright = (img > air + 0.25) & outside  # text, marker and (bright or mid-grey) collimator strip
        assert bright.sum() > 0.01 * img.size, row.image_id
        # Text sits on the side away from the chest wall.
        cols = np.flatnonzero(saturated.any(axis=0))
        far_half = cols >= img.shape[1] // 2 if row.laterality == "L" else cols < img.shape[1] // 2
        assert far_half.all(), row.image_id


# ---------------------------------------------------------------------------------------- lesions


def test_lesion_boxes_inside_breast(dataset: tuple[Path, pd.DataFrame], tasks: list[ImageTask]) -> None:
    out = dataset[0]
    lesions = pd.read_csv(out / "lesions.csv")
    by_id = {t.image_id: t for t in tasks}
    for box in lesions.itertuples():
        task = by_id[box.image_id]
        image = render_image(SPEC, task)
        h, w = image.pixels.shape
        assert 0 <= box.x0 < box.x1 <= w and 0 <= box.y0 < box.y1 <= h
        region = (slice(box.y0, box.y1), slice(box.x0, box.x1))
        assert image.breast_mask[region].all(), box
        assert not image.pectoral_mask[region].any(), box


def test_lesion_box_is_where_the_lesion_is(tasks: list[ImageTask]) -> None:
    seen = set()
    for task in (t for t in tasks if t.lesions):
        with_lesion = render_image(SPEC, task).pixels.astype(np.int64)
        without = render_image(SPEC, task, with_lesions=False).pixels.astype(np.int64)
        changed = with_lesion != without
        boxes = render_image(SPEC, task).boxes
        inside = np.zeros_like(changed)
        for kind, x0, y0, x1, y1 in boxes:
            inside[y0:y1, x0:x1] = True
            seen.add(kind)
            box_changed = changed[y0:y1, x0:x1]
            assert box_changed.any(), (task.index, kind)
            # Tight box: the changed pixels reach (nearly) every side of it.
            rows, cols = np.flatnonzero(box_changed.any(axis=1)), np.flatnonzero(box_changed.any(axis=0))
            assert rows[0] <= 2 and rows[-1] >= y1 - y0 - 3 and cols[0] <= 2 and cols[-1] >= x1 - x0 - 3
        assert not (changed & ~inside).any(), "lesion leaks outside its box"
        sign = -1 if task.machine.photometric == "MONOCHROME1" else 1
        assert (sign * (with_lesion - without))[changed].mean() > 0, "lesions must be brighter"
    assert seen == {"mass", "calcification"}


def test_lesion_brighter_than_surrounding_ring(dataset: tuple[Path, pd.DataFrame]) -> None:
    out = dataset[0]
    lesions = pd.read_csv(out / "lesions.csv")
    for box in lesions.itertuples():
        img = _read_display(image_path(out, box.patient_id, box.image_id))
        pad = max(3, (box.x1 - box.x0) // 2)
        ring = np.zeros(img.shape, bool)
        ring[max(0, box.y0 - pad) : box.y1 + pad, max(0, box.x0 - pad) : box.x1 + pad] = True
        ring[box.y0 : box.y1, box.x0 : box.x1] = False
        inside = img[box.y0 : box.y1, box.x0 : box.x1]
        if box.kind == "mass":
            cy, cx = inside.shape[0] // 2, inside.shape[1] // 2
            core = inside[cy - cy // 2 : cy + cy // 2 + 1, cx - cx // 2 : cx + cx // 2 + 1]
            assert core.mean() > np.median(img[ring]), box
        else:
            assert inside.max() > np.percentile(img[ring], 99), box


def test_both_views_place_lesion_at_similar_depth(dataset: tuple[Path, pd.DataFrame]) -> None:
    out, frame = dataset
    lesions = pd.read_csv(out / "lesions.csv")
    width = frame.set_index("image_id")["machine_id"].map(lambda mid: MACHINE[mid].size(SPEC.size_scale)[1])
    for (_, _, kind), group in lesions.groupby(["patient_id", "laterality", "kind"]):
        assert sorted(group["view"]) == ["CC", "MLO"], kind
        depths = []
        for box in group.itertuples():
            w = width[box.image_id]
            centre = (box.x0 + box.x1) / 2
            depths.append((centre if box.laterality == "L" else w - centre) / w)
        assert abs(depths[0] - depths[1]) < 0.2, (kind, depths)


# ------------------------------------------------------------------------------------------- spec


def test_from_config() -> None:
    spec = PhantomSpec.configured(patients=3, mass_diameter_mm=[4, 8], seed=5)
    assert spec.patients == 3 and spec.mass_diameter_mm == (4, 8) and spec.seed == 5
    assert spec.prevalence == defaults("phantom")["prevalence"]  # the rest: config.yaml's
    with pytest.raises(ValueError, match="colour"):
        PhantomSpec.configured(patients=3, colour="red")
    with pytest.raises(ValueError, match=r"phantom\.prevalence: 1\.5 is greater than the maximum of 1"):
        PhantomSpec.configured(prevalence=1.5)
