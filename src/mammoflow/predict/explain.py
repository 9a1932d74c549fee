"""Grad-CAM panels of the breasts flagged positive: for each view, the image the network saw, the map and the
box centred on its peak (the study's Figure 6 panel), with the explain stage's own functions.

The map of a fold ensemble is the mean of its folds' maps (one architecture, so one feature grid); the box
and peak are found on that mean as the cam stage finds them on one model's map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mammoflow.atomic import write_parquet
from mammoflow.explain.boxes import find_peak, fixed_box
from mammoflow.explain.figure import write_figure
from mammoflow.explain.gradcam import align_maps, explained_layer, feature_grid, grad_cam_maps
from mammoflow.explain.scores import BOX_COLUMNS
from mammoflow.explain.stage import METHOD_NAMES, CamSettings
from mammoflow.progress import say
from mammoflow.store import LESION_COLUMNS

CAM = CamSettings.configured()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))


def explain_breasts(
    out_dir: Path,
    views: pd.DataFrame,
    images: np.ndarray,
    models: list[tuple[torch.nn.Module, dict]],
    device: torch.device,
    batch_size: int = 16,
) -> pd.DataFrame:
    """One PNG per breast in ``views`` (columns prediction_id, image_id, row, probability,
    breast_probability, threshold), ``out_dir/<prediction_id>.png``, and the peaks and boxes as a table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if views.empty:
        return pd.DataFrame()
    architecture, res = models[0][1]["architecture"], int(models[0][1]["resolution"])
    rows = views["row"].to_numpy()
    pixels = np.ascontiguousarray(images[rows])
    total_maps = np.zeros((len(rows), res, res), np.float32)
    total_raw = None
    for model, _ in models:
        # The cam stage's layer rule and method (their defaults: cam.min_cells 8, cam.method hirescam)
        layer, layer_name, _ = explained_layer(model, architecture, res, CAM.min_cells)
        grid, shape = feature_grid(model, layer, res)
        cams = grad_cam_maps(model, layer, pixels, batch_size, device, False, CAM.method)
        total_maps += align_maps(cams.maps, grid, *shape)
        total_raw = cams.raw if total_raw is None else total_raw + cams.raw
    maps = total_maps / len(models)
    raw = total_raw / len(models)
    side = max(round(CAM.box_fraction * res), 1)
    records = []
    for i, view in enumerate(views.itertuples(index=False)):
        peak = find_peak(maps[i], raw[i], (grid.x0, grid.y0, grid.sx, grid.sy))
        box = fixed_box(peak.x, peak.y, side, res, res)
        records.append(
            {
                "prediction_id": view.prediction_id,
                "image_id": view.image_id,
                "probability": view.probability,
                "source": "real",
                "peak_x": peak.x,
                "peak_y": peak.y,
                **dict(zip(BOX_COLUMNS, box, strict=True)),
                **dict.fromkeys(LESION_COLUMNS, np.nan),
                "hit": None,
                "iou": np.nan,
                "map_constant": peak.constant,
                "panel": f"{_safe(view.prediction_id)}.png",
            }
        )
    table = pd.DataFrame(records)
    for breast, group in table.groupby("prediction_id", sort=False):
        first = views[views["prediction_id"] == breast].iloc[0]
        index = group.index.to_numpy()
        title = (
            f"breast {breast}: p = {first.breast_probability:.3f} (flagged at {first.threshold:.3f}); "
            f"{METHOD_NAMES[CAM.method]} of {architecture} on {layer_name}, {len(models)} fold(s) averaged, "
            f"{res} px"
        )
        write_figure(out_dir / group["panel"].iloc[0], list(pixels[index]), list(maps[index]),
                     group.reset_index(drop=True), len(index), title)  # fmt: skip
    write_parquet(table.drop(columns=["source", "hit", "iou", *LESION_COLUMNS]), out_dir / "boxes.parquet")
    say(f"Grad-CAM panels: {table['prediction_id'].nunique()} breasts, {len(table)} views -> {out_dir}")
    return table
