"""One image from its task: anatomy, lesions, overlays, detector values, in the laterality's orientation."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mammoflow.phantom.anatomy import anatomy_of
from mammoflow.phantom.catalog import IMAGE_STREAM, ImageTask, PhantomSpec, stream_rng
from mammoflow.phantom.encoding import to_stored, windows
from mammoflow.phantom.lesions import LesionPatch, apply_lesion, benign_patches, lesion_patches
from mammoflow.phantom.overlays import add_marker, add_strips, text_mask

# Shape/texture are synthesized on a grid with at most this long side, then upsampled: the power-law
# texture has little energy at the finest scales, and this keeps a full-size image well under a second.
_WORK_LONG_SIDE = 1024


@dataclass
class RenderedImage:
    """Stored pixel array (as written to the DICOM) and what the catalog/tests need about it."""

    pixels: np.ndarray  # uint16, stored units (MONOCHROME1 already inverted)
    windows: list[tuple[int, int]]
    boxes: list[tuple[str, int, int, int, int]]  # kind, x0, y0, x1, y1 (x1/y1 exclusive)
    breast_mask: np.ndarray  # bool at full size, actual orientation
    pectoral_mask: np.ndarray  # bool at full size, actual orientation
    spacing_mm: float


def _work_shape(full: tuple[int, int]) -> tuple[int, int]:
    h, w = full
    factor = min(1.0, _WORK_LONG_SIDE / max(h, w))
    return max(8, round(h * factor)), max(8, round(w * factor))


def render_image(spec: PhantomSpec, task: ImageTask, with_lesions: bool = True) -> RenderedImage:
    """Synthesize one image. ``with_lesions=False`` gives the same image minus the lesions (benign
    calcifications, which every breast may have, stay)."""
    machine = task.machine
    full = machine.size(spec.size_scale)
    spacing = machine.spacing_mm / spec.size_scale
    work = _work_shape(full)
    zoom = full[1] / work[1]
    streams = stream_rng(spec.seed, IMAGE_STREAM, task.index).spawn(5)
    anatomy_rng, lesion_rng, overlay_rng, noise_rng, benign_rng = streams

    anatomy = anatomy_of(anatomy_rng, task, work, spacing * full[1] / work[1])
    b = _upsample(anatomy.brightness, full)
    for patch in benign_patches(benign_rng, task, anatomy, full):  # part of the anatomy, not a lesion
        apply_lesion(b, patch)
    patches = lesion_patches(lesion_rng, task, anatomy, full, spec) if task.lesions else []
    if with_lesions:
        for patch in patches:
            apply_lesion(b, patch)

    mirror = task.laterality == "R"
    mask_work = anatomy.mask[:, ::-1] if mirror else anatomy.mask
    if mirror:
        b = np.ascontiguousarray(b[:, ::-1])
    mask_full = _upsample_mask(mask_work, full)
    strips = add_strips(overlay_rng, b, mask_full.any(axis=1), task.laterality, task.view)
    text, text_box = text_mask(task, full[0], full[1], mask_full, strips)
    add_marker(overlay_rng, b, mask_work, zoom, spacing, [*strips, text_box])

    values = to_stored(noise_rng, b, machine, spec.size_scale)
    values[text] = machine.max_value  # burned-in text is saturated
    pixels = np.clip(np.rint(values), 0, machine.max_value).astype(np.uint16)
    if machine.photometric == "MONOCHROME1":
        pixels = np.uint16(machine.max_value) - pixels
    pect = anatomy.pectoral[:, ::-1] if mirror else anatomy.pectoral
    return RenderedImage(
        pixels=pixels,
        windows=windows(anatomy, machine),
        boxes=[_box(p, full[1], mirror) for p in patches],
        breast_mask=mask_full,
        pectoral_mask=_upsample_mask(pect, full),
        spacing_mm=spacing,
    )


def _upsample(a: np.ndarray, full: tuple[int, int]) -> np.ndarray:
    if a.shape == full:
        return a.copy()
    return cv2.resize(a, (full[1], full[0]), interpolation=cv2.INTER_LINEAR)


def _upsample_mask(m: np.ndarray, full: tuple[int, int]) -> np.ndarray:
    if m.shape == full:
        return m.copy()
    return cv2.resize(m.astype(np.uint8), (full[1], full[0]), interpolation=cv2.INTER_NEAREST) > 0


def _box(patch: LesionPatch, width: int, mirror: bool) -> tuple[str, int, int, int, int]:
    ph, pw = patch.profile.shape
    x0, x1 = patch.x0, patch.x0 + pw
    if mirror:
        x0, x1 = width - x1, width - x0
    return patch.kind, x0, patch.y0, x1, patch.y0 + ph
