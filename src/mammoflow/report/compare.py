"""Beside the Table 2 replica: the paper's protocol against the clean one on the same real images, and
the external tests that `mammoflow predict` scored on labelled data.

Protocol comparison: for each resolution, data set and model run under both protocols, the real images
that both validated (every real image is validated once per protocol: the folds differ, the images do
not), each with its out-of-fold probability under each protocol; AUC under ``paper`` minus AUC under
``clean`` on exactly those images, and a percentile interval from one bootstrap that resamples patients
and scores both protocols on the same resample (paired, so the interval is that of the difference).
"""

from __future__ import annotations

import json
from glob import glob
from pathlib import Path

import numpy as np
import pandas as pd

from mammoflow import paths
from mammoflow.stats import auc_with_weights, interval, patient_resamples

COMPARISON_COLUMNS = [
    "resolution",
    "dataset",
    "model",
    "images",
    "patients",
    "positives",
    "auc_clean",
    "auc_paper",
    "difference",
    "low",
    "high",
]


def paired_auc_difference(
    clean: pd.DataFrame, paper: pd.DataFrame, resamples: int = 1000, seed: int = 0
) -> dict | None:
    """AUC(paper) − AUC(clean) on the real images both scored, with a paired patient bootstrap interval.

    Both frames: image_id, patient_id, cancer, probability (and source; synthetic rows are left out).
    None when the shared images hold only one class."""
    real = [f[f["source"].astype(str) == "real"] if "source" in f.columns else f for f in (clean, paper)]
    both = real[0].merge(real[1][["image_id", "probability"]], on="image_id", suffixes=("_clean", "_paper"))
    y = both["cancer"].to_numpy(dtype=float)
    if len(np.unique(y)) < 2:
        return None
    weights = patient_resamples(both["patient_id"], resamples, seed) if resamples > 0 else None
    aucs = {}
    for protocol in ("clean", "paper"):
        p = both[f"probability_{protocol}"].to_numpy()
        aucs[protocol] = (
            auc_with_weights(y, p)[0],
            auc_with_weights(y, p, weights) if weights is not None else None,
        )
    low, high = (np.nan, np.nan) if weights is None else interval(aucs["paper"][1] - aucs["clean"][1])
    return {
        "images": len(both),
        "patients": both["patient_id"].nunique(),
        "positives": int(y.sum()),
        "auc_clean": float(aucs["clean"][0]),
        "auc_paper": float(aucs["paper"][0]),
        "difference": float(aucs["paper"][0] - aucs["clean"][0]),
        "low": low,
        "high": high,
    }


def protocol_comparison(
    pooled: dict[tuple, pd.DataFrame], resamples: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """One row per (resolution, data set, model) with pooled predictions under both protocols."""
    rows = []
    for (protocol, resolution, dataset, model, scored), clean in pooled.items():
        paper = pooled.get(("paper", resolution, dataset, model, "all"))
        if protocol != "clean" or scored != "all" or paper is None:
            continue
        result = paired_auc_difference(clean, paper, resamples, seed)
        if result is not None:
            rows.append({"resolution": resolution, "dataset": dataset, "model": model, **result})
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def reading(comparison: pd.DataFrame) -> str:
    """One sentence that reads the comparison: how often and by how much the paper's protocol scores the
    same real images higher, and in how many rows the interval excludes no difference."""
    if comparison.empty:
        return (
            "No resolution, data set and model has run under both protocols, so there is nothing to compare."
        )
    n, higher = len(comparison), int((comparison["difference"] > 0).sum())
    above = int((comparison["low"] > 0).sum())
    below = int((comparison["high"] < 0).sum())
    median = comparison["difference"].median()
    return (
        f"On the same real images, the paper's protocol scores a higher AUC than the clean one in {higher} "
        f"of "
        f"{n} comparisons (median difference {median:+.3f}); the 95% interval lies wholly above zero in "
        f"{above}, wholly below in {below}, and includes zero in {n - above - below}"
        + (", so at this size the data cannot tell the protocols apart." if above == below == 0 else ".")
    )


def external_tests(results: Path) -> list[dict]:
    """Every results/predict/{name}/external.json that exists (written by `mammoflow predict` on labelled
    data), each with ``path`` added; a file that is not valid JSON is an error naming it."""
    tests = []
    for path in sorted(map(Path, glob(paths.predict_dir("*", results) + "/external.json"))):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
        # Fields a prediction run did not write show as "?" rather than stopping the report.
        blank = dict.fromkeys(("data_dir", "protocol", "resolution", "dataset", "aggregation", "n_images",
                               "n_breasts", "n_failed"), "?")  # fmt: skip
        thresholds = {"pf1_oof": None, "spec90_oof": None, **(record.get("thresholds") or {})}
        tests.append({**blank, "name": path.parent.name, "models": [], **record, "thresholds": thresholds,
                      "path": str(path)})  # fmt: skip
    return tests


METRIC_NAMES = {"auc": "AUC", "pf1": "pF1", "sens_at_90spec": "sensitivity at 90% specificity"}


def external_table(record: dict) -> pd.DataFrame:
    """One external test as a table: a row per metric, its image- and breast-level value with the 95%
    interval as ``external.json`` gives them (``{"value", "lo", "hi"}``), "—" where a level lacks it."""

    def text(entry) -> str:
        entry = entry if isinstance(entry, dict) else {"value": entry}
        value, low, high = (entry.get(k) for k in ("value", "lo", "hi"))
        if value is None:
            return "—"
        return f"{value:.3f}" + (f" ({low:.3f}–{high:.3f})" if low is not None and high is not None else "")

    levels = {level: record.get(level) or {} for level in ("image", "breast")}
    metrics = dict.fromkeys([*levels["image"], *levels["breast"]])
    rows = [(METRIC_NAMES.get(m, m), *(text(levels[level].get(m)) for level in levels)) for m in metrics]
    return pd.DataFrame(rows, columns=["metric", "image (95% CI)", "breast (95% CI)"])
