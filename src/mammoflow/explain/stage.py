"""The `cam` stage for one training cell: which validation images to explain, their Grad-CAM maps, boxes and
scores, written as boxes.parquet, maps.npy, summary.json and figure6.png."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from mammoflow import paths
from mammoflow.atomic import atomic_path, write_json, write_parquet
from mammoflow.explain.boxes import chance_hit_rate, find_peak, fixed_box, score, threshold_box
from mammoflow.explain.figure import choose_examples, write_figure
from mammoflow.explain.gradcam import (
    METHODS,
    Grid,
    align_maps,
    explained_layer,
    feature_grid,
    grad_cam_maps,
)
from mammoflow.explain.inputs import gather, load_cell_model, locate, select, store_table
from mammoflow.progress import progress, say
from mammoflow.store import IMAGE_COLUMNS, LESION_COLUMNS, open_store

METHOD_NAMES = {"gradcam": "Grad-CAM", "hirescam": "HiResCAM"}
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


@dataclass(frozen=True)
class CamSettings:
    threshold: float = 0.5
    top_k: int = 8
    all_lesions: bool = True
    box: str = "fixed"  # fixed | threshold
    box_fraction: float = 0.25
    box_threshold: float = 0.5
    map_size: int = 32
    min_cells: int = 8
    method: str = "hirescam"  # hirescam | gradcam
    batch_size: int = 32
    examples: int = 6

    @classmethod
    def from_config(cls, section: dict) -> CamSettings:
        known = {k: v for k, v in section.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(section) - set(known) - {"threads"})
        if unknown:
            raise ValueError(f"unknown cam setting(s): {', '.join(unknown)}")
        settings = cls(**known)
        if settings.method not in METHODS:
            raise ValueError(f"cam.method must be one of {', '.join(METHODS)}, not {settings.method!r}")
        if settings.box not in ("fixed", "threshold"):
            raise ValueError(f"cam.box must be fixed or threshold, not {settings.box!r}")
        if not 0 < settings.box_fraction <= 1 or not 0 < settings.box_threshold < 1:
            raise ValueError("cam.box_fraction must be in (0, 1] and cam.box_threshold in (0, 1)")
        if min(settings.map_size, settings.batch_size, settings.min_cells) < 1:
            raise ValueError("cam.map_size, cam.min_cells and cam.batch_size must be >= 1")
        if settings.top_k < 0 or settings.examples < 0:
            raise ValueError("cam.top_k and cam.examples must be >= 0")
        return settings


@dataclass(frozen=True)
class CellIdentity:
    protocol: str | None
    dataset: str | None
    fold: int | None


def identity_of(cell_dir: Path, predictions: pd.DataFrame, **given) -> CellIdentity:
    """protocol/dataset/fold as given, else read off the cell's path (mammoflow.paths.parse_cell)."""
    try:
        cell = paths.parse_cell(Path(cell_dir).resolve())
        from_path: dict = {"protocol": cell.protocol, "dataset": cell.dataset, "fold": cell.fold}
    except ValueError:  # a cell folder outside the results tree
        from_path = {}
        if "fold" in predictions.columns and predictions["fold"].nunique() == 1:
            from_path = {"fold": int(predictions["fold"].iloc[0])}
    merged = {
        k: given.get(k) if given.get(k) is not None else from_path.get(k)
        for k in CellIdentity.__annotations__
    }
    return CellIdentity(**merged)


# ---------------------------------------------------------------------------------------------- run


def run_cam(
    cell_dir: str | Path,
    store_dir: str | Path,
    out_dir: str | Path,
    settings: CamSettings,
    synthetic_dir: str | Path | None = None,
    device: str = "auto",
    threads: int = 0,
    protocol: str | None = None,
    dataset: str | None = None,
    fold: int | None = None,
    show_progress: bool = True,
) -> dict:
    """Explain one cell's validation images; write boxes.parquet, maps.npy, summary.json, figure6.png."""
    from mammoflow.devices import pick_device

    started = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    cell_dir, store_dir, out_dir = Path(cell_dir), Path(store_dir), Path(out_dir)
    dev = pick_device(device)
    predictions_path = cell_dir / "predictions.parquet"
    predictions = pd.read_parquet(predictions_path)
    missing = [c for c in [*IMAGE_COLUMNS, "probability"] if c not in predictions.columns]
    if missing:
        raise ValueError(f"{predictions_path}: missing column(s) {', '.join(missing)}")
    identity = identity_of(cell_dir, predictions, protocol=protocol, dataset=dataset, fold=fold)
    model, saved = load_cell_model(cell_dir)
    name, res = saved["model"], int(saved["resolution"])

    real_images, real_manifest = open_store(store_dir)
    if real_images.shape[1:] != (res, res):
        raise ValueError(
            f"{store_dir}: images are {real_images.shape[1:]}, the model was trained at {res} px"
        )
    stores = {"real": real_images}
    synthetic_table = None
    if synthetic_dir:
        synthetic_images, synthetic_manifest = open_store(synthetic_dir)
        if synthetic_images.shape[1:] != (res, res):
            raise ValueError(f"{synthetic_dir}: images are {synthetic_images.shape[1:]}, not {res} x {res}")
        stores["synthetic"] = synthetic_images
        synthetic_table = store_table(synthetic_manifest, Path(synthetic_dir), "synthetic")
    real_table = store_table(real_manifest, store_dir, "real")
    table = locate(
        predictions[[*IMAGE_COLUMNS, "probability"]], real_table, synthetic_table, str(predictions_path)
    )
    chosen = select(table, settings)
    layer, layer_name, layer_note = explained_layer(model, name, res, settings.min_cells)
    grid, feature_shape = feature_grid(model, layer, res)
    if "fallback" in layer_name:
        say(f"NOTICE: {name} is not a known architecture; Grad-CAM explains {layer_name}")
    if layer_note:
        say(f"NOTICE: {layer_note}")
    say(
        f"cam {name} {res}px {identity.dataset} {identity.protocol} fold {identity.fold}: "
        f"{len(chosen)} of {len(table)} validation images "
        f"({int(chosen['predicted_positive'].sum())} predicted positive); {METHOD_NAMES[settings.method]} "
        f"on {layer_name}; {dev}"
    )

    # Batch by batch, keeping only the small maps and the figure's examples: memory stays bounded by the
    # batch, whatever the number of images (thousands of predicted positives at 512 px would be GBs).
    records, small_maps = [], []
    size = (settings.map_size, settings.map_size)
    cam_seconds = 0.0
    starts = range(0, len(chosen), settings.batch_size)
    for start in progress(starts, "grad-cam", total=len(starts), enabled=show_progress):
        chunk = chosen.iloc[start : start + settings.batch_size]
        images = gather(chunk, stores, res)
        cam_started = time.perf_counter()
        cams = grad_cam_maps(model, layer, images, settings.batch_size, dev, False, settings.method)
        cam_seconds += time.perf_counter() - cam_started
        aligned = align_maps(cams.maps, grid, *feature_shape)
        records += _records(chunk, cams, aligned, grid, settings, res)
        small_maps += [cv2.resize(m, size, interpolation=cv2.INTER_AREA) for m in aligned]
    boxes = pd.DataFrame(records, columns=list(COLUMNS)).astype(COLUMNS)
    maps = np.stack(small_maps) if small_maps else np.zeros((0, *size), np.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_parquet(boxes, out_dir / "boxes.parquet")
    with atomic_path(out_dir / "maps.npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, maps.astype(np.float16))

    has_boxes = bool(real_table["lesion_x0"].notna().any()) or (
        synthetic_table is not None and bool(synthetic_table["lesion_x0"].notna().any())
    )
    summary = _summary(boxes, feature_shape, settings, res, has_boxes)
    title = (
        f"{name} {res}px, {identity.dataset}, {identity.protocol} fold {identity.fold}: "
        f"{METHOD_NAMES[settings.method]} on {layer_name}, {settings.box} box"
    )
    # Figure 6's examples are chosen once every score is known (hits and misses both); their maps are
    # computed again at full size, for these few images only.
    picks = choose_examples(boxes, settings.examples)
    shown = gather(chosen.iloc[picks], stores, res)
    maps_ = shown
    if picks:
        maps_ = grad_cam_maps(model, layer, shown, settings.batch_size, dev, False, settings.method).maps
    shown_table = boxes.iloc[picks].reset_index(drop=True) if picks else boxes
    figure_maps = list(align_maps(maps_, grid, *feature_shape)) if picks else []
    write_figure(out_dir / "figure6.png", list(shown), figure_maps, shown_table, settings.examples, title)
    stretched = Grid.stretched(res, *feature_shape)
    summary.update(
        target_layer=layer_name,
        target_layer_note=layer_note,
        method=settings.method,
        alignment={
            "cell_centre_x0": grid.x0,
            "cell_centre_y0": grid.y0,
            "cell_spacing": [grid.sx, grid.sy],
            "shift_from_stretched_px": [grid.x0 - stretched.x0, grid.y0 - stretched.y0],
        },
        box={
            "mode": settings.box,
            "fraction": settings.box_fraction,
            "side_px": max(round(settings.box_fraction * res), 1) if settings.box == "fixed" else None,
            "threshold": settings.box_threshold if settings.box == "threshold" else None,
        },
        model=name,
        weights=saved.get("weights"),
        resolution=res,
        dataset=identity.dataset,
        protocol=identity.protocol,
        fold=identity.fold,
        device=str(dev),
        torch_threads=torch.get_num_threads(),
        settings=asdict(settings),
        cam_seconds_per_image=cam_seconds / len(boxes) if len(boxes) else None,
        seconds=time.perf_counter() - started,
    )
    write_json(summary, out_dir / "summary.json")
    say(
        f"cam: {summary['images']} images in {summary['seconds']:.1f} s; hit rate {summary['hit_rate']} "
        f"(chance {summary['chance_hit_rate']}); {summary['note']}"
    )
    return summary


def _records(chunk: pd.DataFrame, cams, aligned: np.ndarray, grid: Grid, settings: CamSettings, res: int):
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


def _summary(boxes, feature_shape, settings, res, has_boxes) -> dict:
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
