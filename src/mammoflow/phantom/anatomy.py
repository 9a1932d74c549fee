"""Breast anatomy on the working grid: outline (CC, MLO), pectoral muscle, compressed thickness and the
fat/fibroglandular texture.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mammoflow.phantom.catalog import ImageTask

_AIR = 0.02  # brightness of the background air
# Density class -> share of the breast that is fibroglandular, and brightness of that tissue.
_GLAND_FRACTION = {"A": 0.06, "B": 0.22, "C": 0.45, "D": 0.70}
_GLAND_LEVEL = {"A": 0.56, "B": 0.59, "C": 0.62, "D": 0.65}


@dataclass
class Anatomy:
    """Canonical frame: chest wall at the left edge. Arrays on the working grid."""

    brightness: np.ndarray  # float32, no lesions
    mask: np.ndarray  # bool, breast incl. pectoral
    pectoral: np.ndarray  # bool
    depth: np.ndarray  # breast depth (outline column) per row, working px
    spacing_mm: float  # working-grid pixel spacing


def _low_freq_1d(rng: np.random.Generator, n: int, terms: int = 4) -> np.ndarray:
    """Smooth noise in about [-1, 1] along n samples (outline irregularity)."""
    t = np.linspace(0.0, 1.0, n, dtype=np.float64)
    out = np.zeros(n)
    for k in range(1, terms + 1):
        cycles = k * rng.uniform(0.6, 1.2)
        out += rng.normal() / k * np.sin(2 * np.pi * cycles * t + rng.uniform(0, 2 * np.pi))
    return out / max(1e-9, np.abs(out).max())


def _cc_depth(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """CC outline: a superellipse-like half from the chest wall, 70-90% of the rows tall."""
    y = np.arange(h) + 0.5
    half_up, half_down = h * rng.uniform(0.35, 0.45), h * rng.uniform(0.35, 0.45)
    centre = np.clip(h * (0.5 + rng.uniform(-0.03, 0.03)), half_up + 0.02 * h, h - half_down - 0.02 * h)
    depth, power = w * rng.uniform(0.45, 0.72), rng.uniform(1.8, 2.6)
    t = np.where(y < centre, (centre - y) / half_up, (y - centre) / half_down)
    profile = depth * np.clip(1.0 - np.clip(t, 0, 1) ** power, 0, 1) ** (1.0 / power)
    return profile * (1.0 + 0.04 * _low_freq_1d(rng, h))


def _mlo_depth(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, float]:
    """MLO outline: axillary tail at the top edge, widest at 50-65% height, fold at 84-92%."""
    y = np.arange(h) + 0.5
    top = w * rng.uniform(0.2, 0.3)
    depth = w * rng.uniform(0.45, 0.72)
    widest, fold = h * rng.uniform(0.5, 0.65), h * rng.uniform(0.84, 0.92)
    upper = top + (depth - top) * np.sin(np.pi / 2 * np.clip(y / widest, 0, 1)) ** rng.uniform(0.8, 1.3)
    power = rng.uniform(1.8, 2.8)
    v = np.clip((y - widest) / (fold - widest), 0, 1)
    lower = depth * np.clip(1.0 - v**power, 0, 1) ** (1.0 / power)
    profile = np.where(y < widest, upper, lower)
    return profile * (1.0 + 0.04 * _low_freq_1d(rng, h)), top


def _pectoral(rng: np.random.Generator, h: int, w: int, top: float, mask: np.ndarray) -> np.ndarray:
    """Triangle in the upper chest-wall corner with a slightly convex edge."""
    width, height = top * rng.uniform(0.7, 0.95), h * rng.uniform(0.3, 0.48)
    bulge = rng.uniform(0.0, 0.3)
    y = np.arange(h) + 0.5
    s = np.clip(y / height, 0, 1)
    edge = width * (1 - s) * (1 + bulge * np.sin(np.pi * s))
    x = np.arange(w) + 0.5
    return (x[None, :] < edge[:, None]) & mask


def power_law_field(
    rng: np.random.Generator,
    shape: tuple[int, int],
    beta: float,
    lowest_cycles: float = 2.0,
    stretch: float = 1.0,
) -> np.ndarray:
    """Zero-mean unit-variance field with power spectrum P(f) ~ 1/f^beta (FFT-filtered white noise).

    ``lowest_cycles``: frequencies below this many cycles per long side are flattened, so the field
    is not dominated by one image-wide gradient. ``stretch`` > 1 elongates structures along x (the
    chest-wall-to-nipple direction, like ducts and ligaments).
    """
    h, w = shape
    noise = rng.standard_normal(shape, dtype=np.float32)
    spectrum = np.fft.rfft2(noise)
    fy = np.fft.fftfreq(h).astype(np.float32)[:, None] / np.float32(np.sqrt(stretch))
    fx = np.fft.rfftfreq(w).astype(np.float32)[None, :] * np.float32(np.sqrt(stretch))
    f = np.maximum(np.sqrt(fy * fy + fx * fx), np.float32(lowest_cycles / max(h, w)))
    spectrum *= f ** np.float32(-beta / 2)
    out = np.fft.irfft2(spectrum, s=shape).astype(np.float32)
    out -= out.mean()
    out /= max(float(out.std()), 1e-12)
    return out


def anatomy_of(rng: np.random.Generator, task: ImageTask, work: tuple[int, int], spacing: float) -> Anatomy:
    h, w = work
    shape_rng, texture_rng = rng.spawn(2)
    if task.view == "MLO":
        depth, top = _mlo_depth(shape_rng, h, w)
    else:
        depth, top = _cc_depth(shape_rng, h, w), 0.0
    x = np.arange(w, dtype=np.float32) + 0.5
    mask = x[None, :] < depth[:, None].astype(np.float32)
    pect = _pectoral(shape_rng, h, w, top, mask) if task.view == "MLO" else np.zeros_like(mask)

    # Distance to the outline (image edges are not outline: the breast continues past them).
    dist_mm = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5) * np.float32(spacing)
    # A compressed breast has a round edge of radius ~ half its thickness: t = sqrt(1 - (1 - d/R)^2).
    edge_radius = shape_rng.uniform(18.0, 30.0)
    d = np.clip(dist_mm / np.float32(edge_radius), 0, 1)
    thickness = np.sqrt(1.0 - (1.0 - d) ** 2)

    tissue = _tissue(texture_rng, task.density, mask, dist_mm, depth)
    b = np.float32(_AIR) + (np.float32(0.15) + np.float32(0.85) * thickness) * tissue
    b = _blend_pectoral(texture_rng, b, pect, spacing)
    skin_mm = shape_rng.uniform(1.0, 2.0)
    b += np.float32(0.10) * np.clip(1.0 - dist_mm / np.float32(skin_mm), 0, 1) * mask
    b[~mask] = _AIR
    return Anatomy(b.astype(np.float32), mask, pect, depth, spacing)


def _tissue(
    rng: np.random.Generator, density: str, mask: np.ndarray, dist_mm: np.ndarray, depth: np.ndarray
) -> np.ndarray:
    """Fat/fibroglandular composition (brightness at full thickness)."""
    h, w = mask.shape
    beta = rng.uniform(2.5, 3.5)
    field_ = power_law_field(rng, (h, w), beta)
    fine = power_law_field(rng, (h, w), beta - 0.5, lowest_cycles=8.0, stretch=2.5)
    # Glandular tissue gathers behind the nipple, spares the subcutaneous fat near the skin.
    nipple_row = int(np.argmax(depth))
    cx, cy = 0.4 * depth[nipple_row], nipple_row + 0.5
    sx, sy = 0.45 * depth[nipple_row] + 1.0, 0.35 * max(1, int(mask.any(axis=1).sum()))
    gx = ((np.arange(w, dtype=np.float32) + 0.5 - cx) / sx) ** 2
    gy = ((np.arange(h, dtype=np.float32) + 0.5 - cy) / sy) ** 2
    central = np.exp(-0.5 * (gy[:, None] + gx[None, :]))
    subcutaneous = np.clip(dist_mm / np.float32(rng.uniform(5.0, 10.0)), 0, 1)
    score = field_ + 1.3 * central + 1.0 * (subcutaneous - 1.0)
    inside = score[mask]
    threshold = np.quantile(inside, 1.0 - _GLAND_FRACTION[density]) if inside.size else 0.0
    # A soft threshold: dense regions fade into fat instead of looking cut out.
    gland = 1.0 / (1.0 + np.exp(-(score - np.float32(threshold)) / np.float32(0.35)))
    fat_level = rng.uniform(0.28, 0.32)
    level = _GLAND_LEVEL[density]
    return (fat_level + (level - fat_level) * gland + 0.045 * fine).astype(np.float32)


def _blend_pectoral(rng: np.random.Generator, b: np.ndarray, pect: np.ndarray, spacing: float) -> np.ndarray:
    if not pect.any():
        return b
    sigma = max(0.6, 0.6 / spacing)  # ~0.6 mm soft muscle edge
    soft = cv2.GaussianBlur(pect.astype(np.float32), (0, 0), sigma) * pect.astype(np.float32)
    soft = np.maximum(soft, cv2.erode(pect.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32))
    muscle = rng.uniform(0.78, 0.84) + 0.025 * power_law_field(rng, b.shape, 2.0, lowest_cycles=4.0)
    return b * (1 - soft) + muscle * soft
