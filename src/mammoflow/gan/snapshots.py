"""The paper's Figure 1 for one stage: the same latents drawn at successive points of training."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mammoflow.atomic import atomic_path


def shrink_for_sheet(images: np.ndarray, size: int = 128) -> np.ndarray:
    if images.shape[-1] <= size:
        return images
    return np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images])


def write_snapshot_figure(snapshots: list[tuple[float, np.ndarray]], path: Path, title: str) -> None:
    """Rows: the same latents at successive points of training (kimg on the left)."""
    tile = snapshots[0][1].shape[-1]
    scale = max(1, 64 // tile)
    tile *= scale
    margin, header = 84, 24
    columns = snapshots[0][1].shape[0]
    sheet = np.full((header + len(snapshots) * (tile + 2), margin + columns * (tile + 2)), 24, np.uint8)
    cv2.putText(sheet, title, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 255, 1)
    for r, (kimg, images) in enumerate(snapshots):
        y = header + r * (tile + 2)
        cv2.putText(sheet, f"{kimg:g} kimg", (4, y + tile // 2 + 4), cv2.FONT_HERSHEY_PLAIN, 0.9, 255, 1)
        for c, image in enumerate(images):
            big = np.kron(image, np.ones((scale, scale), np.uint8)) if scale > 1 else image
            sheet[y : y + tile, margin + c * (tile + 2) : margin + c * (tile + 2) + tile] = big
    with atomic_path(path) as tmp:
        ok, encoded = cv2.imencode(".png", sheet)
        if not ok:
            raise RuntimeError(f"{path}: PNG encoding failed")
        tmp.write_bytes(encoded.tobytes())
