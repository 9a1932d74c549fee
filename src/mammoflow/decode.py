"""The decode stage: one shard of the data set's DICOMs to working-size 16-bit images.

A shard holds every ``shards``-th row of train.csv (sorted by patient and image), so shards are balanced
and their number, not the number of images, sets the number of DAG jobs. Each DICOM is decoded exactly
once here; every resolution and data set is made from these images.

With ``reduce`` (decode.reduce, the default) JPEG 2000 files are decoded at the deepest wavelet level whose
long side is still >= 3/4 of the working size (decoder ``pillow-j2k``, mammoflow.j2k) and then resized to
it with the full-size resize's geometry; every other file, and any J2K file that path cannot read exactly,
is decoded in full.

Shard layout (``results/decoded/shard{NNN}/``):
- ``pixels.u16``: the images, raw little-endian uint16, one after the other (bright = dense);
- ``meta.parquet``: one row per decoded image: the train.csv columns, ``offset``/``height``/``width`` into
  pixels.u16, the header facts preprocessing needs (windows, VOI LUT function, VOI LUT and Modality LUT
  Sequence tables, bits, photometric, ...), ``lossy``, the original size (``rows``/``cols``), the JPEG 2000
  ``level`` decoded and the decoded size (``decoded_height``/``decoded_width``: rows/cols / 2**level),
  the decoder used and the seconds it took;
- ``errors.parquet``: image_id, patient_id, path, reason for each file that could not be decoded.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from mammoflow import j2k
from mammoflow.atomic import atomic_path, write_csv, write_parquet, write_text
from mammoflow.dicom import DecodedImage, DicomError, read_image
from mammoflow.errors import DataError
from mammoflow.isolated import ChildLimits, imap_with_fallback
from mammoflow.limits import DEFAULT_LIMITS, DecodeLimits
from mammoflow.progress import say
from mammoflow.samplesheet import SheetError, read_sheet

ERROR_COLUMNS = ["image_id", "patient_id", "path", "reason"]
# Above this share of undecodable files the index step fails the run (decode.max_failed_fraction).
MAX_FAILED_FRACTION = 0.01


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


def child_limits(limits: DecodeLimits) -> ChildLimits:
    """The decoder processes' share of the limits: memory and time (the size is checked in the task)."""
    return ChildLimits(limits.max_memory_mb or None, limits.timeout_s or None)


def decoder_chain(decoders: tuple[str, ...], reduce: bool) -> tuple[str, ...]:
    """The configured decoders, led by the reduced JPEG 2000 reader when ``reduce`` is on."""
    return (REDUCED_DECODER, *decoders) if reduce else tuple(decoders)


def decode_to_working_size(task: DecodeTask) -> tuple[np.ndarray, dict] | str:
    """Worker body: decoded + resized image and its header facts, or the reason it failed."""
    try:
        reduce_to = j2k.min_long_side(task.working_size)
        image = read_image(task.path, task.decoders, reduce_to, task.limits.max_pixels)
    except DicomError as exc:
        return str(exc)
    started = time.perf_counter()
    pixels = _resize(image, task.working_size)
    return pixels, _meta_of(image, pixels, time.perf_counter() - started)


def _resize(image: DecodedImage, working_size: int) -> np.ndarray:
    # The target comes from the header's full size, so a reduced and a full decode give the same shape.
    height, width = working_shape(image.header.rows, image.header.cols, working_size)
    if image.level:
        rows, cols = image.header.rows, image.header.cols
        return area_resize_cells(image.pixels, image.level, rows, cols, height, width)
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
    working_size: int = 1024,
    workers: int = 1,
    strict: bool = False,
    decoders: tuple[str, ...] = ("dicomsdl", "pydicom"),
    reduce: bool = True,
    sheet: str | Path | None = None,
    images: str = "train_images",
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> tuple[int, int]:
    """Decode one shard of the sheet (``data_dir/train.csv`` by default, images under ``data_dir/images``);
    returns (images decoded, files that failed). Files over ``limits`` are failures with their reason."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = shard_rows(load_train_table(data_dir, sheet), shard, shards)
    tasks = [
        DecodeTask(
            str(image_path(data_dir, r.patient_id, r.image_id, images)),
            working_size,
            decoder_chain(decoders, reduce),
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
            lambda task, left: replace(task, decoders=left),
            f"decode shard {shard}",
            child_limits(limits),
        )
        for i, result in results:
            if isinstance(result, str):
                errors[i] = result
                if strict:
                    raise DataError(f"{tasks[i].path}: {result}")
                continue
            pixels, meta = result
            sink.write(pixels.astype("<u2", copy=False).tobytes())
            metas[i] = {**meta, "offset": offset}
            offset += pixels.size
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


def index_shards(
    shard_dirs: list[str | Path],
    index_path: str | Path,
    errors_path: str | Path,
    max_failed_fraction: float = MAX_FAILED_FRACTION,
    failure_list: str | Path | None = None,
) -> pd.DataFrame:
    """Join the shards' meta and errors into one index (with a ``shard_dir`` column) and one error list.

    ``shard_dir`` is recorded relative to the index's own folder (``shard000`` beside ``index.parquet``), so
    a run that is copied, moved or run with ``--directory`` reads its own shards and never another run's.
    The error list and a summary (``summary.json`` beside the index) are written first; then, when more than
    ``max_failed_fraction`` of the files could not be decoded, the run fails naming the count and the list.
    Snakemake deletes a failed job's outputs, ``errors_path`` among them: the list the message names is
    ``failure_list`` (a CSV the rule declares as a log, which survives), and every failure is in the log too.
    """
    metas, errors = [], []
    index_dir = Path(index_path).parent
    for shard_dir in shard_dirs:
        meta = pd.read_parquet(Path(shard_dir) / "meta.parquet")
        meta["shard_dir"] = Path(os.path.relpath(Path(shard_dir).absolute(), index_dir.absolute())).as_posix()
        metas.append(meta)
        errors.append(pd.read_parquet(Path(shard_dir) / "errors.parquet"))
    index = pd.concat(metas, ignore_index=True).sort_values(["patient_id", "image_id"], kind="stable")
    index = index.reset_index(drop=True)
    all_errors = pd.concat(errors, ignore_index=True).sort_values("image_id").reset_index(drop=True)
    total = len(index) + len(all_errors)
    failing = index.empty or len(all_errors) > max_failed_fraction * total
    write_parquet(all_errors, errors_path)
    if failure_list is not None:
        write_csv(all_errors, failure_list)
    kept = failure_list if failing and failure_list is not None else errors_path
    summary = decode_summary(index, all_errors, kept)
    summary["line"] = summary_line(summary)
    write_text(json.dumps(summary, indent=2) + "\n", Path(index_path).with_name("summary.json"))
    say(summary["line"])
    for entry in all_errors.itertuples():
        say(f"  cannot decode {entry.path}: {entry.reason}")
    if index.empty:
        raise DataError(f"no image could be decoded ({summary['failed']} failed); the reasons: {kept}")
    if failing:
        raise DataError(
            f"{summary['failed']} of {total} files ({summary['failed'] / total:.1%}) could not be decoded, "
            f"more than decode.max_failed_fraction={max_failed_fraction:g}; the list: {kept}"
        )
    write_parquet(index, index_path)
    return index


def decode_summary(index: pd.DataFrame, errors: pd.DataFrame, errors_path: str | Path) -> dict:
    """What a run decoded, in numbers, for the console and the report."""
    lossy = int(index["lossy"].astype(bool).sum()) if "lossy" in index.columns else 0
    return {
        "decoded": len(index),
        "failed": len(errors),
        "lossy": lossy,
        "errors": str(errors_path),
    }


def summary_line(summary: dict) -> str:
    line = f"decode: {summary['decoded']} images decoded, {summary['failed']} could not be decoded"
    line += f", {summary['lossy']} lossy-compressed"
    return line + (f"; the list with reasons: {summary['errors']}" if summary["failed"] else "")


class DecodedImages:
    """Zero-copy access to the decoded images listed in an index (memory-mapped shards).

    The index's ``shard_dir`` values are relative to ``index_dir``, the folder that holds the index file.
    """

    def __init__(self, index: pd.DataFrame, index_dir: str | Path) -> None:
        self.index = index.reset_index(drop=True)
        self.index_dir = Path(index_dir)
        self._maps: dict[str, np.memmap] = {}
        absolute = sorted({d for d in self.index["shard_dir"].unique() if Path(d).is_absolute()})
        if absolute:
            # An index from before relocatable runs: it may point into another run's folder.
            raise DataError(
                f"{self.index_dir}: the decoded index names shard folders by absolute path ({absolute[0]}), "
                "which may be another run's; rebuild it: snakemake --forcerun decode_index"
            )

    @classmethod
    def open(cls, index_path: str | Path) -> DecodedImages:
        return cls(pd.read_parquet(index_path), Path(index_path).parent)

    def __len__(self) -> int:
        return len(self.index)

    def pixels(self, row: int) -> np.ndarray:
        entry = self.index.iloc[row]
        shard_dir = entry["shard_dir"]
        if shard_dir not in self._maps:
            shard_pixels = self.index_dir / shard_dir / "pixels.u16"
            self._maps[shard_dir] = np.memmap(shard_pixels, dtype="<u2", mode="r")
        start, height, width = int(entry["offset"]), int(entry["height"]), int(entry["width"])
        return self._maps[shard_dir][start : start + height * width].reshape(height, width)
