"""Validation metrics of a training cell: the paper's five, and what screening readers also look at.

Every value is defined for every fold: a fold without positives or with constant predictions gives
``None`` for what cannot be computed (never NaN) and a warning that says why, so a table of cells can
always be built.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

THRESHOLD = 0.5


def _safe_div(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 0.0


def probabilistic_f1(y: np.ndarray, p: np.ndarray) -> float:
    """The RSNA competition metric: F1 with probabilities as soft counts (0 when there are no positives)."""
    true_positive = float(np.sum(p * y))
    precision = _safe_div(true_positive, float(np.sum(p)))
    recall = _safe_div(true_positive, float(np.sum(y)))
    return _safe_div(2 * precision * recall, precision + recall)


def sensitivity_at_specificity(y: np.ndarray, p: np.ndarray, specificity: float = 0.9) -> float | None:
    """Highest sensitivity with specificity at least ``specificity`` (None without both classes)."""
    if len(np.unique(y)) < 2:
        return None
    fpr, tpr, _ = roc_curve(y, p)
    allowed = fpr <= 1 - specificity + 1e-12
    return float(tpr[allowed].max()) if allowed.any() else 0.0


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float = THRESHOLD) -> dict:
    """Accuracy, AUC, precision, recall, F1 at ``threshold``, confusion matrix, pF1, sensitivity@90%spec."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    predicted = (p >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, predicted, labels=[0, 1]).ravel()
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, tp + fn)
    return {
        "n": len(y),
        "positives": int(y.sum()),
        "accuracy": _safe_div(tp + tn, len(y)),
        "auc": _auc(y, p),
        "precision": precision,
        "recall": recall,
        "f1": _safe_div(2 * precision * recall, precision + recall),
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
        warnings.append("validation fold has no positive image: AUC and sensitivity are undefined (null)")
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
