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
from mammoflow.explain.figure import choose_examples, write_figure
from mammoflow.explain.gradcam import (
    Grid,
    align_maps,
    explained_layer,
    feature_grid,
    grad_cam_maps,
)
from mammoflow.explain.inputs import gather, load_cell_model, locate, select, store_table
from mammoflow.explain.scores import COLUMNS, records, summarise
from mammoflow.progress import progress, say
from mammoflow.sections import FromSection
from mammoflow.store import IMAGE_COLUMNS, open_store

METHOD_NAMES = {"gradcam": "Grad-CAM", "hirescam": "HiResCAM"}


@dataclass(frozen=True)
class CamSettings(FromSection):
    """config.yaml's cam section, checked once (mammoflow.sections)."""

    SECTION = "cam"

    threshold: float
    top_k: int
    all_lesions: bool
    box: str  # fixed | threshold
    box_fraction: float
    box_threshold: float
    map_size: int
    min_cells: int
    method: str  # hirescam | gradcam
    batch_size: int
    examples: int


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


@dataclass(frozen=True)
class CamJob:
    """One cell to explain: its folder (model artifact, predictions.parquet), the stores its validation
    images are in, where the results go, and (for the summary) its protocol, data set and fold when they
    cannot be read off the cell's path."""

    cell_dir: Path
    store_dir: Path
    out_dir: Path
    synthetic_dir: Path | None = None
    protocol: str | None = None
    dataset: str | None = None
    fold: int | None = None


@dataclass
class _Inputs:
    """What one cell's explanation reads: its predictions located in the stores, and its model."""

    predictions_path: Path
    identity: CellIdentity
    model: torch.nn.Module
    saved: dict
    stores: dict[str, np.ndarray]
    chosen: pd.DataFrame
    total: int
    has_boxes: bool

    @property
    def name(self) -> str:
        return self.saved["model"]

    @property
    def res(self) -> int:
        return int(self.saved["resolution"])


def _open_sized(store_dir: Path, res: int) -> tuple[np.ndarray, pd.DataFrame]:
    images, manifest = open_store(store_dir)
    if images.shape[1:] != (res, res):
        raise ValueError(f"{store_dir}: images are {images.shape[1:]}, the model was trained at {res} px")
    return images, manifest


def _load_inputs(job: CamJob, settings: CamSettings) -> _Inputs:
    predictions_path = Path(job.cell_dir) / "predictions.parquet"
    predictions = pd.read_parquet(predictions_path)
    missing = [c for c in [*IMAGE_COLUMNS, "probability"] if c not in predictions.columns]
    if missing:
        raise ValueError(f"{predictions_path}: missing column(s) {', '.join(missing)}")
    identity = identity_of(
        Path(job.cell_dir), predictions, protocol=job.protocol, dataset=job.dataset, fold=job.fold
    )
    model, saved = load_cell_model(Path(job.cell_dir))
    res = int(saved["resolution"])
    real_images, real_manifest = _open_sized(Path(job.store_dir), res)
    stores = {"real": real_images}
    real_table = store_table(real_manifest, Path(job.store_dir), "real")
    synthetic_table = None
    if job.synthetic_dir:
        stores["synthetic"], synthetic_manifest = _open_sized(Path(job.synthetic_dir), res)
        synthetic_table = store_table(synthetic_manifest, Path(job.synthetic_dir), "synthetic")
    table = locate(
        predictions[[*IMAGE_COLUMNS, "probability"]], real_table, synthetic_table, str(predictions_path)
    )
    tables = (real_table, synthetic_table)
    has_boxes = any(t is not None and bool(t["lesion_x0"].notna().any()) for t in tables)
    chosen = select(table, settings)
    return _Inputs(predictions_path, identity, model, saved, stores, chosen, len(table), has_boxes)


@dataclass
class _Explainer:
    """The explained layer of one model, its feature grid, and the maps, boxes and scores it gives."""

    model: torch.nn.Module
    architecture: str
    res: int
    settings: CamSettings
    device: torch.device

    def __post_init__(self) -> None:
        self.layer, self.layer_name, self.layer_note = explained_layer(
            self.model, self.architecture, self.res, self.settings.min_cells
        )
        self.grid, self.feature_shape = feature_grid(self.model, self.layer, self.res)

    def maps(self, images: np.ndarray):
        s = self.settings
        return grad_cam_maps(self.model, self.layer, images, s.batch_size, self.device, False, s.method)

    def aligned(self, maps: np.ndarray) -> np.ndarray:
        return align_maps(maps, self.grid, *self.feature_shape)

    def explain(self, chosen: pd.DataFrame, stores: dict, show_progress: bool):
        """boxes.parquet's table, the small maps, and the seconds spent in Grad-CAM itself.

        Batch by batch, keeping only the small maps: memory stays bounded by the batch, whatever the number
        of images (thousands of predicted positives at 512 px would be GBs)."""
        rows, small_maps, seconds = [], [], 0.0
        size = (self.settings.map_size, self.settings.map_size)
        starts = range(0, len(chosen), self.settings.batch_size)
        for start in progress(starts, "grad-cam", total=len(starts), enabled=show_progress):
            chunk = chosen.iloc[start : start + self.settings.batch_size]
            images = gather(chunk, stores, self.res)
            cam_started = time.perf_counter()
            cams = self.maps(images)
            seconds += time.perf_counter() - cam_started
            aligned = self.aligned(cams.maps)
            rows += records(chunk, cams, aligned, self.grid, self.settings, self.res)
            small_maps += [cv2.resize(m, size, interpolation=cv2.INTER_AREA) for m in aligned]
        boxes = pd.DataFrame(rows, columns=list(COLUMNS)).astype(COLUMNS)
        maps = np.stack(small_maps) if small_maps else np.zeros((0, *size), np.float32)
        return boxes, maps, seconds

    def figure(self, path: Path, inputs: _Inputs, boxes: pd.DataFrame, title: str) -> None:
        """Figure 6. Its examples are chosen once every score is known (hits and misses both); their maps
        are computed again at full size, for these few images only."""
        picks = choose_examples(boxes, self.settings.examples)
        shown = gather(inputs.chosen.iloc[picks], inputs.stores, self.res)
        shown_table = boxes.iloc[picks].reset_index(drop=True) if picks else boxes
        figure_maps = list(self.aligned(self.maps(shown).maps)) if picks else []
        write_figure(path, list(shown), figure_maps, shown_table, self.settings.examples, title)

    def description(self) -> dict:
        """summary.json's account of the method: layer, alignment and box."""
        s, grid = self.settings, self.grid
        stretched = Grid.stretched(self.res, *self.feature_shape)
        return {
            "target_layer": self.layer_name,
            "target_layer_note": self.layer_note,
            "method": s.method,
            "alignment": {
                "cell_centre_x0": grid.x0,
                "cell_centre_y0": grid.y0,
                "cell_spacing": [grid.sx, grid.sy],
                "shift_from_stretched_px": [grid.x0 - stretched.x0, grid.y0 - stretched.y0],
            },
            "box": {
                "mode": s.box,
                "fraction": s.box_fraction,
                "side_px": max(round(s.box_fraction * self.res), 1) if s.box == "fixed" else None,
                "threshold": s.box_threshold if s.box == "threshold" else None,
            },
        }


def run_cam(
    job: CamJob, settings: CamSettings, device: str = "auto", threads: int = 0, show_progress: bool = True
) -> dict:
    """Explain one cell's validation images; write boxes.parquet, maps.npy, summary.json, figure6.png."""
    from mammoflow.devices import pick_device

    started = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    inputs = _load_inputs(job, settings)
    name, res, identity = inputs.name, inputs.res, inputs.identity
    explainer = _Explainer(inputs.model, name, res, settings, dev)
    if "fallback" in explainer.layer_name:
        say(f"NOTICE: {name} is not a known architecture; Grad-CAM explains {explainer.layer_name}")
    if explainer.layer_note:
        say(f"NOTICE: {explainer.layer_note}")
    say(
        f"cam {name} {res}px {identity.dataset} {identity.protocol} fold {identity.fold}: "
        f"{len(inputs.chosen)} of {inputs.total} validation images "
        f"({int(inputs.chosen['predicted_positive'].sum())} predicted positive); "
        f"{METHOD_NAMES[settings.method]} on {explainer.layer_name}; {dev}"
    )
    boxes, maps, cam_seconds = explainer.explain(inputs.chosen, inputs.stores, show_progress)
    out_dir = Path(job.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_parquet(boxes, out_dir / "boxes.parquet")
    with atomic_path(out_dir / "maps.npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, maps.astype(np.float16))
    title = (
        f"{name} {res}px, {identity.dataset}, {identity.protocol} fold {identity.fold}: "
        f"{METHOD_NAMES[settings.method]} on {explainer.layer_name}, {settings.box} box"
    )
    explainer.figure(out_dir / "figure6.png", inputs, boxes, title)
    summary = summarise(boxes, explainer.feature_shape, settings, res, inputs.has_boxes)
    summary.update(
        **explainer.description(),
        model=name,
        weights=inputs.saved.get("weights"),
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
