"""What the phantom holds: the spec (the config section), the patients and the train.csv catalog.

Everything is drawn from ``PhantomSpec.seed`` through separate streams per patient, so changing e.g. the
prevalence does not reshuffle every image, and every image has its own stream keyed by its row index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mammoflow.phantom.scanners import MACHINE_BY_ID, MACHINES, Machine
from mammoflow.sections import FromSection

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


# Separate seed streams, so that e.g. changing the prevalence does not reshuffle every image.
_CATALOG_STREAM, _PATIENT_STREAM, IMAGE_STREAM, _BENIGN_STREAM = 0, 1, 2, 3
_DENSITY_PROBS = {"A": 0.10, "B": 0.42, "C": 0.40, "D": 0.08}

# --------------------------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class PhantomSpec(FromSection):
    """What to synthesize: config.yaml's `phantom` section (its values are the defaults; ``threads`` is the
    workflow's), checked once (mammoflow.sections)."""

    SECTION = "phantom"

    patients: int
    prevalence: float
    seed: int
    size_scale: float
    mass_diameter_mm: tuple[float, float]
    mass_contrast: float
    calcification_fraction: float
    # Share of breasts, with or without cancer, that carry benign calcifications: scattered, larger and
    # rounder than a malignant cluster, as in real screening, so that a bright speck alone is no sign.
    benign_calcification_fraction: float

    @classmethod
    def _converted(cls, values: dict) -> dict:
        return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}

    def n_positive(self) -> int:
        """Positive patients: round(patients*prevalence), at least 1 if any, leaving one negative."""
        if self.prevalence <= 0.0 or self.patients < 2:
            return 0
        return min(max(1, round(self.patients * self.prevalence)), self.patients - 1)


# ------------------------------------------------------------------------------------------ catalog


@dataclass(frozen=True)
class LesionPlan:
    """A lesion of one breast; both views of that breast render it at a similar depth."""

    kind: str  # "mass" | "calcification" (malignant cluster) | "benign" (one benign calcification)
    size_mm: float  # mass diameter, diameter of the cluster region, or of the benign calcification
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
    benign: tuple[LesionPlan, ...] = field(default_factory=tuple)  # drawn for every breast alike
    implant: bool = False

    @property
    def machine(self) -> Machine:
        return MACHINE_BY_ID[self.machine_id]


@dataclass(frozen=True)
class _Patient:
    patient_id: int
    machine: Machine
    age: int
    density: str
    density_missing: bool
    implant: int
    study_date: str


def stream_rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def _draw_patient(spec: PhantomSpec, index: int, patient_id: int) -> _Patient:
    rng = stream_rng(spec.seed, _PATIENT_STREAM, index)
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


def _draw_benign(spec: PhantomSpec, patient: int, side: str) -> tuple[LesionPlan, ...]:
    """Benign calcifications of one breast (vascular, dystrophic, round): 0.5-2.5 mm, scattered over the
    whole breast. Their own stream, independent of the label, so they predict nothing."""
    rng = stream_rng(spec.seed, _BENIGN_STREAM, patient, side == "R")
    if rng.random() >= spec.benign_calcification_fraction:
        return ()
    n = int(rng.integers(1, 9))
    return tuple(
        LesionPlan(
            kind="benign",
            size_mm=float(rng.uniform(0.5, 2.5)),
            depth_fraction=float(rng.uniform(0.1, 0.9)),
            row_fraction=float(rng.uniform(0.1, 0.9)),
        )
        for _ in range(n)
    )


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
    rng = stream_rng(spec.seed, _CATALOG_STREAM)
    n = spec.patients
    id_space = max(90_000, 2 * n)
    patient_ids = np.sort(rng.choice(id_space, size=n, replace=False)) + 10_000
    image_ids = rng.choice(2**31 - 1 - 10_000, size=4 * n, replace=False) + 10_000
    positive = set(rng.choice(n, size=spec.n_positive(), replace=False).tolist())

    rows: list[dict[str, Any]] = []
    tasks: list[ImageTask] = []
    for p in range(n):
        patient = _draw_patient(spec, p, int(patient_ids[p]))
        breast_rng = stream_rng(spec.seed, _PATIENT_STREAM, p, 1)
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
                        benign=_draw_benign(spec, p, side),
                        implant=bool(patient.implant),
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
