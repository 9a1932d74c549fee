"""What the `cam` stage explains, and where those images are: the cell's model, its validation images
located in their stores (real or synthetic), the selection rule, and one gather per store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from mammoflow.classify.models import LEGACY_HEAD, build_model
from mammoflow.store import LESION_COLUMNS

if TYPE_CHECKING:
    from mammoflow.explain.stage import CamSettings


def load_cell_model(cell_dir: Path):
    """The cell's model and a description ({"model", "resolution", "weights"}): from its artifact
    (model.json + model.safetensors); a model.pt of earlier versions (timm's one-logit head) is read with
    weights_only=True."""
    from mammoflow.classify.artifact import METADATA_NAME, load_artifact

    if (cell_dir / METADATA_NAME).is_file():
        model, metadata = load_artifact(cell_dir)
        described = {"model": metadata["architecture"], "resolution": metadata["resolution"]}
        return model, {**described, "weights": metadata.get("pretrained_weights")}
    path = cell_dir / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{cell_dir / METADATA_NAME}: no trained model (run the train stage first)")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    missing = {"model", "resolution", "state_dict"} - set(saved)
    if missing:
        raise ValueError(f"{path}: not a training cell's model.pt (missing {', '.join(sorted(missing))})")
    model, _ = build_model(saved["model"], int(saved["resolution"]), head=LEGACY_HEAD)
    model.load_state_dict(saved["state_dict"])
    return model, saved


def store_table(manifest: pd.DataFrame, store_dir: Path, store: str) -> pd.DataFrame:
    if manifest["image_id"].duplicated().any():
        raise ValueError(f"{store_dir}/manifest.parquet: image_id is not unique")
    table = manifest[["image_id", "row"]].copy()
    for column in LESION_COLUMNS:
        table[column] = manifest[column].astype(float) if column in manifest.columns else np.nan
    table["store"] = store
    return table


def locate(
    predictions: pd.DataFrame, real: pd.DataFrame, synthetic: pd.DataFrame | None, where: str
) -> pd.DataFrame:
    """The predictions with each image's store ('real'/'synthetic'), row in it, and lesion box."""
    is_synthetic = (predictions["source"] == "synthetic").to_numpy()
    parts = [predictions[~is_synthetic].merge(real, on="image_id", how="left")]
    if is_synthetic.any():
        if synthetic is None:
            raise ValueError(
                f"{where}: {int(is_synthetic.sum())} synthetic validation images but no --synthetic store"
            )
        parts.append(predictions[is_synthetic].merge(synthetic, on="image_id", how="left"))
    table = pd.concat(parts, ignore_index=True)
    lost = table["row"].isna()
    if lost.any():
        raise ValueError(
            f"{where}: {int(lost.sum())} validation images are not in the store(s), "
            f"e.g. image_id {table.loc[lost, 'image_id'].iloc[0]} ({table.loc[lost, 'source'].iloc[0]})"
        )
    table["row"] = table["row"].astype(np.int64)
    return table


def select(table: pd.DataFrame, settings: CamSettings) -> pd.DataFrame:
    """Predicted positives, the top_k scores and (all_lesions) every image with a lesion box, best first."""
    ordered = table.sort_values(["probability", "image_id"], ascending=[False, True], kind="stable")
    positive = ordered["probability"] >= settings.threshold
    top = pd.Series(np.arange(len(ordered)) < settings.top_k, index=ordered.index)
    lesion = ordered["lesion_x0"].notna() & settings.all_lesions
    reasons = [
        ",".join(name for name, flag in (("positive", p), ("top_k", t), ("lesion", le)) if flag)
        for p, t, le in zip(positive, top, lesion, strict=True)
    ]
    chosen = ordered.assign(predicted_positive=positive.to_numpy(), selected_by=reasons)
    return chosen[positive | top | lesion].reset_index(drop=True)


def gather(chosen: pd.DataFrame, stores: dict[str, np.ndarray], res: int) -> np.ndarray:
    images = np.empty((len(chosen), res, res), np.uint8)
    for name, pixels in stores.items():
        mine = np.flatnonzero((chosen["store"] == name).to_numpy())
        if len(mine):
            rows = chosen["row"].to_numpy()[mine]
            order = np.argsort(rows, kind="stable")  # forward reads of the memory map
            images[mine[order]] = pixels[rows[order]]
    return images
