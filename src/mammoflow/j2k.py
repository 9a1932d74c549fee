"""Reduced-resolution JPEG 2000 decoding: decode only the wavelet levels the working-size image keeps.

A JPEG 2000 codestream holds the image as a wavelet pyramid: decoding can stop ``level`` steps before the
finest one and return the image at 1/2**level of its size (the low-pass band, a smooth average of the
full image) without decoding what a later resize would throw away. Mammograms are written with 5-6
decomposition levels, so a 4096-px image can be read at 2048, 1024, 512... px.

The rule (README "decode"): the deepest level whose long side is still at or above ``decode.working_size``;
the image is then resized to the working size exactly as a full decode would be.

The route is Pillow's JPEG 2000 plugin (OpenJPEG 2.5 in its wheel; ``Image.reduce`` before ``load``),
chosen by measurement (bench/decode.py): pylibjpeg-openjpeg and dicomsdl have no resolution factor.
Pillow returns 9-16 bit samples scaled up to 16 bits (``x << (16 - precision)``); the shift is undone
here, which is exact because the low bits it adds are zero.

The low-pass band is not the box average a full decode's area resize takes: the 5/3 analysis low-pass
keeps more of the band up to the new Nyquist frequency, so the reduced image is sharper and noisier.
``match_box_average`` filters it with the 3-tap kernel that brings its response to the box average's
(equal at zero and at the reduced grid's Nyquist frequency; computed for the 5/3 filter of lossless
codes, close for the 9/7 of lossy ones). What remains is how the two filters weigh each pixel's noise:
README "Performance" gives the measured difference of the two paths' stores.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass

import cv2
import numpy as np

# JPEG 2000 in DICOM (PS3.5 A.4.4, A.4.11): lossless, lossy-capable, and HTJ2K (OpenJPEG >= 2.5 decodes HT).
J2K_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
    }
)

_SOC, _SIZ, _COD, _COC, _SOT = 0xFF4F, 0xFF51, 0xFF52, 0xFF53, 0xFF90
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


class CodestreamError(Exception):
    """The codestream's main header cannot be read: use a full decode instead."""


@dataclass(frozen=True)
class Codestream:
    """Facts of a codestream's main header (ISO 15444-1 A.5.1 SIZ, A.6.1 COD/COC)."""

    width: int
    height: int
    components: int
    precision: int  # bits per sample of component 0
    signed: bool
    levels: int  # decomposition levels available for component 0 (COC overrides COD)


def _codestream_start(data: bytes) -> int:
    """Offset of the SOC marker: 0 for a raw codestream, inside the jp2c box for a JP2 file."""
    if data[:2] == b"\xff\x4f":
        return 0
    if data[:12] == _JP2_SIGNATURE:
        found = data.find(b"jp2c")
        if found >= 0 and data[found + 4 : found + 6] == b"\xff\x4f":
            return found + 4
    raise CodestreamError("not a JPEG 2000 codestream (no SOC marker)")


def read_main_header(data: bytes) -> Codestream:
    """Parse SIZ, COD and COC of the main header (up to the first tile part)."""
    pos = _codestream_start(data) + 2
    siz: tuple[int, int, int, int, bool] | None = None
    levels_cod = levels_coc = None
    while pos + 4 <= len(data):
        marker, length = struct.unpack_from(">HH", data, pos)
        if marker == _SOT:
            break
        body = data[pos + 4 : pos + 2 + length]
        if marker == _SIZ:
            _, xsiz, ysiz, xo, yo = struct.unpack_from(">HIIII", body, 0)
            components = struct.unpack_from(">H", body, 34)[0]
            ssiz = body[36]
            siz = (xsiz - xo, ysiz - yo, components, (ssiz & 0x7F) + 1, bool(ssiz & 0x80))
        elif marker == _COD:
            levels_cod = body[5]  # Scod, progression, layers(2), MCT, then SPcod's levels
        elif marker == _COC and siz is not None:
            wide = siz[2] >= 257  # Ccoc is 2 bytes with more than 256 components
            component = struct.unpack_from(">H", body, 0)[0] if wide else body[0]
            if component == 0:
                levels_coc = body[3 if wide else 2]
        pos += 2 + length
    if siz is None or levels_cod is None:
        raise CodestreamError("codestream main header lacks SIZ or COD")
    width, height, components, precision, signed = siz
    levels = levels_coc if levels_coc is not None else levels_cod
    return Codestream(width, height, components, precision, signed, levels)


def reduced_size(length: int, level: int) -> int:
    """Samples along one axis at ``level`` (ISO 15444-1 B.5 for an image at offset 0: ceil)."""
    return -(-length // (1 << level))


def choose_level(rows: int, cols: int, levels: int, working_size: int) -> int:
    """Deepest level (<= levels) whose long side stays >= working_size; 0 when none does."""
    level = 0
    while (
        level < levels and max(reduced_size(rows, level + 1), reduced_size(cols, level + 1)) >= working_size
    ):
        level += 1
    return level


def decode_reduced(data: bytes, level: int, precision: int) -> np.ndarray:
    """Decode a grey codestream at ``level`` with Pillow; stored values, uint8 or uint16."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.reduce = level  # Pillow's JPEG 2000 plugin: resolution factor passed to OpenJPEG
        image.load()
        if image.mode not in ("L", "I;16"):
            raise CodestreamError(f"Pillow decoded the codestream as mode {image.mode}, not grey")
        pixels = np.array(image)  # a copy: uint8 (mode L, precision <= 8) or uint16
    container = pixels.dtype.itemsize * 8
    if precision < container:
        pixels >>= container - precision
    return pixels


def _box_over_lowpass(w: float, level: int) -> float:
    """Response of a 2**level box average over that of ``level`` 5/3 low-pass stages, at frequency w."""
    ratio = 1.0
    for k in range(level):
        v = w * (1 << k)
        box = (1 + math.cos(v)) / 2
        lowpass = (6 + 4 * math.cos(v) - 2 * math.cos(2 * v)) / 8
        ratio *= box / lowpass
    return ratio


def match_box_average(pixels: np.ndarray, level: int, top: int) -> np.ndarray:
    """Filter a level-``level`` low-pass image to the response of the box average of a full decode."""
    if level < 1:
        return pixels
    # Kernel (a, 1 - 2a, a): response 1 at zero frequency, 1 - 4a at the reduced grid's Nyquist.
    a = (1 - _box_over_lowpass(math.pi / (1 << level), level)) / 4
    kernel = np.array([a, 1 - 2 * a, a], np.float32)
    smooth = cv2.sepFilter2D(pixels.astype(np.float32), -1, kernel, kernel, borderType=cv2.BORDER_REFLECT)
    return np.clip(np.rint(smooth), 0, top).astype(pixels.dtype)
