"""What the `cam` stage writes about each explained image and about the cell: boxes.parquet's rows (peak,
box, lesion, pointing-game hit, IoU) and summary.json's scores (hit rate against its chance level, notes on
what cannot be scored)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mammoflow.explain.boxes import chance_hit_rate, find_peak, fixed_box, score, threshold_box
from mammoflow.progress import say
from mammoflow.store import IMAGE_COLUMNS, LESION_COLUMNS

if TYPE_CHECKING:
    from mammoflow.explain.gradcam import Grid
    from mammoflow.explain.stage import CamSettings

BOX_COLUMNS = ["box_x0", "box_y0", "box_x1", "box_y1"]
NO_BOXES = "no lesion boxes: localisation cannot be scored on this data"
# boxes.parquet: the contract, then what helps to read it (why an image was chosen, map quality).
COLUMNS = {
    "image_id": "int64",
    "patient_id": "int64",
    "laterality": "object",
    "view": "object",
    "cancer": "int8",
    "source": "object",
    "probability": "float64",
    "predicted_positive": "bool",
    "peak_value": "float32",
    "peak_x": "int32",
    "peak_y": "int32",
    **dict.fromkeys(BOX_COLUMNS, "int32"),
    **dict.fromkeys(LESION_COLUMNS, "float64"),
    "hit": "boolean",
    "iou": "float64",
    "hit_stretched": "boolean",
    "map_constant": "bool",
    "peak_ties": "int32",
    "model_probability": "float64",
    "selected_by": "object",
}


def records(chunk: pd.DataFrame, cams, aligned: np.ndarray, grid: Grid, settings: CamSettings, res: int):
    """One boxes.parquet row per image of a batch."""
    records = []
    side = max(round(settings.box_fraction * res), 1)
    for i, row in enumerate(chunk.itertuples(index=False)):
        peak = find_peak(aligned[i], cams.raw[i], (grid.x0, grid.y0, grid.sx, grid.sy))
        if settings.box == "fixed":
            box = fixed_box(peak.x, peak.y, side, res, res)
        else:
            box = threshold_box(aligned[i], peak.x, peak.y, settings.box_threshold)
        lesion = tuple(getattr(row, c) for c in LESION_COLUMNS)
        known = lesion if np.isfinite(lesion[0]) else None
        hit, overlap = score(peak, box, known)
        # The pointing game as fastai's stretched plot shows the map (the study's Figure 6): for comparison.
        hit_stretched, _ = score(find_peak(cams.maps[i], cams.raw[i]), box, known)
        records.append(
            {
                **{c: getattr(row, c) for c in [*IMAGE_COLUMNS, "probability", "predicted_positive"]},
                "peak_value": float(cams.raw[i].max()),
                "peak_x": peak.x,
                "peak_y": peak.y,
                **dict(zip(BOX_COLUMNS, box, strict=True)),
                **dict(zip(LESION_COLUMNS, lesion, strict=True)),
                "hit": hit,
                "iou": overlap,
                "hit_stretched": hit_stretched,
                "map_constant": peak.constant,
                "peak_ties": peak.ties,
                "model_probability": float(cams.probabilities[i]),
                "selected_by": row.selected_by,
            }
        )
    return records


def _mean(values: pd.Series) -> float | None:
    return float(values.mean()) if len(values) else None


def summarise(boxes, feature_shape, settings, res, has_boxes) -> dict:
    scored = boxes[boxes["lesion_x0"].notna()]
    scored_positive = scored[scored["predicted_positive"]]
    lesions = [tuple(r) for r in scored[LESION_COLUMNS].to_numpy(float)]
    constant = int(boxes["map_constant"].sum())
    tied = int(((boxes["peak_ties"] > 1) & ~boxes["map_constant"]).sum())
    feature_map = list(feature_shape)
    difference = (
        float(np.abs(boxes["model_probability"] - boxes["probability"]).max()) if len(boxes) else None
    )
    notes = []
    if len(boxes) == 0:
        notes.append(
            f"no images to explain: none predicted positive at {settings.threshold}, top_k {settings.top_k}"
            + (", no lesion boxes" if settings.all_lesions else "")
        )
    if not has_boxes:
        notes.append(NO_BOXES)
    elif len(boxes) and scored.empty:
        notes.append("none of the explained images has a lesion box: localisation is not scored")
    if feature_map == [1, 1]:
        notes.append(
            f"the feature map is 1x1 at {res} px: every map is constant, localisation is meaningless"
        )
    elif constant:
        notes.append(f"{constant} constant map(s) (no peak, counted as misses)")
    if tied:
        notes.append(f"{tied} map(s) with a tied maximum (peak not unique; the first cell in raster order)")
    if difference is not None and difference > 0.05:
        notes.append(f"the model's probabilities differ from predictions.parquet by up to {difference:.3f}")
        say(f"warning: {notes[-1]}: model and store do not match?")
    return {
        "images": len(boxes),
        "predicted_positive": int(boxes["predicted_positive"].sum()),
        "scored": len(scored),
        "hit_rate": _mean(scored["hit"].astype(float)),
        "mean_iou": _mean(scored["iou"]),
        "chance_hit_rate": chance_hit_rate(lesions, res, res),
        "hit_rate_predicted_positive": _mean(scored_positive["hit"].astype(float)),
        "hit_rate_stretched": _mean(scored["hit_stretched"].astype(float)),
        "scorable": bool(len(scored)),
        "note": "; ".join(notes),
        "selection": {
            "threshold": settings.threshold,
            "top_k": settings.top_k,
            "all_lesions": settings.all_lesions,
            "by_reason": {
                reason: int(boxes["selected_by"].str.contains(reason).sum())
                for reason in ("positive", "top_k", "lesion")
            },
        },
        "feature_map": feature_map,
        "constant_maps": constant,
        "tied_peaks": tied,
        "max_probability_difference": difference,
    }
