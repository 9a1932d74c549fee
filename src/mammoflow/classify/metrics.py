"""Validation metrics of a training cell: the paper's five, and what screening readers also look at.

Every value is defined for every fold: a fold without positives or with constant predictions gives
``None`` for what cannot be computed (never NaN) and a warning that says why, so a table of cells can
always be built. One exception, on purpose: precision at 0.5 when no image is called positive is 0.0,
as scikit-learn's ``zero_division=0`` (and so fastai's Precision, which the paper used) gives it; a
model that calls nothing positive has failed at that threshold, and leaving the fold out of the mean
would flatter it.

Breast level is the unit RSNA scored: one prediction per breast (patient x laterality), the mean of the
probabilities of its views (``breast_level``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mammoflow.stats import probabilistic_f1, ratio, roc_auc, sensitivity_at_specificity

THRESHOLD = 0.5


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float = THRESHOLD) -> dict:
    """Accuracy, AUC, precision, recall, F1 at ``threshold``, confusion matrix, pF1, sensitivity@90%spec.

    Recall (and with it F1) is None without positives; precision is 0.0 when nothing is called positive
    (see the module's docstring)."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    predicted = (p >= threshold).astype(int)
    tp, fp = int(np.sum(predicted & y)), int(np.sum(predicted & (1 - y)))
    fn, tn = int(y.sum()) - tp, int(len(y) - y.sum()) - fp
    precision = ratio(tp, tp + fp) or 0.0
    recall = ratio(tp, tp + fn)
    f1 = None if recall is None else (ratio(2 * precision * recall, precision + recall) or 0.0)
    return {
        "n": len(y),
        "positives": int(y.sum()),
        "accuracy": ratio(tp + tn, len(y)),
        "auc": roc_auc(y, p),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "confusion": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
        "pf1": probabilistic_f1(y, p),
        "sensitivity_at_90_specificity": sensitivity_at_specificity(y, p),
    }


def breast_level(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per breast (patient, laterality): the mean of its images' probabilities, its label."""
    grouped = predictions.groupby(["patient_id", "laterality"], sort=True)
    return grouped.agg(cancer=("cancer", "max"), probability=("probability", "mean")).reset_index()


def cell_metrics(predictions: pd.DataFrame) -> tuple[dict, list[str]]:
    """Image-level and breast-level metrics of a cell's validation predictions, and warnings."""
    warnings = []
    y, p = predictions["cancer"].to_numpy(), predictions["probability"].to_numpy()
    if not np.isfinite(p).all():
        raise ValueError("predictions contain NaN or infinite probabilities")
    image = binary_metrics(y, p)
    breasts = breast_level(predictions)
    breast = binary_metrics(breasts["cancer"].to_numpy(), breasts["probability"].to_numpy())
    if image["positives"] == 0:
        warnings.append(
            "validation fold has no positive image: AUC, recall, F1 and sensitivity are undefined (null)"
        )
    elif image["positives"] == len(y):
        warnings.append("validation fold has only positive images: AUC is undefined (null)")
    if np.ptp(p) == 0:
        warnings.append(f"constant predictions ({p[0]:.4f}): the model does not rank images")
    metrics = {**image, "breast": breast}
    assert not any(isinstance(v, float) and math.isnan(v) for v in _flat_values(metrics))
    return metrics, warnings


def _flat_values(d: dict):
    for value in d.values():
        if isinstance(value, dict):
            yield from _flat_values(value)
        else:
            yield value
