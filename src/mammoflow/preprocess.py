"""Per-image preprocessing for the `original` and `processed` data sets.

`original`: the decoded image min-max scaled to 0..255 and resized to res x res (what converting the DICOM
to PNG and scaling it gives, the paper's first data set).

`processed`: the paper's second data set: breast-region crop, windowing from the header's VOI LUT,
normalization, resize. The crop finds the breast as the largest bright component of a low-resolution copy;
a morphological opening first cuts thin things (border strips, burned-in text, markers) from it, and the
mask is then grown back within the opening's reach so that the thin skin edge of the breast is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from mammoflow.sections import FromSection

MASK_LONG_SIDE = 256  # the crop is found on a copy this size: fast and plenty for a bounding box


@dataclass(frozen=True)
class ProcessOptions(FromSection):
    """config.yaml's preprocess section, checked once (mammoflow.sections)."""

    SECTION = "preprocess"

    window_index: int  # which header window to use when there are several
    fallback_percentiles: tuple[float, float]  # window from the breast's histogram if none
    normalize_percentiles: tuple[float, float] | None  # None: no normalization
    mask_background: bool  # zero everything outside the breast mask inside the crop
    crop_margin: float  # fraction of the image side added around the breast box
    opening: float  # opening kernel as a fraction of the mask's long side
    resize: str  # stretch | pad (letterbox keeping the aspect, breast at the chest wall)

    @classmethod
    def _converted(cls, values: dict) -> dict:
        for key in ("fallback_percentiles", "normalize_percentiles"):
            if values[key] is not None:
                values[key] = tuple(values[key])
        return values


@dataclass(frozen=True)
class Box:
    """Half-open pixel box: columns x0..x1, rows y0..y1."""

    x0: float
    y0: float
    x1: float
    y1: float

    def scaled(self, sx: float, sy: float) -> Box:
        return Box(self.x0 * sx, self.y0 * sy, self.x1 * sx, self.y1 * sy)

    def shifted(self, dx: float, dy: float) -> Box:
        return Box(self.x0 + dx, self.y0 + dy, self.x1 + dx, self.y1 + dy)

    def clipped(self, width: float, height: float) -> Box:
        return Box(
            min(max(self.x0, 0), width),
            min(max(self.y0, 0), height),
            min(max(self.x1, 0), width),
            min(max(self.y1, 0), height),
        )


# ---------------------------------------------------------------------------------------------- breast


def mask_grid(shape: tuple[int, int]) -> tuple[tuple[int, int], float]:
    """(rows, columns) of the low-resolution copy the breast is found on, and its scale to the image."""
    scale = min(1.0, MASK_LONG_SIDE / max(shape))
    return (max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))), scale


def breast_mask(
    pixels: np.ndarray, opening: float, source: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Low-resolution boolean mask of the breast and the factor from mask to image coordinates.

    ``source``: the low-resolution copy to find it on (``mask_grid``'s shape), when the decode stage made
    one (``decode.mask_source``); otherwise the image is resized to it here.
    """
    grid, scale = mask_grid(pixels.shape)
    if source is not None and source.shape == grid:
        small = source.astype(np.float32)
    else:
        small = cv2.resize(pixels, grid[::-1], interpolation=cv2.INTER_AREA).astype(np.float32)
    lo, hi = percentiles(small, [1, 99])
    if hi <= lo:
        return np.ones(small.shape, bool), 1 / scale
    u8 = np.clip((small - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    u8 = cv2.GaussianBlur(u8, (5, 5), 0)
    otsu, first = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # Otsu splits air from tissue, but the thin, less compressed edge of the breast is dimmer than the
    # tissue mean: lower the threshold towards the background so the crop keeps the skin line.
    background = u8[first == 0]
    tissue = u8[first > 0]
    if background.size and tissue.size:
        bg = float(np.median(background))
        spread = float(np.median(np.abs(background - bg))) + 1.0
        threshold = max(bg + 0.2 * (float(np.median(tissue)) - bg), bg + 4 * spread)
        threshold = min(threshold, otsu)
    else:
        threshold = otsu
    mask = (u8 > threshold).astype(np.uint8)
    k = max(3, round(opening * max(mask.shape)) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    opened = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    main = _largest_component(opened if opened.any() else mask)
    # Grow back within the opening's reach: restores the breast's thin parts, not far-off labels.
    grown = cv2.dilate(main, kernel) & mask
    return grown.astype(bool), 1 / scale


def _largest_component(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return mask
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return (labels == largest).astype(np.uint8)


def crop_box(mask: np.ndarray, to_image: float, shape: tuple[int, int], margin: float) -> Box:
    height, width = shape
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return Box(0, 0, width, height)
    pad = margin * max(shape)
    box = Box(
        math.floor(xs.min() * to_image - pad),
        math.floor(ys.min() * to_image - pad),
        math.ceil((xs.max() + 1) * to_image + pad),
        math.ceil((ys.max() + 1) * to_image + pad),
    ).clipped(width, height)
    return Box(int(box.x0), int(box.y0), int(box.x1), int(box.y1))


# ---------------------------------------------------------------------------------------------- window


def percentiles(values: np.ndarray, q, max_samples: int = 1 << 16) -> np.ndarray:
    """Percentiles from an even subsample: a full sort of a megapixel costs 12 ms, 65k samples 2 ms,
    and the 0.5th/99.5th percentiles of a breast move by well under a grey level."""
    flat = values.ravel()
    step = max(1, flat.size // max_samples)
    return np.percentile(flat[::step], q)


def voi_window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 VOI LUT functions, output scaled to 0..1 (float32)."""
    x = values.astype(np.float32, copy=False)
    function = function.upper()
    if function == "SIGMOID":
        return (1.0 / (1.0 + np.exp(-4.0 * (x - center) / max(width, 1e-6)))).astype(np.float32)
    if function == "LINEAR_EXACT":
        return np.clip((x - center) / max(width, 1e-6) + 0.5, 0, 1).astype(np.float32)
    # LINEAR (and anything unknown, which the standard says to treat as LINEAR): width must be >= 1.
    width = max(width, 1.0)
    if width == 1.0:
        return (x > center - 0.5).astype(np.float32)
    return np.clip((x - (center - 0.5)) / (width - 1.0) + 0.5, 0, 1).astype(np.float32)


def apply_table(values: np.ndarray, descriptor, table) -> np.ndarray:
    """A table LUT (PS3.3 C.11.1 Modality LUT, C.11.2 VOI LUT) applied as pydicom applies it.

    ``descriptor`` is the LUT Descriptor [entries (0 = 65536), first value mapped, bits per entry]: values
    below the first mapped one take entry 0, values past the table its last entry, fractions truncate.
    """
    entries, first = int(descriptor[0]) or 1 << 16, int(descriptor[1])
    index = np.clip(values.astype(np.float64) - first, 0, entries - 1).astype(np.int64)
    return np.asarray(table, np.float32)[index]


def _listed(meta, key: str) -> list:
    """A list-valued meta field (parquet gives arrays); empty when absent, e.g. in an older index."""
    value = meta.get(key) if hasattr(meta, "get") else None
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    return list(value)


def window_image(pixels: np.ndarray, meta, mask: np.ndarray | None, options: ProcessOptions) -> np.ndarray:
    """Apply the header's VOI transform to decoded (bright = dense) pixels; returns 0..1, bright = dense.

    PS3.3 C.11: the Modality LUT (a Modality LUT Sequence table, else RescaleSlope/Intercept), then the VOI
    LUT: a VOI LUT Sequence table when there is one (preferred over a window, as pydicom's apply_voi_lut
    does), else the window (WindowCenter/Width with VOILUTFunction), else a linear window over the breast's
    own range. Both are defined on the stored values of the file, so a MONOCHROME1 image (inverted at
    decode) is un-inverted, transformed and inverted again: exact for tables, LINEAR and SIGMOID alike.
    """
    x = pixels.astype(np.float32)
    centers, widths = list(meta["window_centers"]), list(meta["window_widths"])
    voi_luts, modality_lut = _listed(meta, "voi_luts"), _listed(meta, "modality_lut")
    if voi_luts or (len(centers) and len(widths)):
        if meta["inverted"]:
            x = float((1 << int(meta["bits_stored"])) - 1) - x
        if modality_lut:
            x = apply_table(x, _listed(meta, "modality_lut_descriptor"), modality_lut)
        else:
            x = x * float(meta["rescale_slope"]) + float(meta["rescale_intercept"])
        if voi_luts:
            i = min(options.window_index, len(voi_luts) - 1)
            descriptor = _listed(meta, "voi_lut_descriptors")[i]
            y = apply_table(x, descriptor, voi_luts[i]) * np.float32(1.0 / ((1 << int(descriptor[2])) - 1))
        else:
            i = min(options.window_index, len(centers) - 1)
            y = voi_window(x, float(centers[i]), float(widths[i]), str(meta["voi_lut_function"]))
        return 1.0 - y if meta["inverted"] else y
    # No window in the header: a linear window over the breast's own range.
    lo, hi = percentiles(_region(x, mask), options.fallback_percentiles)
    return _stretch(x, lo, hi)


def normalize(y: np.ndarray, mask: np.ndarray | None, q: tuple[float, float] | None) -> np.ndarray:
    if q is None:
        return y
    lo, hi = percentiles(_region(y, mask), q)
    if hi - lo < 1e-6:
        return y
    return _stretch(y, lo, hi)


def _region(values: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The masked pixels of a 1-in-4 x 1-in-4 grid: a 16x cheaper sample for percentiles."""
    if mask is None or not mask.any():
        return values[::4, ::4]
    sample = values[::4, ::4][mask[::4, ::4]]
    return sample if sample.size else values[mask]


def _stretch(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(values - lo) / (hi - lo) clipped to 0..1, in place on a float32 copy."""
    out = values.astype(np.float32, copy=True)
    out -= lo
    out *= 1.0 / max(hi - lo, 1e-6)
    return np.clip(out, 0, 1, out=out)


# ---------------------------------------------------------------------------------------------- resize


@dataclass(frozen=True)
class Placement:
    """Where a (cropped) image of shape src lands in the res x res output: out = in * scale + offset."""

    sx: float
    sy: float
    dx: float
    dy: float

    def box(self, box: Box) -> Box:
        return box.scaled(self.sx, self.sy).shifted(self.dx, self.dy)


def place(image: np.ndarray, res: int, mode: str, chest_wall_right: bool) -> tuple[np.ndarray, Placement]:
    height, width = image.shape
    if mode == "stretch":
        out = cv2.resize(image, (res, res), interpolation=cv2.INTER_AREA)
        return out, Placement(res / width, res / height, 0.0, 0.0)
    scale = res / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    small = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    out = np.zeros((res, res), image.dtype)
    dy = (res - new_h) // 2
    dx = res - new_w if chest_wall_right else 0  # keep the chest wall at the image edge
    out[dy : dy + new_h, dx : dx + new_w] = small
    return out, Placement(new_w / width, new_h / height, float(dx), float(dy))


def to_uint8(y: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- datasets


@dataclass
class Prepared:
    image: np.ndarray  # res x res uint8
    placement: Placement  # decoded (working-size) pixel coordinates -> output
    crop: Box  # in working-size coordinates


def prepare_original(pixels: np.ndarray, res: int) -> Prepared:
    # Resize first, then scale to the image's own range: the same picture, on res x res floats only.
    lo, hi = float(pixels.min()), float(pixels.max())
    out, placement = place(pixels, res, "stretch", chest_wall_right=False)
    y = (out.astype(np.float32) - lo) / (hi - lo) if hi > lo else np.zeros(out.shape, np.float32)
    return Prepared(to_uint8(y), placement, Box(0, 0, pixels.shape[1], pixels.shape[0]))


def prepare_processed(
    pixels: np.ndarray, meta, res: int, options: ProcessOptions, mask_source: np.ndarray | None = None
) -> Prepared:
    """The `processed` image; the breast is found on ``mask_source`` when given (``breast_mask``)."""
    small_mask, to_image = breast_mask(pixels, options.opening, mask_source)
    box = crop_box(small_mask, to_image, pixels.shape, options.crop_margin)
    x0, y0, x1, y1 = int(box.x0), int(box.y0), int(box.x1), int(box.y1)
    crop = pixels[y0:y1, x0:x1]
    # The mask at crop resolution: nearest-neighbour upsampling, dilated a little so the skin line stays.
    mask_full = cv2.resize(small_mask.astype(np.uint8), (pixels.shape[1], pixels.shape[0]),
                           interpolation=cv2.INTER_NEAREST)[y0:y1, x0:x1]  # fmt: skip
    mask_full = cv2.dilate(mask_full, np.ones((3, 3), np.uint8), iterations=max(1, round(to_image))) > 0
    # Window at working size, then resize: the VOI LUT is steep (SIGMOID, narrow windows), and averaging
    # the detector noise away before it would change the contrast by up to 10 grey levels (measured).
    y = window_image(crop, meta, mask_full, options)
    y = normalize(y, mask_full, options.normalize_percentiles)
    if options.mask_background:
        y *= mask_full
    chest_wall_right = str(meta.get("laterality", "L")).upper().startswith("R")
    out, placement = place(y, res, options.resize, chest_wall_right)
    return Prepared(to_uint8(out), Placement(placement.sx, placement.sy,
                                             placement.dx - x0 * placement.sx,
                                             placement.dy - y0 * placement.sy), box)  # fmt: skip
