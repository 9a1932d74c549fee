"""Mammogram-like test images with the edges real ones have: a sharp, noisy, irregular skin line, a
pectoral muscle, a burned-in label and a marker, at real detector sizes.

The phantom's and ``dicom_factory.mammo_textured``'s breasts have smooth outlines; a real breast's skin
line is a one-to-two pixel step whose outline wanders at every scale, and the labels the scanners burn in
are bright strokes a pixel or two wide. Where the crop threshold meets such edges a tiny change of the
image moves a whole mask pixel; these images are for the tests that must see that.
"""

from __future__ import annotations

import cv2
import numpy as np


def _fractal_noise(rows: int, cols: int, rng: np.random.Generator, beta: float = 3.0) -> np.ndarray:
    """Zero-mean, unit-variance noise with a 1/f**beta power spectrum (mammographic parenchyma: beta ~ 3)."""
    fy = np.fft.fftfreq(rows)[:, None]
    fx = np.fft.rfftfreq(cols)[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    radius[0, 0] = 1.0
    spectrum = (rng.normal(size=radius.shape) + 1j * rng.normal(size=radius.shape)) * radius ** (-beta / 2)
    spectrum[0, 0] = 0
    field = np.fft.irfft2(spectrum, s=(rows, cols)).astype(np.float32)
    return field / max(float(field.std()), 1e-6)


def _outline(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Per row: how far the breast reaches from the chest wall (x = 0), wandering at every scale."""
    y = (np.arange(rows) - rows * 0.47) / (rows * 0.44)
    reach = 0.78 * cols * np.sqrt(np.clip(1 - np.abs(y) ** 2.2, 0, 1))
    wander = np.zeros(rows)
    for period, amplitude in ((rows / 3, 0.03), (rows / 20, 0.008), (rows / 200, 0.002)):
        knots = rng.normal(0, amplitude * cols, int(rows / period) + 3)
        wander += np.interp(np.arange(rows) / period, np.arange(len(knots)), knots)
    # Pixel-scale jaggedness of the skin line, as a detector sees hair-thin skin folds.
    wander += rng.normal(0, 0.8, rows)
    return np.clip(reach + wander, 0, cols - 1)


def edge_mammo(rows: int, cols: int, bits: int = 12, seed: int = 0) -> np.ndarray:
    """Stored values of a mammogram-like image (bright = dense), breast at the left edge."""
    rng = np.random.default_rng(seed)
    top = (1 << bits) - 1
    xx = np.arange(cols, dtype=np.float32)[None, :]
    reach = _outline(rows, cols, rng).astype(np.float32)[:, None]
    inside = xx < reach
    # Tissue: thickness falls off towards the skin over the last few percent; parenchyma texture within.
    depth = np.clip((reach - xx) / (0.06 * cols), 0, 1)
    tissue = 0.30 + 0.25 * np.sqrt(depth) + 0.06 * _fractal_noise(rows, cols, rng) * depth
    image = np.where(inside, tissue, 0.035).astype(np.float32)
    # Pectoral muscle: a bright wedge in the upper chest-wall corner with a sharp edge.
    yy = np.arange(rows, dtype=np.float32)[:, None]
    image = np.where(xx < 0.35 * cols * (1 - yy / (0.45 * rows)), image + 0.15, image)
    # A burned-in label and a lead marker in the background, far from the breast.
    label = np.zeros((rows, cols), np.uint8)
    scale = rows / 900
    cv2.putText(label, "R MLO", (int(0.70 * cols), int(0.06 * rows)), cv2.FONT_HERSHEY_SIMPLEX, scale, 255,
                max(1, round(scale * 2)))  # fmt: skip
    cv2.circle(label, (int(0.9 * cols), int(0.9 * rows)), max(3, rows // 150), 255, -1)
    image = np.where(label > 0, 0.92, image)
    noise = rng.normal(0, 0.006, (rows, cols)).astype(np.float32)
    return np.clip((image + noise) * top, 0, top).astype(np.uint16)
