"""What lies outside the breast: collimator strips, burned-in text and a lead marker."""

from __future__ import annotations

import cv2
import numpy as np

from mammoflow.phantom.catalog import ImageTask


def _far_cols(w: int, width: int, laterality: str) -> slice:
    """Columns of the edge away from the chest wall."""
    return slice(w - width, w) if laterality == "L" else slice(0, width)


def _free_rows(mask_full_rows: np.ndarray) -> tuple[int, int]:
    """Rows free of breast at the top and at the bottom."""
    rows = np.flatnonzero(mask_full_rows)
    if rows.size == 0:
        return len(mask_full_rows), len(mask_full_rows)
    return int(rows[0]), len(mask_full_rows) - int(rows[-1]) - 1


def add_strips(
    rng: np.random.Generator, b: np.ndarray, breast_rows: np.ndarray, laterality: str, view: str
) -> list[tuple[int, int, int, int]]:
    """Collimator strips (bright or mid-grey) along the far edge and sometimes top/bottom."""
    h, w = b.shape
    width = max(1, round(w * rng.uniform(0.01, 0.04)))
    level = float(rng.choice([0.92, 0.5]))
    cols = _far_cols(w, width, laterality)
    b[:, cols] = np.float32(level) + np.float32(0.02) * b[:, cols]
    boxes = [(cols.start, 0, cols.stop, h)]
    free_top, free_bottom = _free_rows(breast_rows)
    want = round(w * rng.uniform(0.01, 0.04))
    if rng.random() < 0.5:
        at_top = view == "CC" and rng.random() < 0.5
        free = free_top if at_top else free_bottom
        thick = min(want, int(0.6 * free))
        if thick >= 1:
            rows = slice(0, thick) if at_top else slice(h - thick, h)
            b[rows, :] = np.float32(level)
            boxes.append((0, rows.start, w, rows.stop))
    return boxes


def _text_lines(task: ImageTask) -> list[str]:
    d = task.study_date
    return [f"{task.laterality} {task.view}", f"{d[:4]}-{d[4:6]}-{d[6:]}"]


def text_mask(
    task: ImageTask, h: int, w: int, mask_full: np.ndarray, strips: list[tuple[int, int, int, int]]
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Burned-in annotation in the corner away from the chest wall (top if free, else bottom)."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    lines = _text_lines(task)
    scale = max(0.25, 0.022 * h / 22.0)
    thick = max(1, round(scale * 1.6))
    sizes = [cv2.getTextSize(t, font, scale, thick) for t in lines]
    line_h = max(s[0][1] + s[1] for s in sizes) + max(2, round(0.006 * h))
    block_w = max(s[0][0] for s in sizes) + 2 * thick
    block_h = line_h * len(lines) + thick
    canvas = np.zeros((block_h, block_w), np.uint8)
    for i, (text, (_, base)) in enumerate(zip(lines, sizes, strict=True)):
        cv2.putText(canvas, text, (thick, (i + 1) * line_h - base), font, scale, 255, thick, cv2.LINE_AA)
    strip_w = max(x1 - x0 for x0, _, x1, _ in strips if x1 - x0 < w) if len(strips) else 0
    pad = max(2, round(0.02 * w)) + strip_w
    x0 = w - pad - block_w if task.laterality == "L" else pad
    x0 = int(np.clip(x0, 0, max(0, w - block_w)))
    out = np.zeros((h, w), bool)
    for y0 in (max(2, round(0.06 * h)), h - block_h - max(2, round(0.06 * h))):
        y0 = int(np.clip(y0, 0, max(0, h - block_h)))
        box = (x0, y0, min(w, x0 + block_w), min(h, y0 + block_h))
        if not mask_full[box[1] : box[3], box[0] : box[2]].any():
            break
    region = canvas[: box[3] - box[1], : box[2] - box[0]] > 96
    out[box[1] : box[3], box[0] : box[2]] = region
    return out, box


def add_marker(
    rng: np.random.Generator,
    b: np.ndarray,
    mask_work: np.ndarray,
    zoom: float,
    spacing_full: float,
    keep_out: list[tuple[int, int, int, int]],
) -> None:
    """A small bright square or disc in the air, clear of the breast, text and strips."""
    size = max(2, round(rng.uniform(3.0, 6.0) / spacing_full))
    free = (~mask_work).astype(np.uint8)
    for x0, y0, x1, y1 in keep_out:
        free[int(y0 / zoom) : int(np.ceil(y1 / zoom)) + 1, int(x0 / zoom) : int(np.ceil(x1 / zoom)) + 1] = 0
    free[0, :] = free[-1, :] = free[:, 0] = free[:, -1] = 0
    dist = cv2.distanceTransform(free, cv2.DIST_L2, 5) * zoom
    ys, xs = np.nonzero(dist >= size * 1.2 + 3 / spacing_full)
    if ys.size == 0:
        return
    pick = int(rng.integers(ys.size))
    cx, cy = round((xs[pick] + 0.5) * zoom), round((ys[pick] + 0.5) * zoom)
    marker = np.zeros((2 * size + 1, 2 * size + 1), np.uint8)
    if rng.random() < 0.5:
        cv2.circle(marker, (size, size), size // 2 + 1, 1, -1)
    else:
        marker[size // 2 : size + size // 2 + 1, size // 2 : size + size // 2 + 1] = 1
    y0, x0 = max(0, cy - size), max(0, cx - size)
    window = b[y0 : cy + size + 1, x0 : cx + size + 1]
    window[marker[: window.shape[0], : window.shape[1]] > 0] = np.float32(0.95)
