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
    implant: np.ndarray  # bool; empty without an implant


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
    shape_rng, texture_rng, structure_rng = rng.spawn(3)
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
    tissue += _ligaments(structure_rng, mask, dist_mm) + _vessels(structure_rng, mask, depth, spacing)
    b = np.float32(_AIR) + (np.float32(0.15) + np.float32(0.85) * thickness) * tissue
    b = _blend_pectoral(texture_rng, b, pect, spacing)
    implant = _implant(structure_rng, mask, pect, depth) if task.implant else np.zeros_like(mask)
    if implant.any():
        b = _blend_implant(structure_rng, b, implant, spacing)
    skin_mm = shape_rng.uniform(1.0, 2.0)
    b += np.float32(0.10) * np.clip(1.0 - dist_mm / np.float32(skin_mm), 0, 1) * mask
    b[~mask] = _AIR
    return Anatomy(b.astype(np.float32), mask, pect, depth, spacing, implant)


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
    return b * (1 - soft) + (muscle + _muscle_fibres(rng, pect)) * soft


def _muscle_fibres(rng: np.random.Generator, pect: np.ndarray) -> np.ndarray:
    """Striations along the muscle's free edge, brighter towards the axilla: the muscle is not flat."""
    rows = np.flatnonzero(pect.any(axis=1))
    width = max(1.0, float(pect[rows[0]].sum()))
    height = max(1.0, float(rows[-1] + 1))
    y, x = np.mgrid[0 : pect.shape[0], 0 : pect.shape[1]].astype(np.float32)
    u = np.clip(x / width + y / height, 0, 1)  # 0 at the corner, 1 on the free edge; fibres: u = const
    samples = 512
    stripes = cv2.GaussianBlur(rng.standard_normal((1, samples)).astype(np.float32), (0, 0), 2.0)[0]
    stripes /= max(float(np.abs(stripes).max()), 1e-6)
    fibres = np.interp(u.ravel(), np.linspace(0, 1, samples), stripes).reshape(u.shape)
    return (0.035 * fibres + 0.05 * (0.5 - u)).astype(np.float32)


# ------------------------------------------------------------------------------ vessels, ligaments


def _ligaments(rng: np.random.Generator, mask: np.ndarray, dist_mm: np.ndarray) -> np.ndarray:
    """Cooper's ligaments: thin curved lines in the subcutaneous fat, the zero crossings of a smooth
    random field, fading out some 15-25 mm inside the skin."""
    smooth = power_law_field(rng, mask.shape, 3.5, lowest_cycles=6.0)
    lines = np.exp(-((smooth / np.float32(0.05)) ** 2))
    reach = np.float32(rng.uniform(15.0, 25.0))
    zone = np.clip(dist_mm / np.float32(2.0), 0, 1) * np.clip(1.0 - dist_mm / reach, 0, 1)
    return (np.float32(rng.uniform(0.04, 0.07)) * lines * zone * mask).astype(np.float32)


def _vessels(rng: np.random.Generator, mask: np.ndarray, depth: np.ndarray, spacing: float) -> np.ndarray:
    """2-5 tortuous vessels, 0.8-2 mm wide, from the chest wall towards the nipple, round in section."""
    h, w = mask.shape
    scale = 16  # cv2 draws with 4 fractional bits: sub-pixel polylines on coarse grids
    canvas = np.zeros((h, w), np.float32)
    rows = np.flatnonzero(mask.any(axis=1))
    for _ in range(int(rng.integers(2, 6))):
        y = float(rng.uniform(rows[0] + 0.15 * len(rows), rows[0] + 0.85 * len(rows)))
        x, angle = 0.0, float(rng.normal(0.0, 0.3))
        length = depth[int(y)] * rng.uniform(0.5, 0.9)
        step = max(2.0, 3.0 / spacing)
        points = [(x, y)]
        for _ in range(int(length / step)):
            angle = float(np.clip(angle + rng.normal(0.0, 0.25), -1.0, 1.0))
            x, y = x + step * np.cos(angle), float(np.clip(y + step * np.sin(angle), 0, h - 1))
            points.append((x, y))
        width_px = max(1, round(rng.uniform(0.8, 2.0) / spacing))
        line = np.zeros((h, w), np.float32)
        pts = np.round(np.array(points) * scale).astype(np.int32)
        cv2.polylines(line, [pts], False, 1.0, width_px, cv2.LINE_AA, shift=4)
        line = cv2.GaussianBlur(line, (0, 0), max(0.5, width_px / 3))
        np.maximum(canvas, line * np.float32(rng.uniform(0.03, 0.06)), out=canvas)
    return canvas * mask


# ---------------------------------------------------------------------------------------- implant


def _implant(rng: np.random.Generator, mask: np.ndarray, pect: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """A breast implant: a large smooth ellipse against the chest wall behind the glandular tissue."""
    h, w = mask.shape
    rows = np.flatnonzero(mask.any(axis=1))
    nipple_row = int(np.argmax(depth))
    centre = (float(rng.uniform(0.05, 0.2) * depth[nipple_row]), nipple_row + float(rng.normal(0, 0.03 * h)))
    axes = (float(rng.uniform(0.35, 0.5) * depth[nipple_row]), float(rng.uniform(0.25, 0.35) * len(rows)))
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    inside = ((x + 0.5 - centre[0]) / axes[0]) ** 2 + ((y + 0.5 - centre[1]) / axes[1]) ** 2 < 1.0
    return inside & mask & ~pect


def _blend_implant(
    rng: np.random.Generator, b: np.ndarray, implant: np.ndarray, spacing: float
) -> np.ndarray:
    """Silicone is far denser than tissue: nearly uniform, bright, with a sharp (~0.5 mm) shell."""
    soft = cv2.GaussianBlur(implant.astype(np.float32), (0, 0), max(0.5, 0.5 / spacing))
    level = np.float32(rng.uniform(0.88, 0.94))
    return b * (1 - soft) + (level + np.float32(0.1) * (b - b.mean())) * soft
