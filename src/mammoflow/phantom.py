"""Synthetic screening-mammography data set in the Kaggle RSNA layout.

The phantom stands in for the RSNA data when none is given, so it reproduces what the real pipeline
has to cope with: several scanner profiles (bit depths, MONOCHROME1/2, window tags, VOI LUT functions,
four transfer syntaxes), breasts on either side with a pectoral muscle on MLO views, burned-in text,
collimator strips and markers outside the breast, and lesions whose size and contrast are knobs.

Everything is derived from ``PhantomSpec.seed``: the catalog (train.csv) from per-patient streams and
every image from its own stream keyed by its row index, so the output is byte-identical whatever the
number of worker processes.

Outputs of :func:`generate`::

    out_dir/train.csv                                  # RSNA columns, one row per image
    out_dir/train_images/<patient_id>/<image_id>.dcm   # For-Presentation MG DICOM
    out_dir/lesions.csv                                # sidecar: lesion boxes in stored-pixel coordinates
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing as mp
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from tqdm import tqdm

__all__ = [
    "LESION_COLUMNS",
    "MACHINES",
    "TRAIN_COLUMNS",
    "ImageTask",
    "LesionPlan",
    "Machine",
    "PhantomSpec",
    "RenderedImage",
    "build_catalog",
    "build_dataset",
    "generate",
    "image_path",
    "power_law_field",
    "render_image",
]

TRAIN_COLUMNS: tuple[str, ...] = (
    "site_id",
    "patient_id",
    "image_id",
    "laterality",
    "view",
    "age",
    "cancer",
    "biopsy",
    "invasive",
    "BIRADS",
    "implant",
    "density",
    "machine_id",
    "prediction_id",
    "difficult_negative_case",
)
LESION_COLUMNS: tuple[str, ...] = (
    "image_id",
    "patient_id",
    "laterality",
    "view",
    "kind",
    "x0",
    "y0",
    "x1",
    "y1",
)
MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"

# Separate seed streams, so that e.g. changing the prevalence does not reshuffle every image.
_CATALOG_STREAM, _PATIENT_STREAM, _IMAGE_STREAM = 0, 1, 2
# Shape/texture are synthesized on a grid with at most this long side, then upsampled: the power-law
# texture has little energy at the finest scales, and this keeps a full-size image well under a second.
_WORK_LONG_SIDE = 1024
_AIR = 0.02  # brightness of the background air


@dataclass(frozen=True)
class Machine:
    """A scanner profile; sizes are rows x cols at size_scale 1.0."""

    machine_id: int
    site_id: int
    manufacturer: str
    model: str
    rows: int
    cols: int
    spacing_mm: float
    bits_stored: int
    photometric: str
    voi_function: str | None
    n_windows: int
    transfer_syntax: str
    encoder: str | None
    weight: float
    offset: float  # stored value of brightness 0, as a fraction of the stored range
    gain: float  # stored units per unit brightness, as a fraction of the stored range

    @property
    def max_value(self) -> int:
        return 2**self.bits_stored - 1

    def size(self, scale: float) -> tuple[int, int]:
        """Rows and columns at ``scale``, rounded to even numbers."""
        return _even(self.rows * scale), _even(self.cols * scale)


def _even(x: float) -> int:
    return max(2, 2 * round(x / 2))


MACHINES: tuple[Machine, ...] = (
    Machine(
        49,
        1,
        "HOLOGIC, Inc.",
        "Selenia Dimensions",
        3328,
        2560,
        0.07,
        12,
        "MONOCHROME2",
        "LINEAR",
        1,
        JPEG2000Lossless,
        "pylibjpeg",
        0.35,
        0.02,
        0.70,
    ),
    Machine(
        48,
        1,
        "HOLOGIC, Inc.",
        "Lorad Selenia",
        4096,
        3328,
        0.065,
        12,
        "MONOCHROME2",
        "LINEAR",
        2,
        JPEG2000Lossless,
        "pylibjpeg",
        0.20,
        0.03,
        0.65,
    ),
    Machine(
        29,
        2,
        "GE MEDICAL SYSTEMS",
        "Senographe Essential",
        2294,
        1914,
        0.1,
        14,
        "MONOCHROME1",
        "SIGMOID",
        3,
        JPEG2000Lossless,
        "pylibjpeg",
        0.15,
        0.05,
        0.60,
    ),
    Machine(
        21,
        2,
        "FUJIFILM Corporation",
        "FDR MS-3500",
        2776,
        2082,
        0.1,
        14,
        "MONOCHROME1",
        "LINEAR",
        2,
        JPEGLSLossless,
        "pyjpegls",
        0.10,
        0.03,
        0.72,
    ),
    Machine(
        93,
        1,
        "SIEMENS",
        "Mammomat Inspiration",
        3518,
        2800,
        0.085,
        16,
        "MONOCHROME2",
        None,
        0,
        RLELossless,
        "pylibjpeg",
        0.10,
        0.01,
        0.55,
    ),
    Machine(
        216,
        2,
        "Planmed",
        "Planmed Clarity",
        2800,
        2294,
        0.083,
        13,
        "MONOCHROME2",
        "SIGMOID",
        1,
        ExplicitVRLittleEndian,
        None,
        0.10,
        0.04,
        0.68,
    ),
)
_MACHINE_BY_ID = {m.machine_id: m for m in MACHINES}

# Density class -> share of the breast that is fibroglandular, and brightness of that tissue.
_GLAND_FRACTION = {"A": 0.06, "B": 0.22, "C": 0.45, "D": 0.70}
_GLAND_LEVEL = {"A": 0.56, "B": 0.59, "C": 0.62, "D": 0.65}
_DENSITY_PROBS = {"A": 0.10, "B": 0.42, "C": 0.40, "D": 0.08}
_WINDOW_NAMES = ("NORMAL", "HARDER", "SOFTER")


# --------------------------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class PhantomSpec:
    """What to synthesize. Every field is a config key of the same name."""

    patients: int = 40
    prevalence: float = 0.1
    seed: int = 2023
    size_scale: float = 0.25
    mass_diameter_mm: tuple[float, float] = (5.0, 30.0)
    mass_contrast: float = 0.05
    calcification_fraction: float = 0.4

    def __post_init__(self) -> None:
        problems = []
        if self.patients < 1:
            problems.append(f"patients must be >= 1, got {self.patients}")
        if not 0.0 <= self.prevalence <= 1.0:
            problems.append(f"prevalence must be in [0, 1], got {self.prevalence}")
        if not 0.0 < self.size_scale <= 2.0:
            problems.append(f"size_scale must be in (0, 2], got {self.size_scale}")
        lo, hi = self.mass_diameter_mm
        if not 0.0 < lo <= hi:
            problems.append(f"mass_diameter_mm must be (low, high) with 0 < low <= high, got {(lo, hi)}")
        if self.mass_contrast < 0.0:
            problems.append(f"mass_contrast must be >= 0, got {self.mass_contrast}")
        if not 0.0 <= self.calcification_fraction <= 1.0:
            problems.append(f"calcification_fraction must be in [0, 1], got {self.calcification_fraction}")
        if problems:
            raise ValueError("invalid phantom spec: " + "; ".join(problems))

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> PhantomSpec:
        """Build from a config section; keys are the field names, YAML lists become tuples."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(section) - names)
        if unknown:
            raise ValueError(f"unknown phantom config key(s): {', '.join(unknown)}; known: {sorted(names)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}
        return cls(**values)

    def n_positive(self) -> int:
        """Positive patients: round(patients*prevalence), at least 1 if any, leaving one negative."""
        if self.prevalence <= 0.0 or self.patients < 2:
            return 0
        return min(max(1, round(self.patients * self.prevalence)), self.patients - 1)


# ------------------------------------------------------------------------------------------ catalog


@dataclass(frozen=True)
class LesionPlan:
    """A lesion of one breast; both views of that breast render it at a similar depth."""

    kind: str  # "mass" | "calcification"
    size_mm: float  # mass diameter, or diameter of the cluster region
    depth_fraction: float  # distance from the chest wall as a fraction of the breast depth
    row_fraction: float  # position along the chest wall as a fraction of the breast extent
    spiculated: bool = False
    n_specks: int = 0


@dataclass(frozen=True)
class ImageTask:
    """Everything one worker needs to render and write one image."""

    index: int
    patient_id: int
    image_id: int
    laterality: str
    view: str
    machine_id: int
    density: str  # the density used for rendering (also when train.csv leaves it empty)
    age: int
    study_date: str
    lesions: tuple[LesionPlan, ...] = field(default_factory=tuple)

    @property
    def machine(self) -> Machine:
        return _MACHINE_BY_ID[self.machine_id]


@dataclass(frozen=True)
class _Patient:
    patient_id: int
    machine: Machine
    age: int
    density: str
    density_missing: bool
    implant: int
    study_date: str


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def _draw_patient(spec: PhantomSpec, index: int, patient_id: int) -> _Patient:
    rng = _rng(spec.seed, _PATIENT_STREAM, index)
    weights = np.array([m.weight for m in MACHINES])
    drawn = MACHINES[int(rng.choice(len(MACHINES), p=weights / weights.sum()))]
    # The first six patients take the six profiles in order, so even tiny sets hold every syntax.
    machine = MACHINES[index] if index < len(MACHINES) else drawn
    classes = list(_DENSITY_PROBS)
    density = str(rng.choice(classes, p=list(_DENSITY_PROBS.values())))
    year, month, day = int(rng.integers(2015, 2022)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    return _Patient(
        patient_id=patient_id,
        machine=machine,
        age=int(rng.integers(40, 90)),
        density=density,
        density_missing=bool(rng.random() < 0.06),
        implant=int(rng.random() < 0.03),
        study_date=f"{year:04d}{month:02d}{day:02d}",
    )


def _draw_lesions(spec: PhantomSpec, rng: np.random.Generator) -> tuple[LesionPlan, ...]:
    has_cluster = bool(rng.random() < spec.calcification_fraction)
    has_mass = (not has_cluster) or bool(rng.random() < 0.25)
    plans = []
    if has_mass:
        plans.append(
            LesionPlan(
                kind="mass",
                size_mm=float(rng.uniform(*spec.mass_diameter_mm)),
                depth_fraction=float(rng.uniform(0.3, 0.65)),
                row_fraction=float(rng.uniform(0.3, 0.7)),
                spiculated=bool(rng.random() < 0.5),
            )
        )
    if has_cluster:
        plans.append(
            LesionPlan(
                kind="calcification",
                size_mm=float(rng.uniform(5.0, 15.0)),
                depth_fraction=float(rng.uniform(0.3, 0.7)),
                row_fraction=float(rng.uniform(0.25, 0.75)),
                n_specks=int(rng.integers(5, 26)),
            )
        )
    return tuple(plans)


def _breast_labels(rng: np.random.Generator, positive: bool) -> dict[str, Any]:
    """RSNA breast-level columns: cancer, biopsy, invasive, BIRADS, difficult_negative_case."""
    invasive = int(rng.random() < 0.7)
    difficult = bool(rng.random() < 0.05)
    birads_negative = rng.choice([1, 2, None], p=[0.6, 0.15, 0.25])
    birads_positive = rng.choice([0, None], p=[0.8, 0.2])
    if positive:
        return dict(
            cancer=1, biopsy=1, invasive=invasive, BIRADS=birads_positive, difficult_negative_case=False
        )
    if difficult:  # recalled and biopsied, turned out benign
        return dict(cancer=0, biopsy=1, invasive=0, BIRADS=0, difficult_negative_case=True)
    return dict(cancer=0, biopsy=0, invasive=0, BIRADS=birads_negative, difficult_negative_case=False)


def build_catalog(spec: PhantomSpec) -> tuple[pd.DataFrame, list[ImageTask]]:
    """The train.csv frame and one render task per row, in row order."""
    rng = _rng(spec.seed, _CATALOG_STREAM)
    n = spec.patients
    id_space = max(90_000, 2 * n)
    patient_ids = np.sort(rng.choice(id_space, size=n, replace=False)) + 10_000
    image_ids = rng.choice(2**31 - 1 - 10_000, size=4 * n, replace=False) + 10_000
    positive = set(rng.choice(n, size=spec.n_positive(), replace=False).tolist())

    rows: list[dict[str, Any]] = []
    tasks: list[ImageTask] = []
    for p in range(n):
        patient = _draw_patient(spec, p, int(patient_ids[p]))
        breast_rng = _rng(spec.seed, _PATIENT_STREAM, p, 1)
        positive_side = str(breast_rng.choice(["L", "R"]))
        plans = _draw_lesions(spec, breast_rng)
        for side in ("L", "R"):
            is_pos = p in positive and side == positive_side
            labels = _breast_labels(breast_rng, is_pos)
            for view in ("CC", "MLO"):
                index = len(rows)
                rows.append(_train_row(patient, side, view, int(image_ids[index]), labels))
                tasks.append(
                    ImageTask(
                        index=index,
                        patient_id=patient.patient_id,
                        image_id=int(image_ids[index]),
                        laterality=side,
                        view=view,
                        machine_id=patient.machine.machine_id,
                        density=patient.density,
                        age=patient.age,
                        study_date=patient.study_date,
                        lesions=plans if is_pos else (),
                    )
                )
    frame = pd.DataFrame(rows, columns=list(TRAIN_COLUMNS))
    frame["BIRADS"] = frame["BIRADS"].astype("Int64")
    return frame, tasks


def _train_row(
    patient: _Patient, side: str, view: str, image_id: int, labels: dict[str, Any]
) -> dict[str, Any]:
    return dict(
        site_id=patient.machine.site_id,
        patient_id=patient.patient_id,
        image_id=image_id,
        laterality=side,
        view=view,
        age=patient.age,
        cancer=labels["cancer"],
        biopsy=labels["biopsy"],
        invasive=labels["invasive"],
        BIRADS=labels["BIRADS"],
        implant=patient.implant,
        density=None if patient.density_missing else patient.density,
        machine_id=patient.machine.machine_id,
        prediction_id=f"{patient.patient_id}_{side}",
        difficult_negative_case=labels["difficult_negative_case"],
    )


# ------------------------------------------------------------------------------------------ anatomy


@dataclass
class _Anatomy:
    """Canonical frame: chest wall at the left edge. Arrays on the working grid."""

    brightness: np.ndarray  # float32, no lesions
    mask: np.ndarray  # bool, breast incl. pectoral
    pectoral: np.ndarray  # bool
    depth: np.ndarray  # breast depth (outline column) per row, working px
    spacing_mm: float  # working-grid pixel spacing


def _low_freq_1d(rng: np.random.Generator, n: int, terms: int = 4) -> np.ndarray:
    """Smooth noise in about [-1, 1] along n samples (outline irregularity)."""
    t = np.linspace(0.0, 1.0, n, dtype=np.float64)
    out = np.zeros(n)
    for k in range(1, terms + 1):
        cycles = k * rng.uniform(0.6, 1.2)
        out += rng.normal() / k * np.sin(2 * np.pi * cycles * t + rng.uniform(0, 2 * np.pi))
    return out / max(1e-9, np.abs(out).max())


def _cc_depth(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """CC outline: a superellipse-like half from the chest wall, 70-90% of the rows tall."""
    y = np.arange(h) + 0.5
    half_up, half_down = h * rng.uniform(0.35, 0.45), h * rng.uniform(0.35, 0.45)
    centre = np.clip(h * (0.5 + rng.uniform(-0.03, 0.03)), half_up + 0.02 * h, h - half_down - 0.02 * h)
    depth, power = w * rng.uniform(0.45, 0.72), rng.uniform(1.8, 2.6)
    t = np.where(y < centre, (centre - y) / half_up, (y - centre) / half_down)
    profile = depth * np.clip(1.0 - np.clip(t, 0, 1) ** power, 0, 1) ** (1.0 / power)
    return profile * (1.0 + 0.04 * _low_freq_1d(rng, h))


def _mlo_depth(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, float]:
    """MLO outline: axillary tail at the top edge, widest at 50-65% height, fold at 84-92%."""
    y = np.arange(h) + 0.5
    top = w * rng.uniform(0.2, 0.3)
    depth = w * rng.uniform(0.45, 0.72)
    widest, fold = h * rng.uniform(0.5, 0.65), h * rng.uniform(0.84, 0.92)
    upper = top + (depth - top) * np.sin(np.pi / 2 * np.clip(y / widest, 0, 1)) ** rng.uniform(0.8, 1.3)
    power = rng.uniform(1.8, 2.8)
    v = np.clip((y - widest) / (fold - widest), 0, 1)
    lower = depth * np.clip(1.0 - v**power, 0, 1) ** (1.0 / power)
    profile = np.where(y < widest, upper, lower)
    return profile * (1.0 + 0.04 * _low_freq_1d(rng, h)), top


def _pectoral(rng: np.random.Generator, h: int, w: int, top: float, mask: np.ndarray) -> np.ndarray:
    """Triangle in the upper chest-wall corner with a slightly convex edge."""
    width, height = top * rng.uniform(0.7, 0.95), h * rng.uniform(0.3, 0.48)
    bulge = rng.uniform(0.0, 0.3)
    y = np.arange(h) + 0.5
    s = np.clip(y / height, 0, 1)
    edge = width * (1 - s) * (1 + bulge * np.sin(np.pi * s))
    x = np.arange(w) + 0.5
    return (x[None, :] < edge[:, None]) & mask


def power_law_field(
    rng: np.random.Generator,
    shape: tuple[int, int],
    beta: float,
    lowest_cycles: float = 2.0,
    stretch: float = 1.0,
) -> np.ndarray:
    """Zero-mean unit-variance field with power spectrum P(f) ~ 1/f^beta (FFT-filtered white noise).

    ``lowest_cycles``: frequencies below this many cycles per long side are flattened, so the field
    is not dominated by one image-wide gradient. ``stretch`` > 1 elongates structures along x (the
    chest-wall-to-nipple direction, like ducts and ligaments).
    """
    h, w = shape
    noise = rng.standard_normal(shape, dtype=np.float32)
    spectrum = np.fft.rfft2(noise)
    fy = np.fft.fftfreq(h).astype(np.float32)[:, None] / np.float32(np.sqrt(stretch))
    fx = np.fft.rfftfreq(w).astype(np.float32)[None, :] * np.float32(np.sqrt(stretch))
    f = np.maximum(np.sqrt(fy * fy + fx * fx), np.float32(lowest_cycles / max(h, w)))
    spectrum *= f ** np.float32(-beta / 2)
    out = np.fft.irfft2(spectrum, s=shape).astype(np.float32)
    out -= out.mean()
    out /= max(float(out.std()), 1e-12)
    return out


def _anatomy(rng: np.random.Generator, task: ImageTask, work: tuple[int, int], spacing: float) -> _Anatomy:
    h, w = work
    shape_rng, texture_rng = rng.spawn(2)
    if task.view == "MLO":
        depth, top = _mlo_depth(shape_rng, h, w)
    else:
        depth, top = _cc_depth(shape_rng, h, w), 0.0
    x = np.arange(w, dtype=np.float32) + 0.5
    mask = x[None, :] < depth[:, None].astype(np.float32)
    pect = _pectoral(shape_rng, h, w, top, mask) if task.view == "MLO" else np.zeros_like(mask)

    # Distance to the outline (image edges are not outline: the breast continues past them).
    dist_mm = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5) * np.float32(spacing)
    # A compressed breast has a round edge of radius ~ half its thickness: t = sqrt(1 - (1 - d/R)^2).
    edge_radius = shape_rng.uniform(18.0, 30.0)
    d = np.clip(dist_mm / np.float32(edge_radius), 0, 1)
    thickness = np.sqrt(1.0 - (1.0 - d) ** 2)

    tissue = _tissue(texture_rng, task.density, mask, dist_mm, depth)
    b = np.float32(_AIR) + (np.float32(0.15) + np.float32(0.85) * thickness) * tissue
    b = _blend_pectoral(texture_rng, b, pect, spacing)
    skin_mm = shape_rng.uniform(1.0, 2.0)
    b += np.float32(0.10) * np.clip(1.0 - dist_mm / np.float32(skin_mm), 0, 1) * mask
    b[~mask] = _AIR
    return _Anatomy(b.astype(np.float32), mask, pect, depth, spacing)


def _tissue(
    rng: np.random.Generator, density: str, mask: np.ndarray, dist_mm: np.ndarray, depth: np.ndarray
) -> np.ndarray:
    """Fat/fibroglandular composition (brightness at full thickness)."""
    h, w = mask.shape
    beta = rng.uniform(2.5, 3.5)
    field_ = power_law_field(rng, (h, w), beta)
    fine = power_law_field(rng, (h, w), beta - 0.5, lowest_cycles=8.0, stretch=2.5)
    # Glandular tissue gathers behind the nipple, spares the subcutaneous fat near the skin.
    nipple_row = int(np.argmax(depth))
    cx, cy = 0.4 * depth[nipple_row], nipple_row + 0.5
    sx, sy = 0.45 * depth[nipple_row] + 1.0, 0.35 * max(1, int(mask.any(axis=1).sum()))
    gx = ((np.arange(w, dtype=np.float32) + 0.5 - cx) / sx) ** 2
    gy = ((np.arange(h, dtype=np.float32) + 0.5 - cy) / sy) ** 2
    central = np.exp(-0.5 * (gy[:, None] + gx[None, :]))
    subcutaneous = np.clip(dist_mm / np.float32(rng.uniform(5.0, 10.0)), 0, 1)
    score = field_ + 1.3 * central + 1.0 * (subcutaneous - 1.0)
    inside = score[mask]
    threshold = np.quantile(inside, 1.0 - _GLAND_FRACTION[density]) if inside.size else 0.0
    # A soft threshold: dense regions fade into fat instead of looking cut out.
    gland = 1.0 / (1.0 + np.exp(-(score - np.float32(threshold)) / np.float32(0.35)))
    fat_level = rng.uniform(0.28, 0.32)
    level = _GLAND_LEVEL[density]
    return (fat_level + (level - fat_level) * gland + 0.045 * fine).astype(np.float32)


def _blend_pectoral(rng: np.random.Generator, b: np.ndarray, pect: np.ndarray, spacing: float) -> np.ndarray:
    if not pect.any():
        return b
    sigma = max(0.6, 0.6 / spacing)  # ~0.6 mm soft muscle edge
    soft = cv2.GaussianBlur(pect.astype(np.float32), (0, 0), sigma) * pect.astype(np.float32)
    soft = np.maximum(soft, cv2.erode(pect.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32))
    muscle = rng.uniform(0.78, 0.84) + 0.025 * power_law_field(rng, b.shape, 2.0, lowest_cycles=4.0)
    return b * (1 - soft) + muscle * soft


# ------------------------------------------------------------------------------------------ lesions


@dataclass(frozen=True)
class _LesionPatch:
    kind: str
    x0: int  # full-res box (exclusive end), canonical frame
    y0: int
    profile: np.ndarray  # float32 in [0, 1], shape (y1-y0, x1-x0), nonzero at the box edges
    amplitude: float  # brightness added where profile is 1, relative to the local tissue (mass)


_WOBBLE = 0.15  # a mass's radius varies with angle by at most this fraction


def _mass_reach(spiculated: bool) -> float:
    """How far a mass's profile reaches, in mass radii (spikes end by 2.2 radii, plus their blur)."""
    return 2.35 if spiculated else 1.3 * (1 + _WOBBLE)


def _support_radius_mm(plan: LesionPlan) -> float:
    if plan.kind == "calcification":
        return plan.size_mm / 2 + 1.0
    return plan.size_mm / 2 * _mass_reach(plan.spiculated)


def _place(
    plan: LesionPlan, anatomy: _Anatomy, taken: list[tuple[float, float, float]], scale_down: float = 1.0
) -> tuple[float, float, float] | None:
    """Centre (x, y) in working px and the scale factor; None when the breast is too small."""
    allowed = (anatomy.mask & ~anatomy.pectoral).astype(np.uint8)
    allowed[0, :] = allowed[-1, :] = 0
    allowed[:, 0] = allowed[:, -1] = 0
    for x, y, r in taken:  # keep two lesions of one breast apart
        cv2.circle(allowed, (round(x), round(y)), round(r), 0, -1)
    # Chessboard distance: the whole square patch (hence the lesion's box) must fit, not just a disc.
    dist = cv2.distanceTransform(allowed, cv2.DIST_C, 3)
    margin = 1.5 / anatomy.spacing_mm + 2.0  # keep off the skin line; +2 px for the patch border
    rows = np.flatnonzero(anatomy.mask.any(axis=1))
    top, bottom = rows[0], rows[-1] + 1
    ys, xs = np.mgrid[0 : dist.shape[0], 0 : dist.shape[1]]
    depth = np.maximum(anatomy.depth[ys], 1.0)
    score = np.abs((xs + 0.5) / depth - plan.depth_fraction)
    score += 0.5 * np.abs((ys + 0.5 - top) / (bottom - top) - plan.row_fraction)
    scale = scale_down
    while scale > 0.2:
        need = _support_radius_mm(plan) * scale / anatomy.spacing_mm + margin
        ok = dist >= need
        if ok.any():
            best = np.argmin(np.where(ok, score, np.inf))
            y, x = np.unravel_index(best, dist.shape)
            return float(x) + 0.5, float(y) + 0.5, scale
        scale *= 0.8
    return None


def _mass_profile(rng: np.random.Generator, plan: LesionPlan, radius_px: float) -> np.ndarray:
    """Blob with an irregular radius; ill-defined (wide smooth fall-off) or spiculated (thin spikes)."""
    reach = radius_px * _mass_reach(plan.spiculated) + 2
    half = int(np.ceil(reach))
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    r, theta = np.hypot(xx, yy), np.arctan2(yy, xx)
    wobble = np.ones_like(r)
    for k in range(2, 6):
        wobble += rng.normal(0, 0.06) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    wobble = np.clip(wobble, 1 - _WOBBLE, 1 + _WOBBLE)
    rel = r / (radius_px * wobble)
    if plan.spiculated:
        # Dome (a sphere's projected thickness) with a one-pixel anti-aliased edge, plus spikes.
        edge = np.clip((radius_px * wobble - r) + 0.5, 0, 1)
        profile = np.sqrt(np.clip(1 - np.minimum(rel, 1) ** 2, 0.04, 1)) * edge
        profile = np.maximum(profile, _spikes(rng, half, radius_px))
    else:
        # Ill-defined: full near the centre, no edge at all, fading out to 1.3 radii.
        profile = np.clip(1 - (rel / 1.3) ** 2, 0, 1) ** 0.6
    return profile.astype(np.float32)


def _spikes(rng: np.random.Generator, half: int, radius_px: float) -> np.ndarray:
    canvas = np.zeros((2 * half + 1, 2 * half + 1), np.float32)
    thickness = max(1, round(radius_px * 0.06))
    for angle in rng.uniform(0, 2 * np.pi, size=int(rng.integers(8, 21))):
        length = radius_px * rng.uniform(1.5, 2.2)
        steps = np.linspace(0.85 * radius_px, length, 5)
        for i, (a, b) in enumerate(itertools.pairwise(steps)):
            p0 = (round(half + a * np.cos(angle)), round(half + a * np.sin(angle)))
            p1 = (round(half + b * np.cos(angle)), round(half + b * np.sin(angle)))
            value = 0.7 - 0.13 * i  # spikes fade outwards
            segment = np.zeros_like(canvas)
            cv2.line(segment, p0, p1, float(value), thickness, cv2.LINE_AA)
            np.maximum(canvas, segment, out=canvas)
    canvas = cv2.GaussianBlur(canvas, (0, 0), 0.5 * thickness)
    canvas[canvas < 0.02] = 0.0  # keeps the box tight around what is visible
    return canvas


def _cluster_profile(
    rng: np.random.Generator, plan: LesionPlan, spacing_mm: float, scale: float
) -> np.ndarray:
    """5-25 specks of 0.1-1 mm (at least one pixel) scattered in a region of ``size_mm``."""
    region_px = plan.size_mm * scale / 2 / spacing_mm
    diam_mm = np.exp(rng.uniform(np.log(0.1), np.log(1.0), size=plan.n_specks))
    radii = diam_mm / 2 / spacing_mm
    half = int(np.ceil(region_px + radii.max() + 2))
    canvas = np.zeros((2 * half + 1, 2 * half + 1), np.float32)
    angle = rng.uniform(0, 2 * np.pi, plan.n_specks)
    dist = region_px * np.sqrt(rng.uniform(0, 1, plan.n_specks))
    for a, d, rad in zip(angle, dist, radii, strict=True):
        cx, cy = half + d * np.cos(a), half + d * np.sin(a)
        reach = int(np.ceil(rad)) + 1
        ix, iy = round(cx), round(cy)
        ys, xs = np.mgrid[iy - reach : iy + reach + 1, ix - reach : ix + reach + 1]
        cover = np.clip(rad + 0.5 - np.hypot(xs - cx, ys - cy), 0, 1).astype(np.float32)
        cover[reach, reach] = 1.0  # a speck is at least one full pixel
        window = canvas[iy - reach : iy + reach + 1, ix - reach : ix + reach + 1]
        np.maximum(window, cover * rng.uniform(0.8, 1.0), out=window)
    return canvas


def _trim(profile: np.ndarray, x0: int, y0: int) -> tuple[np.ndarray, int, int]:
    """Crop a profile to its nonzero support so the box is tight."""
    rows, cols = np.flatnonzero(profile.any(axis=1)), np.flatnonzero(profile.any(axis=0))
    cut = profile[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return cut, x0 + int(cols[0]), y0 + int(rows[0])


def _lesion_patches(
    rng: np.random.Generator, task: ImageTask, anatomy: _Anatomy, full: tuple[int, int], spec: PhantomSpec
) -> list[_LesionPatch]:
    """Plan and render every lesion of this image at full resolution (canonical frame)."""
    h_full, w_full = full
    h, w = anatomy.mask.shape
    zoom_x, zoom_y = w_full / w, h_full / h
    full_spacing = anatomy.spacing_mm / zoom_x
    taken: list[tuple[float, float, float]] = []
    patches = []
    for plan in task.lesions:
        placed = _place(plan, anatomy, taken)
        if placed is None:
            continue
        x, y, scale = placed
        taken.append((x, y, _support_radius_mm(plan) * scale / anatomy.spacing_mm + 1))
        if plan.kind == "mass":
            profile = _mass_profile(rng, plan, max(1.0, plan.size_mm * scale / 2 / full_spacing))
            amplitude = spec.mass_contrast
        else:
            profile = _cluster_profile(rng, plan, full_spacing, scale)
            amplitude = float(rng.uniform(0.25, 0.35))
        half = profile.shape[0] // 2
        cx, cy = round(x * zoom_x - 0.5), round(y * zoom_y - 0.5)
        x0, y0 = cx - half, cy - half
        # Clip to the image (placement keeps lesions inside the breast, so this rarely bites).
        sx0, sy0 = max(0, -x0), max(0, -y0)
        sx1 = profile.shape[1] - max(0, x0 + profile.shape[1] - w_full)
        sy1 = profile.shape[0] - max(0, y0 + profile.shape[0] - h_full)
        cut, bx, by = _trim(profile[sy0:sy1, sx0:sx1], x0 + sx0, y0 + sy0)
        patches.append(_LesionPatch(plan.kind, bx, by, cut, amplitude))
    return patches


def _apply_lesion(b: np.ndarray, patch: _LesionPatch) -> None:
    ph, pw = patch.profile.shape
    region = b[patch.y0 : patch.y0 + ph, patch.x0 : patch.x0 + pw]
    if patch.kind == "mass":
        # Contrast is relative to the tissue around the mass (a few percent brighter).
        region += np.float32(patch.amplitude * float(region.mean())) * patch.profile
    else:
        region += np.float32(patch.amplitude) * patch.profile


# ----------------------------------------------------------------------------------------- overlays


def _far_cols(w: int, width: int, laterality: str) -> slice:
    """Columns of the edge away from the chest wall."""
    return slice(w - width, w) if laterality == "L" else slice(0, width)


def _free_rows(mask_full_rows: np.ndarray) -> tuple[int, int]:
    """Rows free of breast at the top and at the bottom."""
    rows = np.flatnonzero(mask_full_rows)
    if rows.size == 0:
        return len(mask_full_rows), len(mask_full_rows)
    return int(rows[0]), len(mask_full_rows) - int(rows[-1]) - 1


def _add_strips(
    rng: np.random.Generator, b: np.ndarray, breast_rows: np.ndarray, laterality: str, view: str
) -> list[tuple[int, int, int, int]]:
    """Collimator strips (bright or mid-grey) along the far edge and sometimes top/bottom."""
    h, w = b.shape
    width = max(1, round(w * rng.uniform(0.01, 0.04)))
    level = float(rng.choice([0.92, 0.5]))
    cols = _far_cols(w, width, laterality)
    b[:, cols] = np.float32(level) + np.float32(0.02) * b[:, cols]
    boxes = [(cols.start, 0, cols.stop, h)]
    free_top, free_bottom = _free_rows(breast_rows)
    want = round(w * rng.uniform(0.01, 0.04))
    if rng.random() < 0.5:
        at_top = view == "CC" and rng.random() < 0.5
        free = free_top if at_top else free_bottom
        thick = min(want, int(0.6 * free))
        if thick >= 1:
            rows = slice(0, thick) if at_top else slice(h - thick, h)
            b[rows, :] = np.float32(level)
            boxes.append((0, rows.start, w, rows.stop))
    return boxes


def _text_lines(task: ImageTask) -> list[str]:
    d = task.study_date
    return [f"{task.laterality} {task.view}", f"{d[:4]}-{d[4:6]}-{d[6:]}"]


def _text_mask(
    task: ImageTask, h: int, w: int, mask_full: np.ndarray, strips: list[tuple[int, int, int, int]]
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Burned-in annotation in the corner away from the chest wall (top if free, else bottom)."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    lines = _text_lines(task)
    scale = max(0.25, 0.022 * h / 22.0)
    thick = max(1, round(scale * 1.6))
    sizes = [cv2.getTextSize(t, font, scale, thick) for t in lines]
    line_h = max(s[0][1] + s[1] for s in sizes) + max(2, round(0.006 * h))
    block_w = max(s[0][0] for s in sizes) + 2 * thick
    block_h = line_h * len(lines) + thick
    canvas = np.zeros((block_h, block_w), np.uint8)
    for i, (text, (_, base)) in enumerate(zip(lines, sizes, strict=True)):
        cv2.putText(canvas, text, (thick, (i + 1) * line_h - base), font, scale, 255, thick, cv2.LINE_AA)
    strip_w = max(x1 - x0 for x0, _, x1, _ in strips if x1 - x0 < w) if len(strips) else 0
    pad = max(2, round(0.02 * w)) + strip_w
    x0 = w - pad - block_w if task.laterality == "L" else pad
    x0 = int(np.clip(x0, 0, max(0, w - block_w)))
    out = np.zeros((h, w), bool)
    for y0 in (max(2, round(0.06 * h)), h - block_h - max(2, round(0.06 * h))):
        y0 = int(np.clip(y0, 0, max(0, h - block_h)))
        box = (x0, y0, min(w, x0 + block_w), min(h, y0 + block_h))
        if not mask_full[box[1] : box[3], box[0] : box[2]].any():
            break
    region = canvas[: box[3] - box[1], : box[2] - box[0]] > 96
    out[box[1] : box[3], box[0] : box[2]] = region
    return out, box


def _add_marker(
    rng: np.random.Generator,
    b: np.ndarray,
    mask_work: np.ndarray,
    zoom: float,
    spacing_full: float,
    keep_out: list[tuple[int, int, int, int]],
) -> None:
    """A small bright square or disc in the air, clear of the breast, text and strips."""
    size = max(2, round(rng.uniform(3.0, 6.0) / spacing_full))
    free = (~mask_work).astype(np.uint8)
    for x0, y0, x1, y1 in keep_out:
        free[int(y0 / zoom) : int(np.ceil(y1 / zoom)) + 1, int(x0 / zoom) : int(np.ceil(x1 / zoom)) + 1] = 0
    free[0, :] = free[-1, :] = free[:, 0] = free[:, -1] = 0
    dist = cv2.distanceTransform(free, cv2.DIST_L2, 5) * zoom
    ys, xs = np.nonzero(dist >= size * 1.2 + 3 / spacing_full)
    if ys.size == 0:
        return
    pick = int(rng.integers(ys.size))
    cx, cy = round((xs[pick] + 0.5) * zoom), round((ys[pick] + 0.5) * zoom)
    marker = np.zeros((2 * size + 1, 2 * size + 1), np.uint8)
    if rng.random() < 0.5:
        cv2.circle(marker, (size, size), size // 2 + 1, 1, -1)
    else:
        marker[size // 2 : size + size // 2 + 1, size // 2 : size + size // 2 + 1] = 1
    y0, x0 = max(0, cy - size), max(0, cx - size)
    window = b[y0 : cy + size + 1, x0 : cx + size + 1]
    window[marker[: window.shape[0], : window.shape[1]] > 0] = np.float32(0.95)


# ----------------------------------------------------------------------------------------- detector


def _to_stored(rng: np.random.Generator, b: np.ndarray, machine: Machine, scale: float) -> np.ndarray:
    """Brightness -> detector values with signal-dependent plus electronic noise (float32)."""
    maxv = machine.max_value
    gain = np.float32(machine.gain * maxv)
    v = np.float32(machine.offset * maxv) + gain * b
    # Quantum noise variance grows with signal; bigger (downscaled) pixels collect more quanta.
    var = np.maximum(b, 0) * np.float32(1.2e-4) + np.float32(2e-3**2)
    sigma = np.sqrt(var) * np.float32(gain * min(1.0, scale))
    v += sigma * rng.standard_normal(b.shape, dtype=np.float32)
    return v


def _windows(anatomy: _Anatomy, machine: Machine) -> list[tuple[int, int]]:
    """Window (centre, width) pairs in stored units; the first brackets this image's breast tissue."""
    if machine.n_windows == 0:
        return []
    inside = anatomy.brightness[anatomy.mask]
    lo, hi = np.quantile(inside, [0.005, 0.998]) if inside.size else (0.1, 0.9)
    lo, hi = lo - 0.02, hi + 0.05
    maxv = machine.max_value
    to_value = lambda x: machine.offset * maxv + machine.gain * maxv * x  # noqa: E731
    centre, width = (to_value(lo) + to_value(hi)) / 2, to_value(hi) - to_value(lo)
    pairs = [(centre, width), (centre, 0.7 * width), (centre + 0.05 * width, 1.4 * width)]
    out = []
    for c, wd in pairs[: machine.n_windows]:
        stored_centre = maxv - c if machine.photometric == "MONOCHROME1" else c
        out.append((round(stored_centre), max(1, round(wd))))
    return out


# ------------------------------------------------------------------------------------------- render


@dataclass
class RenderedImage:
    """Stored pixel array (as written to the DICOM) and what the catalog/tests need about it."""

    pixels: np.ndarray  # uint16, stored units (MONOCHROME1 already inverted)
    windows: list[tuple[int, int]]
    boxes: list[tuple[str, int, int, int, int]]  # kind, x0, y0, x1, y1 (x1/y1 exclusive)
    breast_mask: np.ndarray  # bool at full size, actual orientation
    pectoral_mask: np.ndarray  # bool at full size, actual orientation
    spacing_mm: float


def _work_shape(full: tuple[int, int]) -> tuple[int, int]:
    h, w = full
    factor = min(1.0, _WORK_LONG_SIDE / max(h, w))
    return max(8, round(h * factor)), max(8, round(w * factor))


def render_image(spec: PhantomSpec, task: ImageTask, with_lesions: bool = True) -> RenderedImage:
    """Synthesize one image. ``with_lesions=False`` gives the same image minus the lesions."""
    machine = task.machine
    full = machine.size(spec.size_scale)
    spacing = machine.spacing_mm / spec.size_scale
    work = _work_shape(full)
    zoom = full[1] / work[1]
    anatomy_rng, lesion_rng, overlay_rng, noise_rng = _rng(spec.seed, _IMAGE_STREAM, task.index).spawn(4)

    anatomy = _anatomy(anatomy_rng, task, work, spacing * full[1] / work[1])
    b = _upsample(anatomy.brightness, full)
    patches = _lesion_patches(lesion_rng, task, anatomy, full, spec) if task.lesions else []
    if with_lesions:
        for patch in patches:
            _apply_lesion(b, patch)

    mirror = task.laterality == "R"
    mask_work = anatomy.mask[:, ::-1] if mirror else anatomy.mask
    if mirror:
        b = np.ascontiguousarray(b[:, ::-1])
    mask_full = _upsample_mask(mask_work, full)
    strips = _add_strips(overlay_rng, b, mask_full.any(axis=1), task.laterality, task.view)
    text, text_box = _text_mask(task, full[0], full[1], mask_full, strips)
    _add_marker(overlay_rng, b, mask_work, zoom, spacing, [*strips, text_box])

    values = _to_stored(noise_rng, b, machine, spec.size_scale)
    values[text] = machine.max_value  # burned-in text is saturated
    pixels = np.clip(np.rint(values), 0, machine.max_value).astype(np.uint16)
    if machine.photometric == "MONOCHROME1":
        pixels = np.uint16(machine.max_value) - pixels
    pect = anatomy.pectoral[:, ::-1] if mirror else anatomy.pectoral
    return RenderedImage(
        pixels=pixels,
        windows=_windows(anatomy, machine),
        boxes=[_box(p, full[1], mirror) for p in patches],
        breast_mask=mask_full,
        pectoral_mask=_upsample_mask(pect, full),
        spacing_mm=spacing,
    )


def _upsample(a: np.ndarray, full: tuple[int, int]) -> np.ndarray:
    if a.shape == full:
        return a.copy()
    return cv2.resize(a, (full[1], full[0]), interpolation=cv2.INTER_LINEAR)


def _upsample_mask(m: np.ndarray, full: tuple[int, int]) -> np.ndarray:
    if m.shape == full:
        return m.copy()
    return cv2.resize(m.astype(np.uint8), (full[1], full[0]), interpolation=cv2.INTER_NEAREST) > 0


def _box(patch: _LesionPatch, width: int, mirror: bool) -> tuple[str, int, int, int, int]:
    ph, pw = patch.profile.shape
    x0, x1 = patch.x0, patch.x0 + pw
    if mirror:
        x0, x1 = width - x1, width - x0
    return patch.kind, x0, patch.y0, x1, patch.y0 + ph


# -------------------------------------------------------------------------------------------- DICOM


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


def _attach_pixels(ds: Dataset, m: Machine, pixels: np.ndarray) -> None:
    if m.encoder is None:
        ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
        ds["PixelData"].VR = "OW"
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        return
    # generate_instance_uid=False: pydicom would otherwise mint a random SOPInstanceUID.
    ds.compress(m.transfer_syntax, pixels, encoding_plugin=m.encoder, generate_instance_uid=False)


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
    _attach_pixels(ds, task.machine, image.pixels)
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
