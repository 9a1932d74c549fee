"""What a class activation map's hit rate is worth on the phantom: the same pointing game for baselines.

For one trained cell (its ``model.json``) and its store's lesion images: the hit rate of the cell's map
(the cam stage's layer rule and method), of the same network untrained (same architecture, random
weights), and of the brightest pixel of the image; and how often two cells' maps peak on the same pixel.
A hit rate far above chance but no better than the brightest pixel says the task is easy, not that the
maps are a hard test. Every lesion image of the store is used (both folds: half of them trained the cell).

    python bench/cam_baselines.py results/train/clean/32/processed/resnet18/fold0 results/data/32/processed \\
        --other results/train/clean/32/augmented/resnet18/fold0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from mammoflow.classify.artifact import load_artifact
from mammoflow.classify.models import build_model
from mammoflow.explain.boxes import contains, find_peak
from mammoflow.explain.gradcam import align_maps, explained_layer, feature_grid, grad_cam_maps
from mammoflow.explain.stage import CamSettings
from mammoflow.store import LESION_COLUMNS, open_store


def peaks(model: torch.nn.Module, name: str, images: np.ndarray, settings: CamSettings) -> list:
    res = images.shape[-1]
    layer, _, _ = explained_layer(model, name, res, settings.min_cells)
    grid, shape = feature_grid(model, layer, res)
    cams = grad_cam_maps(model, layer, images, 64, "cpu", False, settings.method)
    aligned = align_maps(cams.maps, grid, *shape)
    return [
        find_peak(aligned[i], cams.raw[i], (grid.x0, grid.y0, grid.sx, grid.sy)) for i in range(len(images))
    ]


def hit_rate(found: list, boxes: np.ndarray) -> float:
    return float(
        np.mean([not p.constant and contains(tuple(b), p.x, p.y) for p, b in zip(found, boxes, strict=True)])
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cell", type=Path)
    parser.add_argument("store", type=Path)
    parser.add_argument("--other", type=Path, help="a second cell: how often the two peak on the same pixel")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = CamSettings.configured()
    images, manifest = open_store(args.store)
    lesions = manifest[manifest["lesion_x0"].notna()]
    pixels = np.ascontiguousarray(images[lesions["row"].to_numpy()])
    boxes = lesions[LESION_COLUMNS].to_numpy()
    model, metadata = load_artifact(args.cell)
    name, res = metadata["architecture"], int(metadata["resolution"])
    trained = peaks(model, name, pixels, settings)
    torch.manual_seed(args.seed)
    untrained, _ = build_model(name, res)
    brightest = [np.unravel_index(int(np.argmax(p)), p.shape) for p in pixels]
    result = {
        "lesion_images": len(pixels),
        "method": settings.method,
        "min_cells": settings.min_cells,
        "chance": float(np.mean([(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]) / res**2),
        "trained": hit_rate(trained, boxes),
        "untrained": hit_rate(peaks(untrained, name, pixels, settings), boxes),
        "brightest_pixel": float(
            np.mean([contains(tuple(b), x, y) for (y, x), b in zip(brightest, boxes, strict=True)])
        ),
    }
    if args.other:
        other_model, _ = load_artifact(args.other)
        other = peaks(other_model, name, pixels, settings)
        result["same_peak_as_other"] = float(
            np.mean([(a.x, a.y) == (b.x, b.y) for a, b in zip(trained, other, strict=True)])
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
