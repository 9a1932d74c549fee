"""Cell metrics agree with scikit-learn, and edge cases give defined values, never NaN."""

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from mammoflow.classify.metrics import binary_metrics, breast_level, cell_metrics
from mammoflow.stats import (
    f1_at_out_of_fold_threshold,
    f1_optimal_threshold,
    probabilistic_f1,
    roc_auc,
    roc_points,
    sensitivity_at_specificity,
    specificity_threshold,
)


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
    assert [c["tn"], c["fp"], c["fn"], c["tp"]] == confusion_matrix(y, hard, labels=[0, 1]).ravel().tolist()


@pytest.mark.parametrize("distinct", [3, 20, 10_000])  # many ties, some, none
def test_roc_points_and_auc_equal_sklearns(distinct):
    # mammoflow computes ROC points and AUC with numpy (scikit-learn's import costs each cell a second).
    rng = np.random.default_rng(distinct)
    y = rng.integers(0, 2, 500)
    p = np.round(np.clip(y * 0.2 + rng.random(500), 0, 1) * (distinct - 1)) / (distinct - 1)
    for ours, theirs in zip(roc_points(y, p), roc_curve(y, p, drop_intermediate=False), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), rel=1e-12)
    assert roc_auc(np.zeros(5), p[:5]) is None


def test_specificity_threshold_is_the_lowest_that_keeps_the_specificity():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 200)
    p = np.round(rng.random(200), 2)
    t = specificity_threshold(y, p, 0.9)
    called = p >= t
    assert (~called & (y == 0)).sum() / (y == 0).sum() >= 0.9
    lower = p[p < t]
    if len(lower):  # the next lower score would call too many negatives
        called = p >= lower.max()
        assert (~called & (y == 0)).sum() / (y == 0).sum() < 0.9


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


def test_sensitivity_at_90_specificity_sees_every_threshold_of_a_tie_run():
    # One positive alone on top, then nine (positive, negative) ties, then 71 negatives: the points after
    # each tie lie on one straight line, which roc_curve's default drops. At the eighth tie 8 of 80
    # negatives (specificity 0.9) and 9 of 10 positives are called: 0.9 (the dropped points gave 0.1).
    y = np.array([1] + [1, 0] * 9 + [0] * 71)
    p = np.array([1.0] + [s for k in range(9) for s in (0.9 - 0.01 * k,) * 2] + [0.0] * 71)
    assert (y == 0).sum() == 80 and y.sum() == 10
    assert sensitivity_at_specificity(y, p) == pytest.approx(0.9)


def test_undefined_recall_and_f1_are_none_but_precision_of_no_call_is_zero():
    no_positives = binary_metrics(np.array([0, 0, 0]), np.array([0.2, 0.7, 0.1]))
    assert no_positives["recall"] is None and no_positives["f1"] is None
    assert no_positives["precision"] == 0.0  # one false positive: defined
    nothing_called = binary_metrics(np.array([1, 0, 0]), np.array([0.2, 0.3, 0.1]))
    assert nothing_called["precision"] == 0.0 and nothing_called["recall"] == 0.0
    assert nothing_called["f1"] == 0.0


def test_f1_optimal_threshold_calls_ties_together_and_matches_a_brute_force_search():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    p = np.round(np.clip(y * 0.2 + rng.random(60) * 0.8, 0, 1), 1)  # many ties
    best = f1_optimal_threshold(y, p)
    f1 = {t: f1_score(y, (p >= t).astype(int)) for t in np.unique(p)}
    assert f1[best] == pytest.approx(max(f1.values()))
    assert best == max(t for t, v in f1.items() if v == pytest.approx(max(f1.values())))
    assert f1_optimal_threshold(np.zeros(4), np.arange(4) / 4) is None


def test_out_of_fold_threshold_is_chosen_without_the_scored_fold():
    # Fold 0 alone would pick 0.9; folds 1 and 2 pick 0.3, which fold 0 is scored at.
    breasts = pd.DataFrame({
        "fold": [0, 0, 0, 1, 1, 1, 2, 2, 2],
        "cancer": [1, 0, 0, 1, 0, 0, 1, 0, 0],
        "probability": [0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.35, 0.25, 0.1],
    })  # fmt: skip
    table = f1_at_out_of_fold_threshold(breasts).set_index("fold")
    assert table.loc[0, "threshold"] == pytest.approx(0.3)
    assert table.loc[0, "pf1"] == pytest.approx(f1_score([1, 0, 0], [1, 1, 1]))
    # Folds 0 and 2: 0.9 and 0.35 both give F1 2/3; the higher one is taken, and fold 1 calls nothing.
    assert table.loc[1, "threshold"] == pytest.approx(0.9)
    assert table.loc[1, "pf1"] == pytest.approx(0.0)


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
