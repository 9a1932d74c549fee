"""The decode stage: one shard of the data set's DICOMs to working-size 16-bit images.

A shard holds every ``shards``-th row of train.csv (sorted by patient and image), so shards are balanced
and their number, not the number of images, sets the number of DAG jobs. Each DICOM is decoded once here
(a JPEG 2000 file with ``reduce`` off, twice: see the mask source below); every resolution and data set is
made from these images.

With ``reduce`` (decode.reduce, the default) JPEG 2000 files are decoded at the deepest wavelet level whose
long side is still >= 3/4 of the working size (decoder ``pillow-j2k``, mammoflow.j2k) and then resized to
it with the full-size resize's geometry; every other file, and any J2K file that path cannot read exactly,
is decoded in full. Either way a JPEG 2000 image gets a *mask source* made from that reduced decode, the
copy preprocessing finds the breast on (``mask_source``), so that the crop box does not depend on the path.

Before any decoder runs, the file's declared size is checked, and the decoders run in child processes
under a memory and a time limit (mammoflow.limits, decode.max_megapixels / max_memory_mb / timeout_s).

Shard layout (``results/decoded/shard{NNN}/``):
- ``pixels.u16``: the images, raw little-endian uint16, one after the other (bright = dense), each followed
  by its mask source when it has one;
- ``meta.parquet``: one row per decoded image: the train.csv columns, ``offset``/``height``/``width`` into
  pixels.u16, the header facts preprocessing needs (windows, VOI LUT function, VOI LUT and Modality LUT
  Sequence tables, bits, photometric, ...), ``lossy``, the original size (``rows``/``cols``), the JPEG 2000
  ``level`` decoded and the decoded size (``decoded_height``/``decoded_width``: rows/cols / 2**level),
  the decoder used and the seconds it took, and the mask source's ``mask_source_offset``/``_height``/
  ``_width`` (0 x 0: none) and ``mask_source_level``;
- ``errors.parquet``: image_id, patient_id, path, reason for each file that could not be decoded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pandas as pd

from mammoflow import j2k
from mammoflow.atomic import atomic_path, write_parquet
from mammoflow.decoded import DecodedImages, index_shards
from mammoflow.dicom import DecodedImage, DicomError, read_image, read_j2k_reduced
from mammoflow.errors import DataError
from mammoflow.isolated import ChildLimits, imap_with_fallback
from mammoflow.limits import DEFAULT_LIMITS, DecodeLimits, DecodeSettings
from mammoflow.preprocess import mask_grid
from mammoflow.progress import say
from mammoflow.samplesheet import SheetError, read_sheet

__all__ = ["DecodedImages", "decode_shard", "index_shards"]  # the stage's results, re-exported from decoded

ERROR_COLUMNS = ["image_id", "patient_id", "path", "reason"]


def load_train_table(data_dir: str | Path, sheet: str | Path | None = None) -> pd.DataFrame:
    """The checked sample sheet (``train.csv`` of an RSNA folder unless ``sheet`` names another one).

    Labels are checked when present and not required: decoding does not need them, prediction has none.
    """
    try:
        return read_sheet(sheet or Path(data_dir) / "train.csv", labels=None)
    except SheetError as exc:
        raise DataError(str(exc)) from None


def shard_rows(table: pd.DataFrame, shard: int, shards: int) -> pd.DataFrame:
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
    return table.iloc[shard::shards]


def image_path(data_dir: str | Path, patient_id, image_id, images: str = "train_images") -> Path:
    """RSNA layout: ``{images}/{patient_id}/{image_id}.dcm`` (``test_images`` beside test.csv)."""
    return Path(data_dir) / images / str(patient_id) / f"{image_id}.dcm"


def working_shape(rows: int, cols: int, working_size: int) -> tuple[int, int]:
    """Shape after scaling the long side down to ``working_size`` (never up), aspect kept."""
    scale = min(1.0, working_size / max(rows, cols))
    return max(1, round(rows * scale)), max(1, round(cols * scale))


REDUCED_DECODER = "pillow-j2k"


@dataclass(frozen=True)
class DecodeTask:
    path: str
    working_size: int
    decoders: tuple[str, ...]  # tried in order; a crash moves the file on to the next one
    limits: DecodeLimits = DEFAULT_LIMITS
    # Off when the file is given again after a crash: the crash may have been the mask source's decode,
    # and the reduced path's retry (after its reduced reader crashed) has none either.
    mask_source: bool = True


def child_limits(limits: DecodeLimits) -> ChildLimits:
    """The decoder processes' share of the limits: memory and time (the size is checked in the task)."""
    return ChildLimits(limits.max_memory_mb or None, limits.timeout_s or None)


def decoder_chain(decoders: tuple[str, ...], reduce: bool) -> tuple[str, ...]:
    """The configured decoders, led by the reduced JPEG 2000 reader when ``reduce`` is on."""
    return (REDUCED_DECODER, *decoders) if reduce else tuple(decoders)


class WorkingImage(NamedTuple):
    pixels: np.ndarray  # uint16 at the working size, bright = dense
    meta: dict  # the header facts preprocessing needs, decoder, level, seconds
    mask_source: np.ndarray | None  # the copy the breast is found on (``mask_source``), or None


def decode_to_working_size(task: DecodeTask) -> WorkingImage | str:
    """Worker body: decoded + resized image, its header facts and its mask source, or why it failed."""
    try:
        reduce_to = j2k.min_long_side(task.working_size)
        image = read_image(task.path, task.decoders, reduce_to, task.limits.max_pixels)
    except DicomError as exc:
        return str(exc)
    # Before the resize, which may clamp the reduced image in place (j2k.clamp_bright_ringing).
    source = mask_source(task, image, working_shape(image.header.rows, image.header.cols, task.working_size))
    started = time.perf_counter()
    pixels = _resize(image, task.working_size)
    meta = _meta_of(image, pixels, time.perf_counter() - started)
    meta["mask_source_level"] = source[1] if source else 0
    return WorkingImage(pixels, meta, source[0] if source else None)


def mask_source(task: DecodeTask, image: DecodedImage, shape: tuple[int, int]):
    """(copy, level): the low-resolution copy a JPEG 2000 image's breast is found on (``preprocess.mask_grid``
    of the working ``shape``), made from the reduced decode (decode.reduce's level); None for other files
    and where that level cannot be read exactly.

    The same copy whichever path decoded the image: the full and the reduced images differ a little, and
    on a sharp, noisy skin line a mask found on each moved the crop box by a whole mask pixel (4 working
    pixels) and the processed store by 1.6 grey levels. The reduced path has that decode already (a resize
    here); the full path makes it too, for JPEG 2000 files (about a fifth of a full decode's time).
    """
    grid, scale = mask_grid(shape)
    if image.header.transfer_syntax not in j2k.J2K_SYNTAXES or scale >= 1 or not task.mask_source:
        return None
    if image.decoder == REDUCED_DECODER:
        reduced = image
    elif REDUCED_DECODER in task.decoders:
        return None  # the reduced reader was tried on this file and declined it or failed
    else:
        try:
            reduced = read_j2k_reduced(
                task.path, j2k.min_long_side(task.working_size), task.limits.max_pixels
            )
        except DicomError:  # NotForThisDecoder too: as in the reduced path, no mask source
            return None
    copy = cv2.resize(reduced.pixels.astype(np.float32), grid[::-1], interpolation=cv2.INTER_AREA)
    return np.rint(copy).astype(np.uint16), reduced.level


def _resize(image: DecodedImage, working_size: int) -> np.ndarray:
    # The target comes from the header's full size, so a reduced and a full decode give the same shape.
    height, width = working_shape(image.header.rows, image.header.cols, working_size)
    if image.level:
        rows, cols = image.header.rows, image.header.cols
        resized = area_resize_cells(image.pixels, image.level, rows, cols, height, width)
        # On the working grid, where the full decode's maximum is taken (j2k.clamp_bright_ringing).
        return j2k.clamp_bright_ringing(resized)
    return area_resize(image.pixels, height, width)


def area_resize_cells(
    cells: np.ndarray, level: int, rows: int, cols: int, height: int, width: int
) -> np.ndarray:
    """``area_resize`` of a rows x cols image given as the means of its 2**level-pixel square cells.

    Reproduces the full-size resize's geometry exactly (with constant cells): area weights over whole
    cells are area weights over their pixels, but ``area_resize`` first reduces by the whole factor
    ``f`` and drops the ``rows % f`` last rows. Where ``f`` is a multiple of the cell, or the resize is a
    single area step down over whole cells, the cells are resized directly; otherwise (3328 x 2560 read at
    832 x 640: f = 3, and fewer cells than output pixels) they are first spread back over their pixels
    (nearest), about 35 ms; resizing the cells directly moved the stores by up to 1 grey level (measured).
    """
    k = 1 << level
    factor = min(rows // height, cols // width)
    exact = rows == height * factor and cols == width * factor
    if factor >= 2 and not exact and factor % k == 0:
        kept_rows, kept_cols = rows // factor, cols // factor
        cells = cells[: kept_rows * factor // k, : kept_cols * factor // k]
        if factor > k:
            cells = cv2.resize(cells, (kept_cols, kept_rows), interpolation=cv2.INTER_AREA)
        return cv2.resize(cells, (width, height), interpolation=cv2.INTER_AREA)
    downscale = cells.shape[0] >= height and cells.shape[1] >= width
    if (factor < 2 or exact) and rows % k == 0 and cols % k == 0 and downscale:
        return area_resize(cells, height, width)
    spread = cv2.resize(cells, (cells.shape[1] * k, cells.shape[0] * k), interpolation=cv2.INTER_NEAREST)
    return area_resize(spread[:rows, :cols], height, width)


def area_resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Downscale by pixel-area averaging, the right filter for strong reduction of 16-bit data.

    OpenCV's INTER_AREA has a fast path for integer factors only; for a ratio like 3.25 it is 2x slower
    than a whole-factor reduction followed by a small fractional one, which gives nearly the same image.
    The resize is the only per-image cost of the decode stage that rivals a fast decoder (RLE, raw).
    """
    if (height, width) == pixels.shape:
        return np.ascontiguousarray(pixels)
    factor = min(pixels.shape[0] // height, pixels.shape[1] // width)
    exact = pixels.shape[0] == height * factor and pixels.shape[1] == width * factor
    if factor >= 2 and not exact:
        rows, cols = pixels.shape[0] // factor, pixels.shape[1] // factor
        pixels = cv2.resize(
            pixels[: rows * factor, : cols * factor], (cols, rows), interpolation=cv2.INTER_AREA
        )
    return cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA)


def _meta_of(image: DecodedImage, pixels: np.ndarray, resize_seconds: float) -> dict:
    h = image.header
    return {
        "height": pixels.shape[0],
        "width": pixels.shape[1],
        "rows": h.rows,
        "cols": h.cols,
        "level": image.level,
        "decoded_height": image.pixels.shape[0],
        "decoded_width": image.pixels.shape[1],
        "bits_stored": h.bits_stored,
        "bits_allocated": h.bits_allocated,
        "lossy": h.lossy,
        "photometric": h.photometric,
        "inverted": image.inverted,
        "transfer_syntax": h.transfer_syntax,
        "window_centers": list(h.window_centers),
        "window_widths": list(h.window_widths),
        "voi_lut_function": h.voi_lut_function,
        "rescale_slope": h.rescale_slope,
        "rescale_intercept": h.rescale_intercept,
        "pixel_spacing_mm": h.pixel_spacing_mm,
        "voi_lut_descriptors": [list(d) for d in h.voi_lut_descriptors],
        "voi_luts": [list(t) for t in h.voi_luts],
        "modality_lut_descriptor": list(h.modality_lut_descriptor),
        "modality_lut": list(h.modality_lut),
        "decoder": image.decoder,
        "decode_seconds": image.seconds,
        "resize_seconds": resize_seconds,
    }


def decode_shard(
    data_dir: str | Path,
    out_dir: str | Path,
    shard: int,
    shards: int,
    settings: DecodeSettings | None = None,
    workers: int = 1,
    sheet: str | Path | None = None,
    images: str = "train_images",
) -> tuple[int, int]:
    """Decode one shard of the sheet (``data_dir/train.csv`` by default, images under ``data_dir/images``)
    as ``settings`` say (config.yaml's decode section by default); returns (images decoded, files that
    failed). Files over the settings' limits are failures with their reason."""
    settings = settings or DecodeSettings.configured()
    working_size, limits = settings.working_size, settings.limits
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = shard_rows(load_train_table(data_dir, sheet), shard, shards)
    tasks = [
        DecodeTask(
            str(image_path(data_dir, r.patient_id, r.image_id, images)),
            working_size,
            decoder_chain(settings.decoders, settings.reduce),
            limits,
        )
        for r in rows.itertuples()
    ]
    metas: dict[int, dict] = {}
    errors: dict[int, str] = {}
    offset = 0
    with atomic_path(out_dir / "pixels.u16") as tmp_pixels, open(tmp_pixels, "wb") as sink:
        # A crashed decoder process gets the file again with the next decoder in line.
        results = imap_with_fallback(
            decode_to_working_size,
            dict(enumerate(tasks)),
            workers,
            lambda task: task.decoders,
            lambda task, left: replace(task, decoders=left, mask_source=False),
            f"decode shard {shard}",
            child_limits(limits),
        )
        for i, result in results:
            if isinstance(result, str):
                errors[i] = result
                if settings.strict:
                    raise DataError(f"{tasks[i].path}: {result}")
                continue
            pixels, meta, source = result
            sink.write(pixels.astype("<u2", copy=False).tobytes())
            metas[i] = {**meta, "offset": offset}
            offset += pixels.size
            # The mask source follows its image in the same file (index: mask_source_offset/_height/_width).
            height, width = source.shape if source is not None else (0, 0)
            metas[i].update(mask_source_offset=offset, mask_source_height=height, mask_source_width=width)
            if source is not None:
                sink.write(source.astype("<u2", copy=False).tobytes())
                offset += source.size
    _write_meta(rows, tasks, metas, out_dir)
    _write_errors(rows, tasks, errors, out_dir)
    say(f"shard {shard}/{shards}: decoded {len(metas)} images, {len(errors)} could not be decoded")
    for i, reason in sorted(errors.items()):
        say(f"  cannot decode {tasks[i].path}: {reason}")
    return len(metas), len(errors)


def _write_meta(rows: pd.DataFrame, tasks: list[DecodeTask], metas: dict[int, dict], out_dir: Path) -> None:
    order = sorted(metas)
    table = rows.iloc[order].reset_index(drop=True)
    extra = pd.DataFrame([metas[i] for i in order]) if order else pd.DataFrame(columns=["offset"])
    frame = pd.concat([table, extra], axis=1)
    frame["path"] = [tasks[i].path for i in order]
    write_parquet(frame, out_dir / "meta.parquet")


def _write_errors(rows: pd.DataFrame, tasks: list[DecodeTask], errors: dict[int, str], out_dir: Path) -> None:
    order = sorted(errors)
    frame = pd.DataFrame(
        {
            "image_id": rows["image_id"].iloc[order].to_numpy(),
            "patient_id": rows["patient_id"].iloc[order].to_numpy(),
            "path": [tasks[i].path for i in order],
            "reason": [errors[i] for i in order],
        },
        columns=ERROR_COLUMNS,
    )
    write_parquet(frame, out_dir / "errors.parquet")
