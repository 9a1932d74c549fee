"""Operating points chosen on validation predictions, and metrics with patient-bootstrap intervals.

Thresholds come from predictions a model made on images it did not train on (a cell's validation fold, or
all folds' out-of-fold predictions pooled): the pF1-optimal one, which the RSNA competition's winners used
to binarise their submissions, and the one that keeps 90 % specificity, a screening reader's operating
point. The metric functions themselves are classify/metrics.py's, so training, the report and external
validation measure the same thing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from mammoflow.classify.metrics import _auc, probabilistic_f1, sensitivity_at_specificity

METRICS = ("auc", "pf1", "sensitivity", "specificity", "sens_at_90spec")


def pf1_threshold(y: np.ndarray, p: np.ndarray) -> float | None:
    """The threshold t maximising the F1 of the binarised predictions (p >= t) (None without positives).

    Candidates are the distinct predicted values; ties keep the highest t (fewest recalls for the same F1).
    """
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    if y.sum() == 0 or len(p) == 0:
        return None
    order = np.argsort(-p, kind="stable")
    p_sorted, y_sorted = p[order], y[order]
    true_pos = np.cumsum(y_sorted)  # predicting the first i+1 as positive
    last_of_value = np.r_[p_sorted[1:] != p_sorted[:-1], True]  # a threshold admits every tie at once
    called = np.arange(1, len(p) + 1)[last_of_value]
    tp = true_pos[last_of_value]
    f1 = 2 * tp / (called + y.sum())
    best = int(np.argmax(f1))  # first maximum = highest threshold
    return float(p_sorted[last_of_value][best])


def specificity_threshold(y: np.ndarray, p: np.ndarray, specificity: float = 0.9) -> float | None:
    """The lowest threshold whose specificity is at least ``specificity`` (None without both classes)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    if len(np.unique(y)) < 2:
        return None
    fpr, _, thresholds = roc_curve(y, p)
    allowed = np.flatnonzero(fpr <= 1 - specificity + 1e-12)
    # roc_curve's first threshold is +inf (nothing called positive): always allowed.
    return float(min(thresholds[allowed[-1]], 1.0))


def choose_thresholds(y: np.ndarray, p: np.ndarray) -> dict:
    return {"pf1": pf1_threshold(y, p), "spec90": specificity_threshold(y, p, 0.9)}


def point_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    """AUC, probabilistic F1, sensitivity and specificity at ``threshold``, sensitivity at 90 % spec."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    called = p >= threshold
    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    return {
        "auc": _auc(y, p),
        "pf1": probabilistic_f1(y, p) if positives else None,
        "sensitivity": float((called & (y == 1)).sum() / positives) if positives else None,
        "specificity": float((~called & (y == 0)).sum() / negatives) if negatives else None,
        "sens_at_90spec": sensitivity_at_specificity(y, p, 0.9),
    }


def bootstrap_metrics(
    table: pd.DataFrame, threshold: float, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict:
    """{metric: {"value", "lo", "hi"}} for a table with cancer, probability and patient_id columns.

    Patients are resampled with replacement and keep all their rows (a patient's images and breasts are
    not independent); the interval is the percentile interval of the resampled values. A resample where
    a metric is undefined (one class only) is left out of that metric's interval.
    """
    y = table["cancer"].to_numpy().astype(int)
    p = table["probability"].to_numpy(dtype=float)
    observed = point_metrics(y, p, threshold)
    _, patient = np.unique(table["patient_id"].astype(str).to_numpy(), return_inverse=True)
    rows_of = np.split(np.argsort(patient, kind="stable"), np.cumsum(np.bincount(patient))[:-1])
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {name: [] for name in METRICS}
    for _ in range(resamples if len(rows_of) else 0):
        picked = rng.integers(0, len(rows_of), len(rows_of))
        rows = np.concatenate([rows_of[i] for i in picked])
        for name, value in point_metrics(y[rows], p[rows], threshold).items():
            if value is not None:
                draws[name].append(value)
    tail = (1 - level) / 2 * 100
    out = {}
    for name in METRICS:
        values = draws[name]
        lo, hi = np.percentile(values, [tail, 100 - tail]) if values else (None, None)
        out[name] = {
            "value": observed[name],
            "lo": None if lo is None else float(lo),
            "hi": None if hi is None else float(hi),
        }
    return out
