"""The Table 2 replica: every cell of the matrix, aggregated over folds, beside the paper's numbers.

A cell (protocol, resolution, data set, model, fold) is ``ok`` when its ``metrics.json`` exists,
``failed`` when it does not and its log shows an error (the job ran and did not finish), and ``missing``
otherwise.
Aggregates are over the ``ok`` folds: mean and sample standard deviation (ddof=1; none with one fold).
The paper's values are shown only where the resolution, data set and model all match one of its rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

PAPER_METRICS = ("accuracy", "auc", "precision", "recall", "f1")
# Beyond the paper: name in the tables -> path in metrics.json's "metrics".
EXTRA_METRICS = {
    "pf1": ("pf1",),
    "breast_auc": ("breast", "auc"),
    "sens_at_90_spec": ("sensitivity_at_90_specificity",),
}
DATASET_ORDER = ("original", "processed", "augmented")
DATASET_LABELS = {"original": "original", "processed": "processed", "augmented": "processed + synthetic"}
KEYS = ["protocol", "resolution", "dataset", "model"]
PAPER_TABLE = Path(__file__).resolve().parent / "paper_table2.csv"


@dataclass(frozen=True)
class Matrix:
    """The cells the configuration asks for."""

    protocols: list[str]
    resolutions: list[int]
    datasets: list[str]
    models: list[str]
    k: int

    @classmethod
    def from_config(cls, config: dict) -> Matrix:
        return cls(
            list(config["protocols"]),
            [int(r) for r in config["resolutions"]],
            list(config["datasets"]),
            list(config["models"]),
            int(config["folds"]["k"]),
        )

    def cells(self) -> pd.DataFrame:
        rows = [
            (p, r, d, m, f)
            for p in self.protocols
            for r in self.resolutions
            for d in self.datasets
            for m in self.models
            for f in range(self.k)
        ]
        return pd.DataFrame(rows, columns=[*KEYS, "fold"])


def cell_dir(results: Path, protocol, resolution, dataset, model, fold) -> Path:
    return Path(results) / "train" / protocol / str(resolution) / dataset / model / f"fold{fold}"


def cell_log(workdir: Path, protocol, resolution, dataset, model, fold) -> Path:
    return Path(workdir) / "logs" / "train" / protocol / str(resolution) / dataset / model / f"fold{fold}.log"


def _dig(metrics: dict, path: tuple[str, ...]):
    value = metrics
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def load_cells(results: Path, matrix: Matrix, workdir: Path | None = None) -> pd.DataFrame:
    """One row per expected cell: status, the metrics as columns (NaN where undefined), warnings, seconds."""
    workdir = Path(results).parent if workdir is None else Path(workdir)
    rows = []
    for cell in matrix.cells().itertuples(index=False):
        key = tuple(cell)
        path = cell_dir(results, *key) / "metrics.json"
        row = dict(zip([*KEYS, "fold"], key, strict=True))
        if path.is_file():
            try:
                summary = json.loads(path.read_text())
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: not valid JSON ({error})") from error
            metrics = summary.get("metrics", {})
            row["status"] = "ok"
            for name in PAPER_METRICS:
                row[name] = metrics.get(name)
            for name, where in EXTRA_METRICS.items():
                row[name] = _dig(metrics, where)
            confusion = metrics.get("confusion", {})
            for name in ("tn", "fp", "fn", "tp"):
                row[name] = confusion.get(name)
            row["valid_images"] = metrics.get("n")
            row["warnings"] = "; ".join(summary.get("warnings", []))
            row["seconds"] = summary.get("seconds")
            row["weights"] = summary.get("weights")
            row["device"] = summary.get("device")
        else:
            log = cell_log(workdir, *key)
            failed = log.is_file() and _log_has_error(log)
            row["status"] = "failed" if failed else "missing"
            row["warnings"] = _last_line(log) if failed else ""
        rows.append(row)
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


def summarize(cells: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over the ok folds of each (protocol, resolution, data set, model)."""
    rows = []
    for key, group in cells.groupby(KEYS, sort=False):
        ok = group[group["status"] == "ok"]
        row = dict(zip(KEYS, key, strict=True))
        row["folds_ok"] = len(ok)
        row["folds"] = len(group)
        row["failed_folds"] = ",".join(str(f) for f in group.loc[group["status"] == "failed", "fold"])
        row["missing_folds"] = ",".join(str(f) for f in group.loc[group["status"] == "missing", "fold"])
        for name in (*PAPER_METRICS, *EXTRA_METRICS):
            values = ok[name].dropna().to_numpy()
            row[f"{name}_mean"] = float(values.mean()) if len(values) else np.nan
            row[f"{name}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan
            row[f"{name}_n"] = len(values)
        rows.append(row)
    return pd.DataFrame(rows)


def paper_table(path: Path = PAPER_TABLE) -> pd.DataFrame:
    table = pd.read_csv(path)
    expected = ["resolution", "dataset", "model", *PAPER_METRICS]
    if list(table.columns) != expected:
        raise ValueError(f"{path}: columns {list(table.columns)}, expected {expected}")
    return table


def with_paper(summary: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Adds ``{metric}_paper`` (the published value) and ``{metric}_diff`` (ours - paper) where a row
    matches."""
    renamed = paper.rename(columns={m: f"{m}_paper" for m in PAPER_METRICS})
    merged = summary.merge(renamed, how="left", on=["resolution", "dataset", "model"])
    for name in PAPER_METRICS:
        merged[f"{name}_diff"] = merged[f"{name}_mean"] - merged[f"{name}_paper"]
    return merged


# ------------------------------------------------------------------------ pooled AUC with a patient bootstrap
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


def pooled_auc(
    predictions: pd.DataFrame, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """AUC of all folds' validation predictions together, and a percentile interval from resampling
    patients with replacement (a patient's images stay together, as they are not independent).

    Returns (auc, low, high); NaN where only one class is present (or no resamples were asked for).
    """
    y = predictions["cancer"].to_numpy().astype(float)
    if len(np.unique(y)) < 2:
        return np.nan, np.nan, np.nan
    _, groups = np.unique(predictions["probability"].to_numpy(), return_inverse=True)
    n_groups = int(groups.max()) + 1
    auc = float(_grouped_auc(groups, y, np.ones((1, len(y))), n_groups)[0])
    if resamples <= 0:
        return auc, np.nan, np.nan
    _, patient = np.unique(predictions["patient_id"].astype(str).to_numpy(), return_inverse=True)
    n_patients = int(patient.max()) + 1
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_patients, np.full(n_patients, 1.0 / n_patients), size=resamples)
    boot = _grouped_auc(groups, y, counts[:, patient].astype(float), n_groups)
    boot = boot[np.isfinite(boot)]
    if not len(boot):
        return auc, np.nan, np.nan
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail])
    return auc, float(low), float(high)


def pooled_predictions(results: Path, cells: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    """The ok folds' predictions.parquet concatenated per (protocol, resolution, data set, model)."""
    pooled = {}
    for key, group in cells[cells["status"] == "ok"].groupby(KEYS, sort=False):
        frames = []
        for fold in group["fold"]:
            path = cell_dir(results, *key, fold) / "predictions.parquet"
            if path.is_file():
                frames.append(pd.read_parquet(path))
        if frames:
            pooled[key] = pd.concat(frames, ignore_index=True)
    return pooled


def add_pooled_auc(summary: pd.DataFrame, pooled: dict[tuple, pd.DataFrame], resamples: int, seed: int):
    values = []
    for row in summary[KEYS].itertuples(index=False):
        predictions = pooled.get(tuple(row))
        values.append(pooled_auc(predictions, resamples, seed) if predictions is not None else (np.nan,) * 3)
    summary = summary.copy()
    summary[["pooled_auc", "pooled_auc_low", "pooled_auc_high"]] = np.array(values, dtype=float).reshape(
        -1, 3
    )
    return summary


# ------------------------------------------------------------------------------------------ CAM scores
def cam_scores(results: Path, cells: pd.DataFrame) -> pd.DataFrame:
    """Pointing-game hit rate, chance level and mean IoU per (protocol, resolution, data set, model),
    pooled over the folds whose cam/summary.json exists (weighted by the images scored in each)."""
    rows = []
    for key, group in cells.groupby(KEYS, sort=False):
        hits = chance = iou = scored = 0.0
        scorable = None
        for fold in group["fold"]:
            path = Path(results) / "cam" / Path(*map(str, key)) / f"fold{fold}" / "summary.json"
            if not path.is_file():
                continue
            summary = json.loads(path.read_text())
            scorable = bool(summary.get("scorable")) or bool(scorable)
            n = summary.get("scored") or 0
            if n and summary.get("hit_rate") is not None:
                scored += n
                hits += summary["hit_rate"] * n
                chance += (summary.get("chance_hit_rate") or 0.0) * n
                iou += (summary.get("mean_iou") or 0.0) * n
        row = dict(zip(KEYS, key, strict=True))
        row["cam_scored"] = int(scored)
        row["cam_hit_rate"] = hits / scored if scored else np.nan
        row["cam_chance"] = chance / scored if scored else np.nan
        row["cam_iou"] = iou / scored if scored else np.nan
        row["cam_scorable"] = scorable
        rows.append(row)
    return pd.DataFrame(
        rows, columns=[*KEYS, "cam_scored", "cam_hit_rate", "cam_chance", "cam_iou", "cam_scorable"]
    )


# ------------------------------------------------------------------------------------------------ the table
def build_table(
    results: Path, matrix: Matrix, resamples: int = 1000, seed: int = 0, workdir: Path | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(cells, table, pooled predictions); the table has a row per (protocol, resolution, data set, model)."""
    cells = load_cells(results, matrix, workdir)
    summary = summarize(cells)
    pooled = pooled_predictions(results, cells)
    summary = add_pooled_auc(summary, pooled, resamples, seed)
    summary = with_paper(summary, paper_table())
    summary = summary.merge(cam_scores(results, cells), how="left", on=KEYS)
    order = {d: i for i, d in enumerate(DATASET_ORDER)}
    summary["_d"] = summary["dataset"].map(order)
    summary["_m"] = summary["model"].map({m: i for i, m in enumerate(matrix.models)})
    summary = summary.sort_values(["protocol", "resolution", "_d", "_m"], kind="stable").drop(
        columns=["_d", "_m"]
    )
    return cells, summary.reset_index(drop=True), pooled


def table_csv(table: pd.DataFrame) -> pd.DataFrame:
    """The columns of table2.csv, in a fixed order."""
    columns = [*KEYS, "folds_ok", "folds", "failed_folds", "missing_folds"]
    for name in PAPER_METRICS:
        columns += [f"{name}_mean", f"{name}_sd", f"{name}_paper", f"{name}_diff"]
    for name in EXTRA_METRICS:
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
    return table[columns]


def fmt(value, digits: int = 2) -> str:
    return (
        "—"
        if value is None or (isinstance(value, float) and not np.isfinite(value))
        else f"{value:.{digits}f}"
    )


def mean_sd(row, name: str) -> str:
    mean, sd = row[f"{name}_mean"], row[f"{name}_sd"]
    if not np.isfinite(mean):
        return "—"
    return f"{mean:.2f} ± {sd:.2f}" if np.isfinite(sd) else f"{mean:.2f}"


def status_text(row) -> str:
    if row["folds_ok"] == row["folds"]:
        return f"{row['folds']} folds"
    parts = [f"{row['folds_ok']}/{row['folds']} folds"]
    if row["failed_folds"]:
        parts.append(f"failed: {row['failed_folds']}")
    if row["missing_folds"]:
        parts.append(f"missing: {row['missing_folds']}")
    return "; ".join(parts)


def table_markdown(table: pd.DataFrame) -> str:
    """table2.md: one block per protocol and resolution, each metric as 'mean ± sd (paper p, diff d)'."""
    out = [
        "# Table 2 replica",
        "",
        "Mean ± sd over folds; in brackets the paper's value (Prodan et al. 2023, Table 2) and ours − paper,",
        "where the paper has the same resolution, data set and model.",
        "",
    ]
    for (protocol, resolution), block in table.groupby(["protocol", "resolution"], sort=False):
        out += [f"## {protocol} protocol, {resolution} px", ""]
        header = [
            "data set",
            "model",
            *PAPER_METRICS,
            "pooled AUC (95% CI)",
            "pF1",
            "CAM hit (chance)",
            "folds",
        ]
        out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for _, row in block.iterrows():
            cells = [DATASET_LABELS.get(row["dataset"], row["dataset"]), row["model"]]
            for name in PAPER_METRICS:
                text = mean_sd(row, name)
                if np.isfinite(row[f"{name}_paper"]):
                    text += f" ({row[f'{name}_paper']:.2f}, {row[f'{name}_diff']:+.2f})"
                cells.append(text)
            cells.append(
                f"{fmt(row['pooled_auc'])} ({fmt(row['pooled_auc_low'])}–{fmt(row['pooled_auc_high'])})"
                if np.isfinite(row["pooled_auc"])
                else "—"
            )
            cells.append(mean_sd(row, "pf1"))
            cells.append(
                f"{fmt(row['cam_hit_rate'])} ({fmt(row['cam_chance'])})"
                if np.isfinite(row["cam_hit_rate"])
                else "—"
            )
            cells.append(status_text(row))
            out.append("| " + " | ".join(str(c) for c in cells) + " |")
        out.append("")
    return "\n".join(out)
