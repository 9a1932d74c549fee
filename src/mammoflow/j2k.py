"""Reduced-resolution JPEG 2000 decoding: decode only the wavelet levels the working-size image keeps.

A JPEG 2000 codestream holds the image as a wavelet pyramid: decoding can stop ``level`` steps before the
finest one and return the image at 1/2**level of its size (the low-pass band, a smooth average of the
full image) without decoding what a later resize would throw away. Mammograms are written with 5-6
decomposition levels, so a 4096-px image can be read at 2048, 1024, 512... px.

The rule (README "decode"): the deepest level whose long side is still at or above 3/4 of
``decode.working_size`` (``min_long_side``): at the paper's settings (working size 1024, stores 256 and
512) 768 px, 1.5 x the largest store; the image is then resized to the working size with the geometry of a
full decode's resize (``decode.area_resize_cells``), so a level may come out a little below the working
size (3328 x 2560 read at 832 x 640). The factor is measured, not derived: at 832 px (1.6 x 512) the
processed stores agree with the full decode's within 0.9 grey levels on every phantom image, at 574 px
(2294 x 1914 at quarter size, 1.1 x 512) they do not (up to 1.8). Keep the working size >= 2 x the largest
store (the default) for that safety factor to hold, or set decode.reduce: false.

The route is Pillow's JPEG 2000 plugin (OpenJPEG 2.5 in its wheel; ``Image.reduce`` before ``load``),
chosen by measurement (bench/decode.py): pylibjpeg-openjpeg and dicomsdl have no resolution factor.
Pillow returns 9-16 bit samples scaled up to 16 bits (``x << (16 - precision)``); the shift is undone
here, which is exact because the low bits it adds are zero.

The low-pass band is not the box average a full decode's area resize takes, in two ways (measured on
the phantom, README "Performance"). (1) Its samples sit at full-size pixel ``2**level * n``, the box
average's at ``2**level * n + (2**level - 1) / 2``: a shift of 1/4 (level 1) to 3/8 (level 2) of a reduced
pixel, which alone moved the processed stores by 1-4 grey levels. (2) The low-pass passes more of the
band near the reduced grid's Nyquist frequency. ``match_box_average`` corrects both with one separable
4-tap kernel on the reduced grid, designed here (``box_kernel``) as the least-squares fit of the box
average's frequency response, phase included, for the image statistics of mammograms: power falling as
1/f**3 in 2-D (1/f**2 along one axis; Burgess et al. 2001), for the analysis low-pass the codestream
uses (5/3 for reversible codes, 9/7 for irreversible ones, read from COD/COC).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from functools import lru_cache

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
    reversible: bool = True  # 5/3 reversible wavelet (lossless-capable), else 9/7 irreversible


def _codestream_start(data: bytes) -> int:
    """Offset of the SOC marker: 0 for a raw codestream, inside the jp2c box for a JP2 file."""
    if data[:2] == b"\xff\x4f":
        return 0
    if data[:12] == _JP2_SIGNATURE:
        found = data.find(b"jp2c")
        if found >= 0 and data[found + 4 : found + 6] == b"\xff\x4f":
            return found + 4
    raise CodestreamError("not a JPEG 2000 codestream (no SOC marker)")


@dataclass(frozen=True)
class DeclaredSize:
    """What a codestream's SIZ marker declares: a decoder allocates by this, not by the DICOM header."""

    width: int
    height: int
    components: int
    tiles: int


def read_siz(data: bytes) -> DeclaredSize:
    """The image and tile sizes of the SIZ marker segment, which ISO 15444-1 A.5.1 puts right after SOC;
    ``data`` need only hold the codestream's first bytes."""
    pos = _codestream_start(data) + 2
    if len(data) < pos + 4 + 38:
        raise CodestreamError("the codestream ends before its SIZ marker")
    marker = struct.unpack_from(">H", data, pos)[0]
    if marker != _SIZ:
        raise CodestreamError(f"no SIZ marker after SOC (0x{marker:04X} instead)")
    xsiz, ysiz, xo, yo, xt, yt, xto, yto = struct.unpack_from(">8I", data, pos + 6)
    components = struct.unpack_from(">H", data, pos + 38)[0]
    if xsiz <= xo or ysiz <= yo or not xt or not yt or xto > xo or yto > yo:
        raise CodestreamError(f"SIZ declares an empty image or tile ({xsiz} x {ysiz}, tiles {xt} x {yt})")
    tiles = -(-(xsiz - xto) // xt) * -(-(ysiz - yto) // yt)
    return DeclaredSize(xsiz - xo, ysiz - yo, components, tiles)


def read_main_header(data: bytes) -> Codestream:
    """Parse SIZ, COD and COC of the main header (up to the first tile part)."""
    pos = _codestream_start(data) + 2
    siz: tuple[int, int, int, int, bool] | None = None
    levels_cod = levels_coc = None
    reversible_cod = reversible_coc = None
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
            # Scod, progression, layers(2), MCT, then SPcod: levels, code-block w, h, style, transform.
            levels_cod, reversible_cod = body[5], body[9] == 1
        elif marker == _COC and siz is not None:
            wide = siz[2] >= 257  # Ccoc is 2 bytes with more than 256 components
            component = struct.unpack_from(">H", body, 0)[0] if wide else body[0]
            if component == 0:
                first = 3 if wide else 2  # SPcoc: levels, code-block w, h, style, transform
                levels_coc, reversible_coc = body[first], body[first + 4] == 1
        pos += 2 + length
    if siz is None or levels_cod is None:
        raise CodestreamError("codestream main header lacks SIZ or COD")
    width, height, components, precision, signed = siz
    levels = levels_coc if levels_coc is not None else levels_cod
    reversible = reversible_coc if reversible_coc is not None else reversible_cod
    return Codestream(width, height, components, precision, signed, levels, bool(reversible))


def reduced_size(length: int, level: int) -> int:
    """Samples along one axis at ``level`` (ISO 15444-1 B.5 for an image at offset 0: ceil)."""
    return -(-length // (1 << level))


def min_long_side(working_size: int) -> int:
    """The shortest long side a reduced image may have before it is resized to ``working_size``."""
    return -(-working_size * 3 // 4)


def choose_level(rows: int, cols: int, levels: int, long_side: int) -> int:
    """Deepest level (<= levels) whose long side stays >= long_side; 0 when none does."""
    level = 0
    while level < levels and max(reduced_size(rows, level + 1), reduced_size(cols, level + 1)) >= long_side:
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


# Analysis low-pass filters of ISO 15444-1 (Table F.4 and F.5), unit gain at zero frequency: tap j = tap -j.
LOWPASS_53 = (6 / 8, 2 / 8, -1 / 8)
LOWPASS_97 = (0.602949018236, 0.266864118443, -0.078223266529, -0.016864118443, 0.026748757411)
KERNEL_TAPS = (-1, 0, 1, 2)  # reduced-grid neighbours of each output sample: n-1 .. n+2
SPECTRUM_SLOPE = 2.0  # image power ~ 1/f**2 along one axis (1/f**3 in 2-D, mammographic texture)


@lru_cache(maxsize=16)
def box_kernel(level: int, reversible: bool = True) -> np.ndarray:
    """4-tap kernel F (taps n-1..n+2) making ``F * lowpass`` at ``level`` the 2**level box average.

    Least squares over the frequencies of the full-size grid of |F(2**level w) L(w) - B(w)|**2 / w**2,
    L the cascade of ``level`` analysis low-passes and B the box average over pixels 2**level n ..
    2**level (n + 1) - 1 (its phase carries the shift), with the taps summing to 1 (mean kept exactly).
    """
    lowpass = LOWPASS_53 if reversible else LOWPASS_97
    k = 1 << level
    w = np.linspace(np.pi / 4096, np.pi, 4096)
    cascade = np.ones_like(w)
    for stage in range(level):
        v = w * (1 << stage)
        cascade *= lowpass[0] + 2 * sum(c * np.cos(j * v) for j, c in enumerate(lowpass) if j)
    box = sum(np.exp(1j * w * p) for p in range(k)) / k
    weight = w ** (-SPECTRUM_SLOPE / 2)
    columns = np.array([np.exp(1j * w * k * t) * cascade * weight for t in KERNEL_TAPS]).T
    target = box * weight
    # The sum-to-one constraint by substitution: F_0 = 1 - sum(F_1..).
    a = np.vstack([(columns[:, 1:] - columns[:, :1]).real, (columns[:, 1:] - columns[:, :1]).imag])
    b = np.concatenate([(target - columns[:, 0]).real, (target - columns[:, 0]).imag])
    rest = np.linalg.lstsq(a, b, rcond=None)[0]
    # Rounded so that the kernel, and so every output byte, cannot depend on the BLAS build or threads.
    return np.round(np.concatenate([[1 - rest.sum()], rest]), 6).astype(np.float32)


def match_box_average(pixels: np.ndarray, level: int, top: int, reversible: bool = True) -> np.ndarray:
    """The level-``level`` low-pass image filtered to the box averages a full decode's area resize takes:
    sample n then stands for pixels 2**level n .. 2**level (n + 1) - 1 of the full-size image."""
    if level < 1:
        return pixels
    kernel = box_kernel(level, reversible)
    anchor = KERNEL_TAPS.index(0)
    values = pixels.astype(np.float32)
    border = cv2.BORDER_REPLICATE
    sharp = cv2.sepFilter2D(values, -1, kernel, kernel, anchor=(anchor, anchor), borderType=border)
    return np.clip(np.rint(sharp), 0, top).astype(pixels.dtype)


DARK_FLOOR_WINDOW = 9  # reduced pixels: wider than the low-pass's ringing, narrower than any background
DARK_FLOOR_SIGMAS = 4.0  # the floor lies this many background noise deviations below the darkest mean


def clamp_dark_ringing(pixels: np.ndarray) -> np.ndarray:
    """Lift the samples far below the darkest 9 x 9 local mean, in place (bright = dense).

    Beside a sharp bright object on the background (burned-in text, a marker, a border strip) the
    low-pass rings below the background, to 0 where OpenJPEG clips it; a box average never does. Those
    samples set the minimum the `original` data set scales by (9-11 grey levels of difference from the full
    decode's store on the phantom without this, 0.5-1.9 with it). The floor is the darkest 9 x 9 local mean
    less 4 noise deviations of the darkest tenth of the image (the median absolute difference to the 3 x 3
    mean, scaled to a standard deviation), so the background keeps its noise and only ringing below it is
    lifted; the breast, brighter than the background, is never touched.
    """
    floor = float(
        cv2.blur(pixels, (DARK_FLOOR_WINDOW, DARK_FLOOR_WINDOW), borderType=cv2.BORDER_REPLICATE).min()
    )
    local = cv2.blur(pixels, (3, 3), borderType=cv2.BORDER_REPLICATE)
    # The noise of the darkest tenth of the image (the background where there is one).
    sample, mean = pixels[::4, ::4].astype(np.int32), local[::4, ::4]
    dark = mean <= np.percentile(mean, 10)
    noise = 1.4826 * float(np.median(np.abs(sample[dark] - mean[dark])))
    floor = max(0, round(floor - DARK_FLOOR_SIGMAS * noise))
    return np.maximum(pixels, np.asarray(floor, pixels.dtype), out=pixels)


def clamp_bright_ringing(pixels: np.ndarray) -> np.ndarray:
    """Lower the samples above the brightest value a 2 x 2 block of samples reaches, in place.

    Beside a sharp bright stroke on a dark background (a burned-in label, a lead marker) the low-pass
    overshoots by up to a tenth of the step on the stroke's side, to the codestream's ceiling where OpenJPEG
    clips it; a box average does not. Those one-sample rims set the maximum the `original` data set scales
    by: with labels as scanners burn them in (tests/edge_mammo.py) its stores differed from the full
    decode's by 3.9-6.2 grey levels, 0.5-1.0 with this applied to the working-size image (the grid the full
    decode's maximum is taken on; ``decode._resize``). A plateau two samples wide keeps its value; only what
    stands above every such plateau is lowered to the brightest of them.
    """
    if min(pixels.shape) < 2:
        return pixels
    ceiling = cv2.erode(pixels, np.ones((2, 2), np.uint8), borderType=cv2.BORDER_REPLICATE).max()
    return np.minimum(pixels, ceiling, out=pixels)
