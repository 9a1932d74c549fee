"""Fold assignment, shared by every data set, model and resolution so that comparisons are paired.

- ``clean``: folds grouped by patient (StratifiedGroupKFold): no patient is in two folds.
- ``paper``: image-level StratifiedKFold, as the study did; a patient's images can land in several folds.

Output (``folds.parquet``), long format: image_id, patient_id, cancer, protocol, fold.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from mammoflow.errors import FoldError
from mammoflow.progress import say

PROTOCOLS = ("clean", "paper")


def assign_folds(images: pd.DataFrame, k: int, seed: int, protocol: str) -> np.ndarray:
    """Fold index (0..k-1) per row of ``images`` (columns image_id, patient_id, cancer)."""
    if protocol not in PROTOCOLS:
        raise FoldError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")
    y = images["cancer"].to_numpy().astype(int)
    units = images["patient_id"].nunique() if protocol == "clean" else len(images)
    if units < k:
        what = "patients" if protocol == "clean" else "images"
        raise FoldError(f"{k} folds need at least {k} {what}; the data set has {units}")
    positive_units = images.loc[y == 1, "patient_id"].nunique() if protocol == "clean" else int(y.sum())
    if positive_units < k:
        say(
            f"warning: only {positive_units} positive units for {k} folds ({protocol}): "
            "some validation folds will have no positives"
        )
    fold = np.full(len(images), -1, int)
    with warnings.catch_warnings():
        # sklearn warns when a class has fewer members than folds; we said so above in plain words.
        warnings.simplefilter("ignore", UserWarning)
        if protocol == "clean":
            splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
            splits = splitter.split(np.zeros(len(y)), y, groups=images["patient_id"].to_numpy())
        else:
            splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
            splits = splitter.split(np.zeros(len(y)), y)
        for index, (_, valid) in enumerate(splits):
            fold[valid] = index
    assert (fold >= 0).all()
    return fold


def make_folds(
    images: pd.DataFrame, k: int, seed: int, protocols=PROTOCOLS, require_positive_training: bool = False
) -> pd.DataFrame:
    """Folds of every protocol. ``require_positive_training``: a `clean` fold whose training part has no
    positive patient fails here (its GAN, trained on that part's positives, would have none)."""
    images = images.sort_values("image_id", kind="stable").reset_index(drop=True)
    base = images[["image_id", "patient_id", "cancer"]].copy()
    frames = []
    for protocol in protocols:
        frame = base.copy()
        frame["protocol"] = protocol
        frame["fold"] = assign_folds(images, k, seed, protocol)
        frames.append(frame)
    folds = pd.concat(frames, ignore_index=True)
    if require_positive_training and "clean" in protocols:
        clean = folds[folds["protocol"] == "clean"]
        for fold in range(k):
            training = clean[(clean["fold"] != fold) & (clean["cancer"] == 1)]
            if training.empty:
                total = clean.loc[clean["cancer"] == 1, "patient_id"].nunique()
                raise FoldError(
                    f"clean fold {fold}: its training part has 0 positive patients (of {total} in all), so "
                    "its GAN has nothing to learn from; use fewer folds, more positives, or drop `augmented`"
                )
    for protocol, part in folds.groupby("protocol"):
        counts = part.groupby("fold")["cancer"].agg(["size", "sum"])
        say(
            f"{protocol}: "
            + ", ".join(
                f"fold {f}: {int(r['size'])} images/{int(r['sum'])} positive" for f, r in counts.iterrows()
            )
        )
    return folds


def patients_in_several_folds(folds: pd.DataFrame, protocol: str) -> int:
    part = folds[folds["protocol"] == protocol]
    return int((part.groupby("patient_id")["fold"].nunique() > 1).sum())
