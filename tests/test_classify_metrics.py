"""Cell metrics agree with scikit-learn, and edge cases give defined values, never NaN."""

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from mammoflow.classify.metrics import binary_metrics, breast_level, cell_metrics, probabilistic_f1


def test_agrees_with_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(y * 0.3 + rng.random(300) * 0.7, 0, 1)
    m = binary_metrics(y, p)
    hard = (p >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, hard))
    assert m["auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["precision"] == pytest.approx(precision_score(y, hard))
    assert m["recall"] == pytest.approx(recall_score(y, hard))
    assert m["f1"] == pytest.approx(f1_score(y, hard))
    c = m["confusion"]
    assert c["tp"] + c["fn"] == y.sum() and c["tp"] + c["fp"] == hard.sum()


def test_probabilistic_f1_by_hand():
    y = np.array([1, 0, 1, 0])
    p = np.array([0.8, 0.4, 0.6, 0.0])
    precision, recall = 1.4 / 1.8, 1.4 / 2
    assert probabilistic_f1(y, p) == pytest.approx(2 * precision * recall / (precision + recall))


def test_sensitivity_at_90_specificity():
    y = np.array([0] * 10 + [1] * 4)
    p = np.array([0.1] * 9 + [0.95] + [0.9, 0.8, 0.2, 0.05])  # one negative above every positive
    m = binary_metrics(y, p)
    # One false positive of 10 negatives is allowed; at threshold 0.2 it is the only one: 3 of 4 found.
    assert m["sensitivity_at_90_specificity"] == pytest.approx(0.75)


def _frame(y, p):
    n = len(y)
    return pd.DataFrame({"patient_id": np.arange(n) // 2, "laterality": ["L", "R"] * (n // 2),
                         "cancer": y, "probability": p})  # fmt: skip


@pytest.mark.parametrize(
    ("y", "p", "warning"),
    [
        ([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4], "no positive"),
        ([1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4], "only positive"),
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], "constant predictions"),
    ],
)
def test_edge_cases_are_defined(y, p, warning):
    metrics, warnings = cell_metrics(_frame(np.array(y), np.array(p, float)))
    assert any(warning in w for w in warnings)
    values = [v for v in _leaves(metrics)]
    assert not any(isinstance(v, float) and math.isnan(v) for v in values)
    if warning != "constant predictions":
        assert metrics["auc"] is None
    else:
        assert metrics["auc"] == 0.5


def test_breast_level_means_images_of_a_breast():
    frame = pd.DataFrame({"patient_id": [1, 1, 1, 1], "laterality": ["L", "L", "R", "R"],
                          "cancer": [1, 1, 0, 0], "probability": [0.2, 0.6, 0.1, 0.3]})  # fmt: skip
    breasts = breast_level(frame)
    assert breasts["probability"].tolist() == pytest.approx([0.4, 0.2])
    assert breasts["cancer"].tolist() == [1, 0]


def _leaves(d):
    for v in d.values():
        yield from (_leaves(v) if isinstance(v, dict) else [v])
