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
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

THRESHOLD = 0.5


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def probabilistic_f1(y: np.ndarray, p: np.ndarray) -> float:
    """The RSNA competition metric: F1 with probabilities as soft counts (0 when there are no positives,
    as the competition's scoring code gives it)."""
    true_positive = float(np.sum(p * y))
    precision = _ratio(true_positive, float(np.sum(p))) or 0.0
    recall = _ratio(true_positive, float(np.sum(y))) or 0.0
    return _ratio(2 * precision * recall, precision + recall) or 0.0


def sensitivity_at_specificity(y: np.ndarray, p: np.ndarray, specificity: float = 0.9) -> float | None:
    """Highest sensitivity of a threshold whose specificity is at least ``specificity`` (None without both
    classes). Every distinct score is a candidate threshold: ``roc_curve``'s default drops points that lie
    on a straight line between others, and with tied scores the one that meets the specificity can be
    among them."""
    if len(np.unique(y)) < 2:
        return None
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    allowed = fpr <= 1 - specificity + 1e-12
    return float(tpr[allowed].max())  # the first point (nothing called positive) is always allowed


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float = THRESHOLD) -> dict:
    """Accuracy, AUC, precision, recall, F1 at ``threshold``, confusion matrix, pF1, sensitivity@90%spec.

    Recall (and with it F1) is None without positives; precision is 0.0 when nothing is called positive
    (see the module's docstring)."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    predicted = (p >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, predicted, labels=[0, 1]).ravel()
    precision = _ratio(tp, tp + fp) or 0.0
    recall = _ratio(tp, tp + fn)
    f1 = None if recall is None else (_ratio(2 * precision * recall, precision + recall) or 0.0)
    return {
        "n": len(y),
        "positives": int(y.sum()),
        "accuracy": _ratio(tp + tn, len(y)),
        "auc": _auc(y, p),
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


def best_f1_threshold(y: np.ndarray, p: np.ndarray) -> float | None:
    """The score at or above which calling positive gives the highest F1 (the pF1 of binarised
    predictions, as RSNA entrants tuned it); the highest such score on ties, None without positives."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    if y.sum() == 0:
        return None
    order = np.argsort(-p, kind="stable")
    sorted_p = p[order]
    # Counts at the last position of each distinct score (descending): a tie is called positive together.
    last = np.r_[np.flatnonzero(np.diff(sorted_p) != 0), len(p) - 1]
    true_positives = np.cumsum(y[order])[last]
    f1 = 2 * true_positives / (last + 1 + y.sum())  # 2tp / (called positive + positives)
    return float(sorted_p[last[int(np.argmax(f1))]])


def f1_at_out_of_fold_threshold(breasts: pd.DataFrame) -> pd.DataFrame:
    """Per fold: the threshold that maximises F1 on the *other* folds' rows (columns fold, cancer,
    probability), and the binarised pF1 (= F1) of this fold's rows at it. The fold that is scored never
    picks its own threshold. Columns fold, threshold, pf1 (None where a threshold or F1 is undefined)."""
    rows = []
    for fold in sorted(breasts["fold"].unique()):
        inside = breasts["fold"] == fold
        other = breasts[~inside]
        threshold = best_f1_threshold(other["cancer"].to_numpy(), other["probability"].to_numpy())
        value = None
        if threshold is not None:
            scored = breasts[inside]
            value = binary_metrics(scored["cancer"].to_numpy(), scored["probability"].to_numpy(), threshold)[
                "f1"
            ]
        rows.append({"fold": int(fold), "threshold": threshold, "pf1": value})
    return pd.DataFrame(rows, columns=["fold", "threshold", "pf1"])


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
