"""The RSNA writer: For-Presentation MG DICOM headers, one file per image, train.csv and lesions.csv."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import pandas as pd
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from tqdm import tqdm

from mammoflow.phantom.catalog import LESION_COLUMNS, ImageTask, PhantomSpec, build_catalog
from mammoflow.phantom.encoding import attach_pixels
from mammoflow.phantom.render import RenderedImage, render_image
from mammoflow.phantom.scanners import Machine

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
_WINDOW_NAMES = ("NORMAL", "HARDER", "SOFTER")


def _uid(spec: PhantomSpec, *parts: object) -> str:
    return generate_uid(entropy_srcs=["mammoflow-phantom", str(spec.seed), *map(str, parts)])


_ORIENTATION = {
    ("L", "CC"): ["A", "R"],
    ("R", "CC"): ["P", "L"],
    ("L", "MLO"): ["A", "FR"],
    ("R", "MLO"): ["P", "FL"],
}


def _ds_number(x: float) -> str:
    return f"{x:.6g}"


def build_dataset(spec: PhantomSpec, task: ImageTask, image: RenderedImage) -> Dataset:
    """Header of one For-Presentation MG image (pixel data not yet attached)."""
    m = task.machine
    sop_uid = _uid(spec, "image", task.image_id)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MG_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = MG_FOR_PRESENTATION
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = task.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "093000"
    ds.AccessionNumber = str(task.patient_id)
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = m.manufacturer
    ds.ManufacturerModelName = m.model
    ds.InstitutionName = f"PHANTOM SITE {m.site_id}"
    ds.PatientName = f"PHANTOM^{task.patient_id}"
    ds.PatientID = str(task.patient_id)
    ds.PatientSex = "F"
    ds.PatientAge = f"{task.age:03d}Y"
    ds.BodyPartExamined = "BREAST"
    ds.ViewPosition = task.view
    ds.StudyInstanceUID = _uid(spec, "study", task.patient_id)
    ds.SeriesInstanceUID = _uid(spec, "series", task.patient_id, task.laterality, task.view)
    ds.StudyID = "1"
    ds.SeriesNumber = 1 + 2 * (task.laterality == "R") + (task.view == "MLO")
    ds.InstanceNumber = 1
    ds.PatientOrientation = _ORIENTATION[(task.laterality, task.view)]
    ds.ImageLaterality = task.laterality
    ds.BurnedInAnnotation = "YES"
    _pixel_module(ds, m, image)
    return ds


def _pixel_module(ds: Dataset, m: Machine, image: RenderedImage) -> None:
    rows, cols = image.pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = m.photometric
    ds.Rows, ds.Columns = rows, cols
    spacing = [_ds_number(image.spacing_mm)] * 2
    ds.PixelSpacing = spacing
    ds.ImagerPixelSpacing = spacing
    ds.BitsAllocated = 16
    ds.BitsStored = m.bits_stored
    ds.HighBit = m.bits_stored - 1
    ds.PixelRepresentation = 0
    # Log-like intensities; the sign tells which way "more attenuation" goes in stored units.
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1 if m.photometric == "MONOCHROME1" else -1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    if image.windows:
        centres = [str(c) for c, _ in image.windows]
        widths = [str(w) for _, w in image.windows]
        ds.WindowCenter = centres if len(centres) > 1 else centres[0]
        ds.WindowWidth = widths if len(widths) > 1 else widths[0]
        names = list(_WINDOW_NAMES[: len(centres)])
        ds.WindowCenterWidthExplanation = names if len(names) > 1 else names[0]
    if m.voi_function:
        ds.VOILUTFunction = m.voi_function
    ds.LossyImageCompression = "00"


def _write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def image_path(out_dir: Path, patient_id: int, image_id: int) -> Path:
    return Path(out_dir) / "train_images" / str(patient_id) / f"{image_id}.dcm"


def _render_and_write(job: tuple[PhantomSpec, ImageTask, str]) -> list[tuple[str, int, int, int, int]]:
    """Worker (top-level so "spawn" pools can import it): render, encode, write; returns lesion boxes."""
    spec, task, out_dir = job
    image = render_image(spec, task)
    ds = build_dataset(spec, task, image)
    attach_pixels(ds, task.machine, image.pixels)
    path = image_path(Path(out_dir), task.patient_id, task.image_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, lambda p: ds.save_as(p, enforce_file_format=True))
    return image.boxes


def _init_worker() -> None:
    cv2.setNumThreads(1)  # workers already use every core; nested threads only thrash


def _run_jobs(
    jobs: list[tuple[PhantomSpec, ImageTask, str]], workers: int, progress: bool
) -> list[list[tuple[str, int, int, int, int]]]:
    bar = tqdm(total=len(jobs), desc="phantom", unit="img", disable=not progress)
    results = []
    try:
        if workers <= 1:
            for job in jobs:
                results.append(_render_and_write(job))
                bar.update()
        else:
            with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
                for boxes in pool.imap(_render_and_write, jobs, chunksize=1):
                    results.append(boxes)
                    bar.update()
    finally:
        bar.close()
    return results


def _lesion_frame(tasks: list[ImageTask], boxes: list[list[tuple[str, int, int, int, int]]]) -> pd.DataFrame:
    rows = [
        dict(
            image_id=t.image_id,
            patient_id=t.patient_id,
            laterality=t.laterality,
            view=t.view,
            kind=kind,
            x0=x0,
            y0=y0,
            x1=x1,
            y1=y1,
        )
        for t, image_boxes in zip(tasks, boxes, strict=True)
        for kind, x0, y0, x1, y1 in image_boxes
    ]
    return pd.DataFrame(rows, columns=list(LESION_COLUMNS))


def generate(out_dir: Path, spec: PhantomSpec, workers: int = 1, progress: bool = True) -> pd.DataFrame:
    """Writes out_dir/train.csv, out_dir/train_images/<patient_id>/<image_id>.dcm, out_dir/lesions.csv.

    Returns the train.csv frame. Images are written first, each under a temporary name then renamed;
    the CSVs come last, so a killed run never leaves a data set that looks complete.
    """
    out_dir = Path(out_dir)
    (out_dir / "train_images").mkdir(parents=True, exist_ok=True)
    frame, tasks = build_catalog(spec)
    jobs = [(spec, task, str(out_dir)) for task in tasks]
    boxes = _run_jobs(jobs, workers, progress)
    lesions = _lesion_frame(tasks, boxes)
    _write_atomic(out_dir / "lesions.csv", lambda p: lesions.to_csv(p, index=False, lineterminator="\n"))
    _write_atomic(out_dir / "train.csv", lambda p: frame.to_csv(p, index=False, lineterminator="\n"))
    return frame
