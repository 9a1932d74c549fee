"""Pixel encoding: brightness to detector values with noise, window tags, and the DICOM pixel module
and pixel data in each scanner's transfer syntax.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from mammoflow.phantom.anatomy import Anatomy
from mammoflow.phantom.scanners import Machine


def to_stored(rng: np.random.Generator, b: np.ndarray, machine: Machine, scale: float) -> np.ndarray:
    """Brightness -> detector values with signal-dependent plus electronic noise (float32)."""
    maxv = machine.max_value
    gain = np.float32(machine.gain * maxv)
    v = np.float32(machine.offset * maxv) + gain * b
    # Quantum noise variance grows with signal; bigger (downscaled) pixels collect more quanta.
    var = np.maximum(b, 0) * np.float32(1.2e-4) + np.float32(2e-3**2)
    sigma = np.sqrt(var) * np.float32(gain * min(1.0, scale))
    v += sigma * rng.standard_normal(b.shape, dtype=np.float32)
    return v


def windows(anatomy: Anatomy, machine: Machine) -> list[tuple[int, int]]:
    """Window (centre, width) pairs in stored units; the first brackets this image's breast tissue."""
    if machine.n_windows == 0:
        return []
    inside = anatomy.brightness[anatomy.mask]
    lo, hi = np.quantile(inside, [0.005, 0.998]) if inside.size else (0.1, 0.9)
    lo, hi = lo - 0.02, hi + 0.05
    maxv = machine.max_value
    to_value = lambda x: machine.offset * maxv + machine.gain * maxv * x  # noqa: E731
    centre, width = (to_value(lo) + to_value(hi)) / 2, to_value(hi) - to_value(lo)
    pairs = [(centre, width), (centre, 0.7 * width), (centre + 0.05 * width, 1.4 * width)]
    out = []
    for c, wd in pairs[: machine.n_windows]:
        stored_centre = maxv - c if machine.photometric == "MONOCHROME1" else c
        out.append((round(stored_centre), max(1, round(wd))))
    return out


def attach_pixels(ds: Dataset, m: Machine, pixels: np.ndarray) -> None:
    if m.encoder is None:
        ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
        ds["PixelData"].VR = "OW"
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        return
    # generate_instance_uid=False: pydicom would otherwise mint a random SOPInstanceUID.
    ds.compress(m.transfer_syntax, pixels, encoding_plugin=m.encoder, generate_instance_uid=False)
