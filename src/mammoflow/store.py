"""Packed image stores: ``images.npy`` (N x res x res uint8, memory-mappable) + ``manifest.parquet``.

Training reads a store with ``np.load(..., mmap_mode="r")`` and indexes whole batches at once; no per-image
files exist anywhere after decoding. The manifest's ``row`` is the image's index in ``images.npy``. The
manifest also records a checksum of the pixels, which ``open_store`` verifies before any reader sees them
(store_integrity.py).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mammoflow.atomic import allocate_npy, atomic_path, write_text
from mammoflow.progress import progress, say
from mammoflow.store_integrity import open_verified, write_manifest

if TYPE_CHECKING:
    from mammoflow.preprocess import Prepared, ProcessOptions

# Building a store needs the decoder's index, preprocessing and OpenCV; reading one (every training cell,
# Grad-CAM, the GAN) needs none of them, so they are imported where a store is built: a second less per job.

DATASETS = ("original", "processed")
# train.csv columns carried into every manifest when the data set has them.
CARRIED = ["site_id", "machine_id", "age", "density", "prediction_id", "biopsy", "BIRADS", "implant"]
LESION_COLUMNS = ["lesion_x0", "lesion_y0", "lesion_x1", "lesion_y1"]
# Who an image of a store is and its label (also in a cell's predictions); `source` is real or synthetic.
IMAGE_COLUMNS = ["image_id", "patient_id", "laterality", "view", "cancer", "source"]


def open_store(store_dir: str | Path) -> tuple[np.ndarray, pd.DataFrame]:
    """Images (memory-mapped, read-only) and manifest, once both match the checksum the manifest records:
    a changed, truncated or relabelled store is refused by name (store_integrity.StoreError)."""
    return open_verified(store_dir)


# ---------------------------------------------------------------------------------------------- workers

_state: dict = {}


def _init_worker(index_path: str, images_path: str, dataset: str, res: int, options: dict) -> None:
    from mammoflow.decoded import DecodedImages
    from mammoflow.preprocess import ProcessOptions

    _state["decoded"] = DecodedImages.open(index_path)
    _state["out"] = np.load(images_path, mmap_mode="r+")
    _state["dataset"], _state["res"] = dataset, res
    _state["options"] = ProcessOptions.configured(**options)


def _prepare_rows(rows: list[int]) -> list[tuple[int, Prepared]]:
    from mammoflow.preprocess import Prepared, prepare_original, prepare_processed

    decoded, out = _state["decoded"], _state["out"]
    done = []
    for row in rows:
        pixels = decoded.pixels(row)
        if _state["dataset"] == "original":
            prepared = prepare_original(pixels, _state["res"])
        else:
            meta = decoded.index.iloc[row]
            source = decoded.mask_source(row)
            prepared = prepare_processed(pixels, meta, _state["res"], _state["options"], source)
        out[row] = prepared.image
        done.append((row, Prepared(np.empty(0, np.uint8), prepared.placement, prepared.crop)))
    out.flush()
    return done


# ---------------------------------------------------------------------------------------------- build


def build_store(
    index_path: str | Path,
    dataset: str,
    res: int,
    out_dir: str | Path,
    options: ProcessOptions | None = None,
    lesions_csv: str | Path | None = None,
    workers: int = 1,
) -> pd.DataFrame:
    """Write ``images.npy``, ``manifest.parquet``, ``contact_sheet.png`` and ``summary.json``."""
    from mammoflow.preprocess import ProcessOptions

    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, not {dataset!r}")
    options = options or ProcessOptions.configured()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    index = pd.read_parquet(index_path)
    started = time.perf_counter()
    placements: dict[int, Prepared] = {}
    with atomic_path(out_dir / "images.npy") as tmp:
        # Reserved on disk up front: a full disk fails here with one line, not as SIGBUS in a worker.
        images = allocate_npy(tmp, (len(index), res, res), np.uint8)
        del images  # workers write through their own maps
        chunks = [list(range(i, min(i + 32, len(index)))) for i in range(0, len(index), 32)]
        init_args = (str(index_path), str(tmp), dataset, res, asdict(options))
        if workers <= 1:
            _init_worker(*init_args)
            results = map(_prepare_rows, chunks)
            pool = None
        else:
            context = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
            pool = context.Pool(workers, initializer=_init_worker, initargs=init_args)
            results = pool.imap(_prepare_rows, chunks)
        try:
            for done in progress(results, f"{dataset} {res}px", total=len(chunks)):
                placements.update(done)
        finally:
            if pool is not None:
                pool.close()
                pool.join()
            _state.clear()
    seconds = time.perf_counter() - started
    manifest = _manifest(index, placements, dataset, res, lesions_csv)
    write_manifest(manifest, out_dir)  # with the checksum of images.npy (store_integrity.py)
    images = np.load(out_dir / "images.npy", mmap_mode="r")
    write_contact_sheet(images, manifest, out_dir / "contact_sheet.png", title=f"{dataset} {res}px")
    summary = {
        "dataset": dataset,
        "resolution": res,
        "images": len(manifest),
        "positives": int(manifest["cancer"].sum()),
        "patients": int(manifest["patient_id"].nunique()),
        "with_lesion_box": int(manifest["lesion_x0"].notna().sum()),
        "seconds": round(seconds, 3),
        "options": asdict(options) if dataset == "processed" else None,
    }
    write_text(json.dumps(summary, indent=2) + "\n", out_dir / "summary.json")
    say(f"{dataset} {res}px: {len(manifest)} images in {seconds:.1f} s -> {out_dir}")
    return manifest


def _manifest(
    index: pd.DataFrame, placements: dict[int, Prepared], dataset: str, res: int, lesions_csv
) -> pd.DataFrame:
    manifest = pd.DataFrame(
        {
            "row": np.arange(len(index)),
            "image_id": index["image_id"].to_numpy(),
            "patient_id": index["patient_id"].to_numpy(),
            "laterality": index["laterality"].astype(str).to_numpy(),
            "view": index["view"].astype(str).to_numpy(),
            "cancer": index["cancer"].astype(np.int8).to_numpy(),
            "source": "real",
        }
    )
    for column in CARRIED:
        if column in index.columns:
            manifest[column] = index[column].to_numpy()
    boxes = _lesion_boxes(index, placements, res, lesions_csv)
    for i, column in enumerate(LESION_COLUMNS):
        manifest[column] = [b[0][i] if b else np.nan for b in boxes]
    manifest["lesion_kind"] = [b[1] if b else None for b in boxes]
    if dataset == "processed":
        for name in ("x0", "y0", "x1", "y1"):
            manifest[f"crop_{name}"] = [getattr(placements[r].crop, name) for r in range(len(index))]
    return manifest


def _lesion_boxes(index: pd.DataFrame, placements: dict[int, Prepared], res: int, lesions_csv):
    """Per image: the union of its lesion boxes in store pixels, and the lesion kinds; None if none."""
    from mammoflow.preprocess import Box

    out: list = [None] * len(index)
    if lesions_csv is None or not Path(lesions_csv).is_file():
        return out
    lesions = pd.read_csv(lesions_csv)
    if lesions.empty:
        return out
    rows_of = {image_id: r for r, image_id in enumerate(index["image_id"].to_numpy())}
    for image_id, group in lesions.groupby("image_id"):
        row = rows_of.get(image_id)
        if row is None:  # an image that could not be decoded
            continue
        entry = index.iloc[row]
        to_working = (entry["width"] / entry["cols"], entry["height"] / entry["rows"])
        union = Box(group.x0.min(), group.y0.min(), group.x1.max(), group.y1.max())
        box = placements[row].placement.box(union.scaled(*to_working)).clipped(res, res)
        if box.x1 - box.x0 <= 0 or box.y1 - box.y0 <= 0:
            continue  # the lesion fell outside the crop: better no box than a wrong one
        kinds = "+".join(sorted(set(group["kind"].astype(str))))
        out[row] = ((box.x0, box.y0, box.x1, box.y1), kinds)
    return out


# ---------------------------------------------------------------------------------------------- picture


def write_contact_sheet(
    images: np.ndarray, manifest: pd.DataFrame, path: str | Path, title: str = "", per_class: int = 16
) -> None:
    """Up to ``per_class`` positives, then negatives, lesion boxes in red: for a person to look at."""
    import cv2

    positives = manifest.index[manifest["cancer"] == 1][:per_class]
    negatives = manifest.index[manifest["cancer"] == 0][:per_class]
    picks = list(positives) + list(negatives)
    res = images.shape[1]
    tile = int(min(max(res, 96), 192))
    columns = 8
    rows = max(1, -(-len(picks) // columns))
    header = 28
    sheet = np.full((header + rows * (tile + 16), columns * tile, 3), 24, np.uint8)
    cv2.putText(
        sheet,
        f"{title}  ({len(manifest)} images; first {len(positives)} positives, {len(negatives)} negatives)",
        (6, 19),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.5,
        (255, 255, 255),
        1,
    )
    scale = tile / res
    for k, i in enumerate(picks):
        r, c = divmod(k, columns)
        y, x = header + r * (tile + 16), c * tile
        gray = cv2.resize(
            np.asarray(images[manifest.at[i, "row"]]), (tile, tile), interpolation=cv2.INTER_AREA
        )
        sheet[y : y + tile, x : x + tile] = gray[..., None]
        entry = manifest.loc[i]
        if not np.isnan(entry["lesion_x0"]):
            p0 = (int(x + entry["lesion_x0"] * scale), int(y + entry["lesion_y0"] * scale))
            p1 = (int(x + entry["lesion_x1"] * scale), int(y + entry["lesion_y1"] * scale))
            cv2.rectangle(sheet, p0, p1, (0, 0, 255), 1)
        label = f"{entry['laterality']}{entry['view']} {'C' if entry['cancer'] else '-'} {entry['image_id']}"
        colour = (80, 80, 255) if entry["cancer"] else (200, 200, 200)
        cv2.putText(sheet, label, (x + 3, y + tile + 12), cv2.FONT_HERSHEY_PLAIN, 0.8, colour, 1)
    with atomic_path(path) as tmp:
        ok, encoded = cv2.imencode(".png", sheet)
        if not ok:
            raise RuntimeError(f"{path}: PNG encoding failed")
        tmp.write_bytes(encoded.tobytes())
