"""mammoflow.stats: one patient bootstrap for the report and predict, thresholds that agree with sklearn."""

import ast

import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from sklearn.metrics import f1_score

from mammoflow.stats import (
    auc_with_weights,
    bootstrap_metrics,
    f1_at,
    f1_optimal_threshold,
    interval,
    patient_draws,
    patient_resamples,
)


def _table(seed: int = 4, patients: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    views = rng.integers(1, 4, patients)  # patients with 1-3 rows: row and patient resampling differ
    patient = np.repeat(np.arange(patients), views)
    cancer = np.repeat(rng.random(patients) < 0.4, views).astype(int)
    probability = np.clip(0.3 * cancer + rng.random(len(patient)) * 0.7, 0, 1)
    return pd.DataFrame({"patient_id": patient, "cancer": cancer, "probability": probability})


def test_predict_and_the_report_resample_the_same_patients():
    table = _table()
    y, p = table["cancer"].to_numpy(), table["probability"].to_numpy()
    weights = patient_resamples(table["patient_id"], 300, seed=7)
    expected = interval(auc_with_weights(y, p, weights))
    found = bootstrap_metrics(table, 0.5, resamples=300, seed=7)["auc"]
    assert (found["lo"], found["hi"]) == pytest.approx(expected)
    # A patient's rows are drawn together: every resample holds a patient's rows equally often.
    draws, patient = patient_draws(table["patient_id"], 300, seed=7)
    assert (draws.sum(axis=1) == patient.max() + 1).all()
    assert (weights == draws[:, patient]).all()


def test_f1_at_a_threshold_agrees_with_sklearn_and_the_optimum_is_optimal():
    table = _table(seed=5)
    y, p = table["cancer"].to_numpy(), np.round(table["probability"].to_numpy(), 1)  # ties
    for threshold in (0.0, 0.3, 0.55, 0.9, 1.1):
        assert f1_at(y, p, threshold) == pytest.approx(f1_score(y, p >= threshold, zero_division=0))
    best = f1_optimal_threshold(y, p)
    assert f1_at(y, p, best) == pytest.approx(max(f1_at(y, p, t) for t in np.unique(p)))
    assert f1_at(np.zeros(3), p[:3], 0.5) is None and f1_optimal_threshold(np.zeros(3), p[:3]) is None


def test_bootstrap_of_an_empty_table_has_no_interval():
    empty = pd.DataFrame({"patient_id": [], "cancer": [], "probability": []})
    out = bootstrap_metrics(empty, 0.5, resamples=20)
    assert out["auc"] == {"value": None, "lo": None, "hi": None}


def test_stats_imports_nothing_of_mammoflow():
    """Training, the report and predict import the statistics; it imports none of them (no cycle)."""
    tree = ast.parse((REPO / "src/mammoflow/stats.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert {name.split(".")[0] for name in imported} <= {"__future__", "numpy", "pandas", "sklearn"}
