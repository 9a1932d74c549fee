"""The statistics that training, the report and predict share, so that all three measure the same thing.

- Metrics that stay defined on any fold: :func:`roc_auc` (None with one class), :func:`probabilistic_f1`
  (the RSNA competition metric), :func:`sensitivity_at_specificity`, :func:`point_metrics`.
- Operating points chosen on predictions a model made on images it did not train on:
  :func:`f1_optimal_threshold` (the pF1-optimal threshold RSNA entrants binarised at),
  :func:`specificity_threshold` (a screening reader's 90 % specificity), :func:`choose_thresholds` (both,
  as ``model.json`` and ``external.json`` record them), and :func:`f1_at_out_of_fold_threshold` (each fold
  scored at the threshold the *other* folds chose).
- The patient bootstrap: patients are drawn with replacement and keep all their rows (a patient's images
  and breasts are not independent). :func:`patient_draws` is the one resampler; :func:`patient_resamples`
  turns it into row weights for :func:`auc_with_weights` (the report's pooled AUC and the paired protocol
  comparison), :func:`bootstrap_metrics` into resampled rows (predict's external metrics);
  :func:`interval` is the percentile interval of the resampled values.

numpy and pandas only: no torch, nothing of mammoflow's, so every stage may import it. The ROC points and
AUC are computed here rather than by scikit-learn, whose import costs every training job about a second
(``tests/test_classify_metrics.py`` checks them against scikit-learn's).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# The metrics of point_metrics and bootstrap_metrics, in their order.
POINT_METRICS = ("auc", "pf1", "sensitivity", "specificity", "sens_at_90spec")


def ratio(num: float, den: float) -> float | None:
    """num / den, None where the denominator is not positive (an undefined rate, never NaN)."""
    return float(num / den) if den > 0 else None


# ------------------------------------------------------------------------------------------- metrics
def _calls_at_each_score(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each distinct score, highest first, calling it and everything above positive (a tie together):
    (the score, true positives, images called positive)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    order = np.argsort(-p, kind="stable")
    sorted_p = p[order]
    last = np.r_[np.flatnonzero(np.diff(sorted_p) != 0), len(p) - 1]  # the end of each distinct score
    return sorted_p[last], np.cumsum(y[order])[last], last + 1


def roc_points(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score, highest first, after a first point at +inf (nothing
    called positive): scikit-learn's ``roc_curve(y, p, drop_intermediate=False)``. Both classes needed."""
    scores, true_positives, called = _calls_at_each_score(y, p)
    true_positives, false_positives = np.r_[0, true_positives], np.r_[0, called - true_positives]
    thresholds = np.r_[np.inf, scores]
    return false_positives / false_positives[-1], true_positives / true_positives[-1], thresholds


def roc_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """The ROC AUC (ties count one half), None unless both classes are present."""
    return float(auc_with_weights(y, p)[0]) if len(np.unique(y)) == 2 else None


def probabilistic_f1(y: np.ndarray, p: np.ndarray) -> float:
    """The RSNA competition metric: F1 with probabilities as soft counts (0 when there are no positives,
    as the competition's scoring code gives it)."""
    true_positive = float(np.sum(p * y))
    precision = ratio(true_positive, float(np.sum(p))) or 0.0
    recall = ratio(true_positive, float(np.sum(y))) or 0.0
    return ratio(2 * precision * recall, precision + recall) or 0.0


def sensitivity_at_specificity(y: np.ndarray, p: np.ndarray, specificity: float = 0.9) -> float | None:
    """Highest sensitivity of a threshold whose specificity is at least ``specificity`` (None without both
    classes). Every distinct score is a candidate threshold (scikit-learn's ``roc_curve`` by default drops
    points that lie on a straight line between others, and with tied scores the one that meets the
    specificity can be among them)."""
    if len(np.unique(y)) < 2:
        return None
    fpr, tpr, _ = roc_points(y, p)
    allowed = fpr <= 1 - specificity + 1e-12
    return float(tpr[allowed].max())  # the first point (nothing called positive) is always allowed


def f1_at(y: np.ndarray, p: np.ndarray, threshold: float) -> float | None:
    """F1 of calling ``p >= threshold`` positive (None without positives; 0.0 when nothing is found)."""
    y, called = np.asarray(y).astype(int), np.asarray(p, dtype=float) >= threshold
    if y.sum() == 0:
        return None
    tp = int((called & (y == 1)).sum())
    return float(2 * tp / (called.sum() + y.sum()))  # = 2PR / (P + R), 0 when tp is 0


def point_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    """AUC, probabilistic F1, sensitivity and specificity at ``threshold``, sensitivity at 90 % spec."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    called = p >= threshold
    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    return {
        "auc": roc_auc(y, p),
        "pf1": probabilistic_f1(y, p) if positives else None,
        "sensitivity": float((called & (y == 1)).sum() / positives) if positives else None,
        "specificity": float((~called & (y == 0)).sum() / negatives) if negatives else None,
        "sens_at_90spec": sensitivity_at_specificity(y, p, 0.9),
    }


# ---------------------------------------------------------------------------------------- thresholds
def f1_optimal_threshold(y: np.ndarray, p: np.ndarray) -> float | None:
    """The score at or above which calling positive gives the highest F1 (the pF1 of binarised
    predictions, as RSNA entrants tuned it); None without positives.

    Candidates are the distinct scores, and a tie is called positive together; on equal F1 the highest
    threshold wins (fewest recalls for the same F1)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    if y.sum() == 0 or len(p) == 0:
        return None
    scores, true_positives, called = _calls_at_each_score(y, p)
    f1 = 2 * true_positives / (called + y.sum())  # 2tp / (called positive + positives)
    return float(scores[int(np.argmax(f1))])  # argmax: the first maximum, the highest score


def specificity_threshold(y: np.ndarray, p: np.ndarray, specificity: float = 0.9) -> float | None:
    """The lowest threshold whose specificity is at least ``specificity`` (None without both classes)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    if len(np.unique(y)) < 2:
        return None
    fpr, _, thresholds = roc_points(y, p)
    allowed = np.flatnonzero(fpr <= 1 - specificity + 1e-12)
    # The first threshold is +inf (nothing called positive): always allowed.
    return float(min(thresholds[allowed[-1]], 1.0))


def choose_thresholds(y: np.ndarray, p: np.ndarray) -> dict:
    """The two operating points a model artifact and a prediction run record: ``pf1`` and ``spec90``."""
    return {"pf1": f1_optimal_threshold(y, p), "spec90": specificity_threshold(y, p, 0.9)}


def f1_at_out_of_fold_threshold(breasts: pd.DataFrame) -> pd.DataFrame:
    """Per fold: the threshold that maximises F1 on the *other* folds' rows (columns fold, cancer,
    probability), and the binarised pF1 (= F1) of this fold's rows at it. The fold that is scored never
    picks its own threshold. Columns fold, threshold, pf1 (None where a threshold or F1 is undefined)."""
    rows = []
    for fold in sorted(breasts["fold"].unique()):
        inside = breasts["fold"] == fold
        other, scored = breasts[~inside], breasts[inside]
        threshold = f1_optimal_threshold(other["cancer"].to_numpy(), other["probability"].to_numpy())
        value = None
        if threshold is not None:
            value = f1_at(scored["cancer"].to_numpy(), scored["probability"].to_numpy(), threshold)
        rows.append({"fold": int(fold), "threshold": threshold, "pf1": value})
    return pd.DataFrame(rows, columns=["fold", "threshold", "pf1"])


# ------------------------------------------------------------------------------ the patient bootstrap
def patient_draws(patient_ids, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The patient bootstrap: (draws, patient_of_row). ``draws[r, j]`` is how often resample ``r`` drew
    patient ``j`` (as many draws as there are patients, with replacement); ``patient_of_row[i]`` is the
    patient of row ``i``. Seeded: the same rows and seed give the same resamples everywhere."""
    _, patient = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    n = int(patient.max()) + 1 if len(patient) else 0
    if n == 0:
        return np.zeros((resamples, 0), dtype=np.int64), patient
    draws = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=resamples)
    return draws, patient


def patient_resamples(patient_ids, resamples: int, seed: int) -> np.ndarray:
    """Bootstrap weights (resamples x rows): each row weighs as often as its patient was drawn."""
    draws, patient = patient_draws(patient_ids, resamples, seed)
    return draws[:, patient].astype(float)


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of resampled values (the finite ones); NaN, NaN when there are none."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return np.nan, np.nan
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def _grouped_auc(order_groups: np.ndarray, y: np.ndarray, weights: np.ndarray, n_groups: int) -> np.ndarray:
    """Weighted AUC for each row of ``weights`` (resamples x images); ties count one half.

    ``order_groups`` numbers the distinct scores in increasing order, so the AUC is the weighted share of
    (positive, negative) pairs where the positive's group is higher, plus half the pairs in one group.
    """
    aucs = np.empty(len(weights))
    for i, w in enumerate(weights):
        pos = np.bincount(order_groups, weights=w * y, minlength=n_groups)
        neg = np.bincount(order_groups, weights=w * (1 - y), minlength=n_groups)
        below = np.cumsum(neg) - neg
        total = pos.sum() * neg.sum()
        aucs[i] = (pos * (below + 0.5 * neg)).sum() / total if total > 0 else np.nan
    return aucs


def auc_with_weights(y: np.ndarray, p: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """AUC of (y, p) once (weights None) or for every row of ``weights`` (NaN where a row has one class)."""
    _, groups = np.unique(p, return_inverse=True)
    weights = np.ones((1, len(y))) if weights is None else weights
    return _grouped_auc(groups, np.asarray(y, dtype=float), weights, int(groups.max()) + 1)


def pooled_auc(
    predictions: pd.DataFrame, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """AUC of all folds' validation predictions together (columns cancer, probability, patient_id), and
    its patient-bootstrap interval. Returns (auc, low, high); NaN where only one class is present (or no
    resamples were asked for)."""
    y, p = predictions["cancer"].to_numpy().astype(float), predictions["probability"].to_numpy()
    if len(np.unique(y)) < 2:
        return np.nan, np.nan, np.nan
    auc = float(auc_with_weights(y, p)[0])
    if resamples <= 0:
        return auc, np.nan, np.nan
    boot = auc_with_weights(y, p, patient_resamples(predictions["patient_id"], resamples, seed))
    return (auc, *interval(boot, level))


def bootstrap_metrics(
    table: pd.DataFrame, threshold: float, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict:
    """{metric: {"value", "lo", "hi"}} of :func:`point_metrics` for a table with cancer, probability and
    patient_id columns, the interval from the patient bootstrap. A resample where a metric is undefined
    (one class only) is left out of that metric's interval."""
    y = table["cancer"].to_numpy().astype(int)
    p = table["probability"].to_numpy(dtype=float)
    observed = point_metrics(y, p, threshold)
    draws, patient = patient_draws(table["patient_id"], resamples, seed)
    resampled: dict[str, list[float]] = {name: [] for name in POINT_METRICS}
    for counts in draws if len(patient) else []:
        rows = np.repeat(np.arange(len(patient)), counts[patient])  # each row as often as its patient
        for name, value in point_metrics(y[rows], p[rows], threshold).items():
            if value is not None:
                resampled[name].append(value)
    out = {}
    for name in POINT_METRICS:
        low, high = interval(np.array(resampled[name]), level)
        out[name] = {
            "value": observed[name],
            "lo": None if np.isnan(low) else low,
            "hi": None if np.isnan(high) else high,
        }
    return out
