"""Lesions: masses (ill-defined or spiculated) and microcalcification clusters, placed inside the breast
and rendered at full resolution; their size and contrast are the knobs that make the task easy or hard.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import cv2
import numpy as np

from mammoflow.phantom.anatomy import Anatomy
from mammoflow.phantom.catalog import ImageTask, LesionPlan, PhantomSpec


@dataclass(frozen=True)
class LesionPatch:
    kind: str
    x0: int  # full-res box (exclusive end), canonical frame
    y0: int
    profile: np.ndarray  # float32 in [0, 1], shape (y1-y0, x1-x0), nonzero at the box edges
    amplitude: float  # brightness added where profile is 1, relative to the local tissue (mass)


_WOBBLE = 0.15  # a mass's radius varies with angle by at most this fraction


def _mass_reach(spiculated: bool) -> float:
    """How far a mass's profile reaches, in mass radii (spikes end by 2.2 radii, plus their blur)."""
    return 2.35 if spiculated else 1.3 * (1 + _WOBBLE)


def _support_radius_mm(plan: LesionPlan) -> float:
    if plan.kind == "calcification":
        return plan.size_mm / 2 + 1.0
    return plan.size_mm / 2 * _mass_reach(plan.spiculated)


def _place(
    plan: LesionPlan, anatomy: Anatomy, taken: list[tuple[float, float, float]], scale_down: float = 1.0
) -> tuple[float, float, float] | None:
    """Centre (x, y) in working px and the scale factor; None when the breast is too small."""
    allowed = (anatomy.mask & ~anatomy.pectoral & ~anatomy.implant).astype(np.uint8)
    allowed[0, :] = allowed[-1, :] = 0
    allowed[:, 0] = allowed[:, -1] = 0
    for x, y, r in taken:  # keep two lesions of one breast apart
        cv2.circle(allowed, (round(x), round(y)), round(r), 0, -1)
    # Chessboard distance: the whole square patch (hence the lesion's box) must fit, not just a disc.
    dist = cv2.distanceTransform(allowed, cv2.DIST_C, 3)
    margin = 1.5 / anatomy.spacing_mm + 2.0  # keep off the skin line; +2 px for the patch border
    rows = np.flatnonzero(anatomy.mask.any(axis=1))
    top, bottom = rows[0], rows[-1] + 1
    ys, xs = np.mgrid[0 : dist.shape[0], 0 : dist.shape[1]]
    depth = np.maximum(anatomy.depth[ys], 1.0)
    score = np.abs((xs + 0.5) / depth - plan.depth_fraction)
    score += 0.5 * np.abs((ys + 0.5 - top) / (bottom - top) - plan.row_fraction)
    scale = scale_down
    while scale > 0.2:
        need = _support_radius_mm(plan) * scale / anatomy.spacing_mm + margin
        ok = dist >= need
        if ok.any():
            best = np.argmin(np.where(ok, score, np.inf))
            y, x = np.unravel_index(best, dist.shape)
            return float(x) + 0.5, float(y) + 0.5, scale
        scale *= 0.8
    return None


def _mass_profile(rng: np.random.Generator, plan: LesionPlan, radius_px: float) -> np.ndarray:
    """Blob with an irregular radius; ill-defined (wide smooth fall-off) or spiculated (thin spikes)."""
    reach = radius_px * _mass_reach(plan.spiculated) + 2
    half = int(np.ceil(reach))
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    r, theta = np.hypot(xx, yy), np.arctan2(yy, xx)
    wobble = np.ones_like(r)
    for k in range(2, 6):
        wobble += rng.normal(0, 0.06) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    wobble = np.clip(wobble, 1 - _WOBBLE, 1 + _WOBBLE)
    rel = r / (radius_px * wobble)
    if plan.spiculated:
        # Dome (a sphere's projected thickness) with a one-pixel anti-aliased edge, plus spikes.
        edge = np.clip((radius_px * wobble - r) + 0.5, 0, 1)
        profile = np.sqrt(np.clip(1 - np.minimum(rel, 1) ** 2, 0.04, 1)) * edge
        profile = np.maximum(profile, _spikes(rng, half, radius_px))
    else:
        # Ill-defined: full near the centre, no edge at all, fading out to 1.3 radii.
        profile = np.clip(1 - (rel / 1.3) ** 2, 0, 1) ** 0.6
    return profile.astype(np.float32)


def _spikes(rng: np.random.Generator, half: int, radius_px: float) -> np.ndarray:
    canvas = np.zeros((2 * half + 1, 2 * half + 1), np.float32)
    thickness = max(1, round(radius_px * 0.06))
    for angle in rng.uniform(0, 2 * np.pi, size=int(rng.integers(8, 21))):
        length = radius_px * rng.uniform(1.5, 2.2)
        steps = np.linspace(0.85 * radius_px, length, 5)
        for i, (a, b) in enumerate(itertools.pairwise(steps)):
            p0 = (round(half + a * np.cos(angle)), round(half + a * np.sin(angle)))
            p1 = (round(half + b * np.cos(angle)), round(half + b * np.sin(angle)))
            value = 0.7 - 0.13 * i  # spikes fade outwards
            segment = np.zeros_like(canvas)
            cv2.line(segment, p0, p1, float(value), thickness, cv2.LINE_AA)
            np.maximum(canvas, segment, out=canvas)
    canvas = cv2.GaussianBlur(canvas, (0, 0), 0.5 * thickness)
    canvas[canvas < 0.02] = 0.0  # keeps the box tight around what is visible
    return canvas


def _cluster_profile(
    rng: np.random.Generator, plan: LesionPlan, spacing_mm: float, scale: float
) -> np.ndarray:
    """5-25 specks of 0.1-1 mm (at least one pixel) scattered in a region of ``size_mm``."""
    region_px = plan.size_mm * scale / 2 / spacing_mm
    diam_mm = np.exp(rng.uniform(np.log(0.1), np.log(1.0), size=plan.n_specks))
    radii = diam_mm / 2 / spacing_mm
    half = int(np.ceil(region_px + radii.max() + 2))
    canvas = np.zeros((2 * half + 1, 2 * half + 1), np.float32)
    angle = rng.uniform(0, 2 * np.pi, plan.n_specks)
    dist = region_px * np.sqrt(rng.uniform(0, 1, plan.n_specks))
    for a, d, rad in zip(angle, dist, radii, strict=True):
        cx, cy = half + d * np.cos(a), half + d * np.sin(a)
        reach = int(np.ceil(rad)) + 1
        ix, iy = round(cx), round(cy)
        ys, xs = np.mgrid[iy - reach : iy + reach + 1, ix - reach : ix + reach + 1]
        cover = np.clip(rad + 0.5 - np.hypot(xs - cx, ys - cy), 0, 1).astype(np.float32)
        cover[reach, reach] = 1.0  # a speck is at least one full pixel
        window = canvas[iy - reach : iy + reach + 1, ix - reach : ix + reach + 1]
        np.maximum(window, cover * rng.uniform(0.8, 1.0), out=window)
    return canvas


def _trim(profile: np.ndarray, x0: int, y0: int) -> tuple[np.ndarray, int, int]:
    """Crop a profile to its nonzero support so the box is tight."""
    rows, cols = np.flatnonzero(profile.any(axis=1)), np.flatnonzero(profile.any(axis=0))
    cut = profile[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return cut, x0 + int(cols[0]), y0 + int(rows[0])


def lesion_patches(
    rng: np.random.Generator, task: ImageTask, anatomy: Anatomy, full: tuple[int, int], spec: PhantomSpec
) -> list[LesionPatch]:
    """Plan and render every lesion of this image at full resolution (canonical frame)."""
    h_full, w_full = full
    h, w = anatomy.mask.shape
    zoom_x, zoom_y = w_full / w, h_full / h
    full_spacing = anatomy.spacing_mm / zoom_x
    taken: list[tuple[float, float, float]] = []
    patches = []
    for plan in task.lesions:
        placed = _place(plan, anatomy, taken)
        if placed is None:
            continue
        x, y, scale = placed
        taken.append((x, y, _support_radius_mm(plan) * scale / anatomy.spacing_mm + 1))
        if plan.kind == "mass":
            profile = _mass_profile(rng, plan, max(1.0, plan.size_mm * scale / 2 / full_spacing))
            amplitude = spec.mass_contrast
        else:
            profile = _cluster_profile(rng, plan, full_spacing, scale)
            amplitude = float(rng.uniform(0.25, 0.35))
        half = profile.shape[0] // 2
        cx, cy = round(x * zoom_x - 0.5), round(y * zoom_y - 0.5)
        x0, y0 = cx - half, cy - half
        # Clip to the image (placement keeps lesions inside the breast, so this rarely bites).
        sx0, sy0 = max(0, -x0), max(0, -y0)
        sx1 = profile.shape[1] - max(0, x0 + profile.shape[1] - w_full)
        sy1 = profile.shape[0] - max(0, y0 + profile.shape[0] - h_full)
        cut, bx, by = _trim(profile[sy0:sy1, sx0:sx1], x0 + sx0, y0 + sy0)
        patches.append(LesionPatch(plan.kind, bx, by, cut, amplitude))
    return patches


def benign_patches(
    rng: np.random.Generator, task: ImageTask, anatomy: Anatomy, full: tuple[int, int]
) -> list[LesionPatch]:
    """The breast's benign calcifications at full resolution: round, 0.5-2.5 mm, dense, some with a
    lucent centre (eggshell); scattered where the plan puts them, skipped where that is not tissue."""
    h_full, w_full = full
    w = anatomy.mask.shape[1]
    zoom = w_full / w
    full_spacing = anatomy.spacing_mm / zoom
    allowed = anatomy.mask & ~anatomy.pectoral & ~anatomy.implant
    rows = np.flatnonzero(anatomy.mask.any(axis=1))
    patches = []
    for plan in task.benign:
        y = int(rows[0] + plan.row_fraction * (len(rows) - 1))
        x = int(plan.depth_fraction * anatomy.depth[y])
        radius = plan.size_mm / 2 / full_spacing
        rim = bool(rng.random() < 0.3)
        amplitude = float(rng.uniform(0.3, 0.5))
        if not allowed[y, min(x, w - 1)]:
            continue
        half = int(np.ceil(radius)) + 1
        yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
        r = np.hypot(xx, yy)
        profile = np.clip(radius + 0.5 - r, 0, 1)
        profile[half, half] = 1.0  # at least one full pixel
        if rim and radius > 2:
            profile -= 0.6 * np.clip(0.6 * radius + 0.5 - r, 0, 1)
        cx, cy = round((x + 0.5) * zoom - 0.5), round((y + 0.5) * zoom - 0.5)
        if half <= cx < w_full - half and half <= cy < h_full - half:
            patches.append(LesionPatch("benign", cx - half, cy - half, profile.astype(np.float32), amplitude))
    return patches


def apply_lesion(b: np.ndarray, patch: LesionPatch) -> None:
    ph, pw = patch.profile.shape
    region = b[patch.y0 : patch.y0 + ph, patch.x0 : patch.x0 + pw]
    if patch.kind == "mass":
        # Contrast is relative to the tissue around the mass (a few percent brighter).
        region += np.float32(patch.amplitude * float(region.mean())) * patch.profile
    else:
        region += np.float32(patch.amplitude) * patch.profile
