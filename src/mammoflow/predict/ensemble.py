"""Which trained models to apply, applying them, and their out-of-fold predictions.

A *model* here is one (protocol, resolution, data set, architecture) of the training matrix; its fold
cells are its ensemble (the folds' probabilities averaged, as the RSNA winners did). Several models can be
averaged on top. By default the run's cells are found under ``results/train/``; any model artifacts
(a cell folder or its model.json, wherever they were copied to) can be named instead.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from mammoflow import paths
from mammoflow.classify.artifact import METADATA_NAME, ArtifactError, load_artifact, read_metadata
from mammoflow.classify.artifact_checks import check_artifact
from mammoflow.classify.models import normalize_batch, positive_probability
from mammoflow.classify.precision import logits_fp32, resolve_precision
from mammoflow.predict.choice import pick
from mammoflow.progress import say
from mammoflow.stats import roc_auc

KEY_FIELDS = ("protocol", "resolution", "dataset", "architecture")


@dataclass
class ModelChoice:
    """One model of the matrix and the folders of its fold cells."""

    protocol: str
    resolution: int
    dataset: str
    architecture: str
    cells: list[Path] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.protocol}/{self.resolution}/{self.dataset}/{self.architecture}"


def _describe(folder: Path) -> dict:
    metadata = read_metadata(folder)
    return {
        "protocol": metadata.get("protocol"),
        "resolution": int(metadata["resolution"]),
        "dataset": metadata.get("dataset"),
        "architecture": metadata["architecture"],
        "fold": metadata.get("fold"),
        "cell": folder,
    }


def find_cells(results: Path) -> pd.DataFrame:
    """Every trained cell with an artifact in a run's results tree (paths.cell_dir)."""
    pattern = f"{paths.cell_dir('*', '*', '*', '*', '*', root=results)}/{METADATA_NAME}"
    rows, weightless = [], set()
    for found in sorted(glob.glob(pattern)):
        try:
            cell = paths.parse_cell(found)
        except ValueError:
            continue  # not a cell folder (the glob's * matched something else)
        if read_metadata(found)["weights"] is None:  # train.keep_weights: false
            weightless.add(cell.model)
            continue
        rows.append(_describe(Path(found).parent))
    if weightless:
        say(
            f"not considered: {', '.join(sorted(weightless))} "
            "(their cells kept no weights: train.keep_weights)"
        )
    return pd.DataFrame(rows, columns=[*KEY_FIELDS, "fold", "cell"])


def cells_of(artifacts: list[str]) -> pd.DataFrame:
    """Artifacts named on the command line (cell folders or model.json files)."""
    rows = []
    for given in artifacts:
        path = Path(given)
        rows.append(_describe(path.parent if path.name == METADATA_NAME else path))
    return pd.DataFrame(rows, columns=[*KEY_FIELDS, "fold", "cell"])


def _pick(cells: pd.DataFrame, column: str, wanted) -> pd.DataFrame:
    return cells[cells[column] == pick(column, cells[column].tolist(), wanted)]


def choose_models(
    cells: pd.DataFrame,
    protocol: str | None = None,
    resolution: int | None = None,
    dataset: str | None = None,
    models: list[str] | None = None,
) -> list[ModelChoice]:
    """The models to ensemble. Defaults: the clean protocol, the highest resolution, the processed data set,
    and (``models`` None or ["best"]) the architecture with the best out-of-fold AUC there; ["all"] takes
    every architecture, or name them."""
    if cells.empty:
        raise FileNotFoundError(
            "no trained model artifacts found (run the workflow first, or give --artifacts)"
        )
    cells = _pick(cells, "protocol", protocol)
    cells = _pick(cells, "resolution", resolution)
    cells = _pick(cells, "dataset", dataset)
    groups = {
        name: ModelChoice(*key, cells=[Path(c) for c in group.sort_values("fold")["cell"]])
        for key, group in cells.groupby(list(KEY_FIELDS), sort=True)
        for name in [key[3]]
    }
    if models and models not in (["best"], ["all"]):
        unknown = [m for m in models if m not in groups]
        if unknown:
            raise ValueError(f"no trained cells for model(s) {unknown}; available: {sorted(groups)}")
        return [groups[m] for m in models]
    if models == ["all"]:
        return list(groups.values())
    scores = {}
    for name, choice in groups.items():
        oof = out_of_fold(choice)
        scores[name] = roc_auc(oof["cancer"].to_numpy(), oof["probability"].to_numpy()) if len(oof) else None
    ranked = sorted(groups, key=lambda n: (scores[n] is not None, scores[n] or 0.0), reverse=True)
    say("out-of-fold AUC: " + ", ".join(f"{n} {scores[n] if scores[n] is None else round(scores[n], 3)}"
                                        for n in ranked))  # fmt: skip
    return [groups[ranked[0]]]


def out_of_fold(choice: ModelChoice) -> pd.DataFrame:
    """The folds' validation predictions of real images together (each image scored by the fold model
    that did not train on it); empty when no cell has its predictions.parquet beside the artifact."""
    frames = [
        pd.read_parquet(c / "predictions.parquet")
        for c in choice.cells
        if (c / "predictions.parquet").is_file()
    ]
    if not frames:
        return pd.DataFrame(columns=["image_id", "patient_id", "laterality", "cancer", "probability"])
    oof = pd.concat(frames, ignore_index=True)
    oof = oof[oof["source"] == "real"] if "source" in oof.columns else oof
    return oof.drop_duplicates("image_id")[["image_id", "patient_id", "laterality", "cancer", "probability"]]


def ensemble_out_of_fold(choices: list[ModelChoice]) -> pd.DataFrame:
    """Out-of-fold probabilities averaged over the chosen models (images all of them scored)."""
    merged = None
    for k, choice in enumerate(choices):
        oof = out_of_fold(choice).rename(columns={"probability": f"p{k}"})
        merged = oof if merged is None else merged.merge(oof[["image_id", f"p{k}"]], on="image_id")
    if merged is None or merged.empty:
        return pd.DataFrame(columns=["image_id", "patient_id", "laterality", "cancer", "probability"])
    merged["probability"] = merged[[f"p{k}" for k in range(len(choices))]].mean(axis=1)
    return merged[["image_id", "patient_id", "laterality", "cancer", "probability"]]


@torch.no_grad()
def probabilities(
    model: nn.Module, images: np.ndarray, rows: np.ndarray, device: torch.device, batch_size: int
) -> np.ndarray:
    """P(cancer) for images[rows], as the training cell computes its validation predictions
    (normalisation, channels_last, the trunk under the precision rule's autocast, the head in fp32 so the
    probabilities are not rounded to bf16's few hundred values)."""
    precision = resolve_precision(device, "auto")
    model = model.to(device, memory_format=torch.channels_last).eval()
    out = []
    for start in range(0, len(rows), batch_size):
        batch = np.ascontiguousarray(images[rows[start : start + batch_size]])
        x = normalize_batch(torch.from_numpy(batch).to(device)).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            logits = logits_fp32(model, x, precision)
        out.append(positive_probability(logits).cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.empty(0)


def checked_artifacts(choices: list[ModelChoice]) -> list[dict]:
    """Every chosen cell's artifact checked in full (classify/artifact_checks.py), before anything is decoded,
    and each model's folds distinct: the metadata, cell by cell in the choices' order."""
    metadatas = []
    for choice in choices:
        folds: dict[int, Path] = {}
        for cell in choice.cells:
            metadata = check_artifact(cell)
            fold = metadata.get("fold")
            if fold in folds:
                raise ArtifactError(
                    f"{cell}: {choice.label} fold {fold} again (also {folds[fold]}): an ensemble averages "
                    "each fold's model once; give each fold's artifact once"
                )
            folds[fold] = cell
            metadatas.append(metadata)
    return metadatas


def load_folds(choice: ModelChoice, device: torch.device) -> list[tuple[nn.Module, dict]]:
    return [load_artifact(cell, device) for cell in choice.cells]
