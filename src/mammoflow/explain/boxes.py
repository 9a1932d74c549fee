"""Peak, box and score geometry; pure numpy.

Coordinates are the stores' (src/mammoflow/preprocess.py ``Box``): continuous and half-open, pixel (x, y)
covers [x, x + 1) x [y, y + 1), so its centre is (x + 0.5, y + 0.5). Lesion boxes are floats in these
coordinates; Grad-CAM boxes are whole pixels [x0, x1) x [y0, y1).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

BoxT = tuple[float, float, float, float]  # x0, y0, x1, y1


@dataclass(frozen=True)
class Peak:
    x: int
    y: int
    ties: int  # feature-map cells sharing the maximum (1: the peak is unique)
    constant: bool  # the raw map has no maximum (all zero or flat): it points nowhere


def find_peak(
    upsampled: np.ndarray,
    raw: np.ndarray,
    grid: tuple[float, float, float, float] | None = None,
    rtol: float = 1e-5,
) -> Peak:
    """The pixel of highest activation of an upsampled map (H x W), given its raw feature map (h x w).

    ``grid`` = (x0, y0, sx, sy): cell (i, j) is centred at (x0 + j * sx, y0 + i * sy); default: the map
    stretched over the image. Bilinear upsampling (grad-cam uses cv2.resize) flattens the border cells into
    plateaus: a raw maximum in a corner cell becomes a block of equal pixels reaching the image corner, and
    np.argmax would pick the corner. Of the pixels at the maximum, the one closest to the centre of the
    maximal feature cell is taken: the point the network's feature actually sits on. A flat or all-zero raw
    map has no peak: it is reported as constant (the image centre stands in, and it never counts as a hit).
    """
    height, width = upsampled.shape
    top = float(raw.max()) if raw.size else 0.0
    if not np.isfinite(top) or top <= 0 or float(raw.max() - raw.min()) <= rtol * top:
        return Peak(width // 2, height // 2, int(raw.size), True)
    h, w = raw.shape
    x0, y0, sx, sy = grid or (width / w / 2, height / h / 2, width / w, height / h)
    i, j = np.unravel_index(int(np.argmax(raw)), raw.shape)
    target_x, target_y = x0 + j * sx, y0 + i * sy
    high = float(upsampled.max())
    span = high - float(upsampled.min())
    ys, xs = np.nonzero(upsampled >= high - rtol * max(span, 1e-12))
    k = int(np.argmin((xs + 0.5 - target_x) ** 2 + (ys + 0.5 - target_y) ** 2))
    return Peak(int(xs[k]), int(ys[k]), int((raw >= top * (1 - rtol)).sum()), False)


def fixed_box(x: int, y: int, side: int, width: int, height: int) -> tuple[int, int, int, int]:
    """A square of ``side`` pixels centred on pixel (x, y), cut at the image edges (not shifted inwards).

    An even side cannot centre on a pixel: the pixel then has side/2 pixels left (above) and side/2 - 1
    right (below).
    """
    side = max(int(side), 1)
    x0, y0 = x - side // 2, y - side // 2
    return max(x0, 0), max(y0, 0), min(x0 + side, width), min(y0 + side, height)


def threshold_box(upsampled: np.ndarray, x: int, y: int, fraction: float) -> tuple[int, int, int, int]:
    """Bounding box of the 8-connected region of ``upsampled >= fraction * max`` that contains (x, y)."""
    mask = (upsampled >= fraction * float(upsampled.max())).astype(np.uint8)
    mask[y, x] = 1  # the peak is in its own region even if it is not the global maximum
    _, labels = cv2.connectedComponents(mask, connectivity=8)
    ys, xs = np.nonzero(labels == labels[y, x])
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def contains(box: BoxT, x: int, y: int) -> bool:
    """Whether pixel (x, y)'s centre lies in the half-open box: for whole-pixel boxes, x0 <= x < x1."""
    x0, y0, x1, y1 = box
    return bool(x0 <= x + 0.5 < x1 and y0 <= y + 0.5 < y1)


def area(box: BoxT) -> float:
    x0, y0, x1, y1 = box
    return max(x1 - x0, 0.0) * max(y1 - y0, 0.0)


def iou(a: BoxT, b: BoxT) -> float:
    inter = area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def clipped(box: BoxT, width: int, height: int) -> BoxT:
    x0, y0, x1, y1 = box
    return min(max(x0, 0), width), min(max(y0, 0), height), min(max(x1, 0), width), min(max(y1, 0), height)


def score(peak: Peak, box: BoxT, lesion: BoxT | None) -> tuple[bool | None, float]:
    """(hit, IoU) against a lesion box; (None, nan) without one. A constant map is never a hit."""
    if lesion is None or not np.all(np.isfinite(lesion)):
        return None, float("nan")
    return (not peak.constant and contains(lesion, peak.x, peak.y)), iou(box, lesion)


def chance_hit_rate(lesions: list[BoxT], width: int, height: int) -> float | None:
    """What a uniformly random point would hit: the mean share of the image the lesion boxes cover."""
    if not lesions:
        return None
    return float(np.mean([area(clipped(b, width, height)) for b in lesions]) / (width * height))
