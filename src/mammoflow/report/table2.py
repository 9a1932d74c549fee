"""The Table 2 replica: every cell of the matrix, aggregated over folds, beside the paper's numbers.

A cell (protocol, resolution, data set, model, fold) is ``ok`` when its ``metrics.json`` exists,
``failed`` when it does not and its log shows an error (the job ran and did not finish), and ``missing``
otherwise. Aggregates are over the ``ok`` folds: mean and sample standard deviation (ddof=1; none with
one fold). The paper's values are shown only where the resolution, data set and model all match one of
its rows, and only beside the numbers scored as it scored them.

``scored``: ``all`` = every validation image, as published (under ``paper`` that includes the synthetic
images that reached validation); ``real`` = real images only (``metrics.json`` → ``real_only``, written
where a cell validated synthetic images), a second row beneath the first.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mammoflow import paths
from mammoflow.classify.metrics import breast_level
from mammoflow.matrix import Matrix
from mammoflow.stats import f1_at_out_of_fold_threshold, pooled_auc

PAPER_METRICS = ("accuracy", "auc", "precision", "recall", "f1")
# Beyond the paper: name in the tables -> path in metrics.json's "metrics" (or its "real_only").
EXTRA_METRICS = {
    "pf1": ("pf1",),
    "sens_at_90_spec": ("sensitivity_at_90_specificity",),
    "breast_auc": ("breast", "auc"),
    "breast_pf1": ("breast", "pf1"),
    "breast_sens_at_90_spec": ("breast", "sensitivity_at_90_specificity"),
}
# Computed here from the folds' predictions: breast-level F1 at the threshold chosen on the other folds.
OOF_METRICS = ("breast_pf1_oof", "breast_threshold_oof")
DATASET_ORDER = ("original", "processed", "augmented")
DATASET_LABELS = {"original": "original", "processed": "processed", "augmented": "processed + synthetic"}
KEYS = ["protocol", "resolution", "dataset", "model", "scored"]
PAPER_TABLE = Path(__file__).resolve().parent / "paper_table2.csv"


def _dig(metrics: dict, path: tuple[str, ...]):
    for key in path:
        metrics = metrics.get(key) if isinstance(metrics, dict) else None
    return metrics


def _metric_columns(metrics: dict) -> dict:
    row = {name: metrics.get(name) for name in PAPER_METRICS}
    row.update({name: _dig(metrics, where) for name, where in EXTRA_METRICS.items()})
    row.update({name: metrics.get("confusion", {}).get(name) for name in ("tn", "fp", "fn", "tp")})
    row["valid_images"] = metrics.get("n")
    return row


def load_cells(results: Path, matrix: Matrix, workdir: Path | None = None) -> pd.DataFrame:
    """One row per expected cell and way of scoring: status, the metrics as columns (NaN where undefined),
    warnings, seconds, device, weights."""
    workdir = Path(results).parent if workdir is None else Path(workdir)
    rows = []
    for key in matrix.cells():
        path = Path(paths.cell_dir(*key, root=results)) / "metrics.json"
        row = dict(zip([*KEYS[:4], "fold"], key, strict=True), scored="all")
        if not path.is_file():
            log = Path(paths.cell_log("train", *key, logs=workdir / paths.LOGS))
            failed = log.is_file() and _log_has_error(log)
            rows.append(
                {
                    **row,
                    "status": "failed" if failed else "missing",
                    "warnings": _last_line(log) if failed else "",
                }
            )
            continue
        try:
            summary = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
        metrics = summary.get("metrics", {})
        row.update(
            status="ok",
            warnings="; ".join(summary.get("warnings", [])),
            seconds=summary.get("seconds"),
            weights=summary.get("weights"),
            device=summary.get("device"),
        )
        rows.append({**row, **_metric_columns(metrics)})
        if isinstance(metrics.get("real_only"), dict):
            rows.append({**row, "scored": "real", **_metric_columns(metrics["real_only"])})
    frame = pd.DataFrame(rows)
    numeric = [*PAPER_METRICS, *EXTRA_METRICS, "tn", "fp", "fn", "tp", "valid_images", "seconds"]
    for name in numeric:
        frame[name] = pd.to_numeric(frame.get(name), errors="coerce").astype(float)
    return frame


def _log_has_error(path: Path) -> bool:
    """A job's log that ends in an exception (a log without one belongs to outputs deleted since)."""
    text = path.read_text(errors="replace")
    return "Traceback" in text or "Error" in text or "Killed" in text


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return f"log {path}: {lines[-1][:200]}" if lines else f"log {path} is empty"


def _mean_sd(values, prefix: str) -> dict:
    values = pd.to_numeric(pd.Series(values), errors="coerce").dropna().to_numpy(dtype=float)
    return {
        f"{prefix}_mean": float(values.mean()) if len(values) else np.nan,
        f"{prefix}_sd": float(values.std(ddof=1)) if len(values) > 1 else np.nan,
        f"{prefix}_n": len(values),
    }


def summarize(cells: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over the ok folds of each (protocol, resolution, data set, model, scored)."""
    rows = []
    for key, group in cells.groupby(KEYS, sort=False):
        ok = group[group["status"] == "ok"]
        row = dict(zip(KEYS, key, strict=True), folds_ok=len(ok), folds=len(group))
        for status in ("failed", "missing"):
            row[f"{status}_folds"] = ",".join(str(f) for f in group.loc[group["status"] == status, "fold"])
        for name in (*PAPER_METRICS, *EXTRA_METRICS):
            row.update(_mean_sd(ok[name], name))
        rows.append(row)
    frame = pd.DataFrame(rows)
    # A real-only row exists for finished cells only: its folds are counted against all the cells.
    counted = ["folds", "failed_folds", "missing_folds"]
    published = frame[frame["scored"] == "all"]
    real = frame[frame["scored"] == "real"].drop(columns=counted)
    real = real.merge(published[[*KEYS[:4], *counted]], on=KEYS[:4])[frame.columns]
    return pd.concat([published, real], ignore_index=True)


def paper_table(path: Path = PAPER_TABLE) -> pd.DataFrame:
    table = pd.read_csv(path)
    expected = ["resolution", "dataset", "model", *PAPER_METRICS]
    if list(table.columns) != expected:
        raise ValueError(f"{path}: columns {list(table.columns)}, expected {expected}")
    return table


def with_paper(summary: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Adds ``{metric}_paper`` (the published value) and ``{metric}_diff`` (ours - paper) where a row
    matches and is scored as published (``scored == "all"``)."""
    renamed = paper.assign(scored="all").rename(columns={m: f"{m}_paper" for m in PAPER_METRICS})
    merged = summary.merge(renamed, how="left", on=["resolution", "dataset", "model", "scored"])
    for name in PAPER_METRICS:
        merged[f"{name}_diff"] = merged[f"{name}_mean"] - merged[f"{name}_paper"]
    return merged


# ------------------------------------------------------------------ pooled predictions (stats: the AUC)
def pooled_predictions(results: Path, cells: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    """The ok folds' predictions.parquet concatenated per table row (KEYS), with the cell's ``fold``;
    rows scored ``real`` keep the real images only."""
    pooled = {}
    for key, group in cells[cells["status"] == "ok"].groupby(KEYS, sort=False):
        frames = []
        for fold in group["fold"]:
            path = Path(paths.cell_dir(*key[:4], fold, root=results)) / "predictions.parquet"
            if path.is_file():
                frames.append(pd.read_parquet(path).assign(fold=fold))
        if frames:
            frame = pd.concat(frames, ignore_index=True)
            if key[4] == "real" and "source" in frame.columns:
                frame = frame[frame["source"].astype(str) == "real"].reset_index(drop=True)
            pooled[key] = frame
    return pooled


def breast_oof(predictions: pd.DataFrame) -> pd.DataFrame:
    """Breast-level F1 of each fold at the threshold chosen on the other folds' breasts (each fold's
    breasts are the means of that fold's views): columns fold, threshold, pf1."""
    breasts = pd.concat(
        [breast_level(part).assign(fold=fold) for fold, part in predictions.groupby("fold")],
        ignore_index=True,
    )
    return f1_at_out_of_fold_threshold(breasts)


def add_pooled(summary: pd.DataFrame, pooled: dict[tuple, pd.DataFrame], resamples: int, seed: int):
    """Pooled AUC with its interval, and the breast-level F1 at out-of-fold thresholds (mean ± sd)."""
    rows = []
    for key in summary[KEYS].itertuples(index=False):
        predictions = pooled.get(tuple(key))
        row = dict(zip(("pooled_auc", "pooled_auc_low", "pooled_auc_high"), (np.nan,) * 3, strict=True))
        if predictions is not None:
            row.update(zip(row, pooled_auc(predictions, resamples, seed), strict=True))
            oof = breast_oof(predictions) if predictions["fold"].nunique() > 1 else None
            if oof is not None:
                row.update(_mean_sd(oof["pf1"], "breast_pf1_oof"))
                row.update(_mean_sd(oof["threshold"], "breast_threshold_oof"))
        rows.append(row)
    return pd.concat([summary.reset_index(drop=True), pd.DataFrame(rows)], axis=1)


# ------------------------------------------------------------------------------------------ CAM scores
def cam_scores(results: Path, cells: pd.DataFrame) -> pd.DataFrame:
    """Pointing-game hit rate, chance level and mean IoU per (protocol, resolution, data set, model),
    pooled over the folds whose cam/summary.json exists (weighted by the images scored in each)."""
    rows = []
    for key, group in cells[cells["scored"] == "all"].groupby(KEYS[:4], sort=False):
        sums = np.zeros(4)  # scored, hits, chance, iou
        for fold in group["fold"]:
            path = Path(paths.cam_dir(*key, fold, root=results)) / "summary.json"
            summary = json.loads(path.read_text()) if path.is_file() else {}
            n = summary.get("scored") or 0
            if n and summary.get("hit_rate") is not None:
                parts = (
                    summary["hit_rate"],
                    summary.get("chance_hit_rate") or 0,
                    summary.get("mean_iou") or 0,
                )
                sums += n * np.array([1, *parts])
        means = sums[1:] / sums[0] if sums[0] else [np.nan] * 3
        rows.append((*key, "all", int(sums[0]), *means))
    return pd.DataFrame(rows, columns=[*KEYS, "cam_scored", "cam_hit_rate", "cam_chance", "cam_iou"])


# ------------------------------------------------------------------------------------------------ the table
def build_table(
    results: Path, matrix: Matrix, resamples: int = 1000, seed: int = 0, workdir: Path | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(cells, table, pooled predictions); the table has a row per (protocol, resolution, data set, model,
    scored)."""
    cells = load_cells(results, matrix, workdir)
    pooled = pooled_predictions(results, cells)
    summary = add_pooled(summarize(cells), pooled, resamples, seed)
    summary = with_paper(summary, paper_table())
    summary = summary.merge(cam_scores(results, cells), how="left", on=KEYS)
    ranks = {
        "dataset": {d: i for i, d in enumerate(DATASET_ORDER)},
        "model": {m: i for i, m in enumerate(matrix.models)},
        "scored": {"all": 0, "real": 1},
    }
    summary = summary.sort_values(
        ["protocol", "resolution", "dataset", "model", "scored"],
        key=lambda column: column.map(ranks[column.name]) if column.name in ranks else column,
        kind="stable",
    )
    return cells, summary.reset_index(drop=True), pooled


def table_csv(table: pd.DataFrame) -> pd.DataFrame:
    """The columns of table2.csv, in a fixed order."""
    columns = [*KEYS, "folds_ok", "folds", "failed_folds", "missing_folds"]
    for name in PAPER_METRICS:
        columns += [f"{name}_mean", f"{name}_sd", f"{name}_paper", f"{name}_diff"]
    for name in (*EXTRA_METRICS, *OOF_METRICS):
        columns += [f"{name}_mean", f"{name}_sd"]
    columns += [
        "pooled_auc",
        "pooled_auc_low",
        "pooled_auc_high",
        "cam_scored",
        "cam_hit_rate",
        "cam_chance",
        "cam_iou",
    ]
    return table.reindex(columns=columns)


def fmt(value, digits: int = 2) -> str:
    missing = value is None or (isinstance(value, float) and not np.isfinite(value))
    return "—" if missing else f"{value:.{digits}f}"


def mean_sd(row, name: str) -> str:
    mean, sd = row.get(f"{name}_mean", np.nan), row.get(f"{name}_sd", np.nan)
    if not np.isfinite(mean):
        return "—"
    return f"{mean:.2f} ± {sd:.2f}" if np.isfinite(sd) else f"{mean:.2f}"


def status_text(row) -> str:
    if row["folds_ok"] == row["folds"]:
        return f"{row['folds']} folds"
    parts = [f"{row['folds_ok']}/{row['folds']} folds"]
    parts += [f"{s}: {row[f'{s}_folds']}" for s in ("failed", "missing") if row[f"{s}_folds"]]
    return "; ".join(parts)


def row_label(row) -> str:
    label = DATASET_LABELS.get(row["dataset"], row["dataset"])
    return label + (", real images only" if row["scored"] == "real" else "")
