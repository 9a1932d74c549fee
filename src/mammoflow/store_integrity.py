"""Stores that prove their content: the manifest records a checksum of the pixels, and every reader checks it.

A store (``images.npy`` + ``manifest.parquet``) is read by every training cell, GAN stage, FID job and
Grad-CAM job, often long after it was built and on other storage. A changed byte (an inverted image written
back, a partial copy, bit rot) would otherwise train silently. So the manifest's Parquet metadata (key
``mammoflow.store``) records, when the store is written:

- the shape and dtype of ``images.npy``;
- a SHA-256 of every block of ``chunk_rows`` consecutive images (about 64 MiB each), and one digest of those
  digests (``pixels``: the store's identity in one string);
- a SHA-256 of the manifest's identity columns (row, ids, side, view, label, source, fold, lesion boxes),
  so that a relabelled manifest is caught as well as changed pixels.

``open_verified`` checks all of it before a reader sees a pixel: the file's size against its header (a
truncated file is named as truncated, not as numpy's "mmap length is greater than file size"), the shape,
the manifest, then every block, hashed in parallel threads (hashlib releases the GIL; the blocks are read
through the memory map the reader then uses, so nothing is copied and the page cache is warm afterwards).

Why all of it, every time: SHA-256 ran at 0.9-1.2 GiB/s on one core of this project's 2-core machine (SHA-NI;
1.6-1.9 GiB/s on both), and open_store verified a 1 GiB store through its memory map in 1.2-1.8 s (0.6-0.8
GiB/s) with the machine shared by other work (bench/store_checksum.py). The paper's largest store (54,706 x
512 x 512 bytes, 13.4 GiB) therefore takes 15-23 s here, and the pool of up to 8 threads divides that where
the cores and the disk allow (not measured: no GPU machine was at hand). The cheapest cell that reads such a
store, resnet18 at 512 px, is estimated at about 5 GPU-minutes (docs/cluster.md), and every epoch reads the
whole store anyway: at most a few per cent, once per job. Verifying lazily, batch by batch, would save
nothing (batches are drawn from the whole store, so the first few touch nearly every block) and would catch
a damaged block only after training had begun on the others.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from mammoflow.atomic import atomic_path
from mammoflow.errors import DataError
from mammoflow.progress import say

METADATA_KEY = b"mammoflow.store"
RECORD_VERSION = 1
CHUNK_BYTES = 64 << 20
# The manifest columns that decide what a reader does with a row; strings, integers and floats each hashed
# in one canonical form, so the digest does not depend on how pandas happens to type a column.
INTEGER_COLUMNS = ("row", "image_id", "patient_id", "cancer", "fold")
TEXT_COLUMNS = ("laterality", "view", "source")
FLOAT_COLUMNS = ("lesion_x0", "lesion_y0", "lesion_x1", "lesion_y1")


class StoreError(DataError, ValueError):
    """A store whose content is not what it was built as (or cannot be shown to be); names the store."""

    def __init__(self, store_dir: str | Path, problem: str) -> None:
        self.store_dir, self.problem = str(store_dir), problem
        super().__init__(f"store {store_dir}: {problem}. {rebuild_hint(store_dir)}")


def rebuild_hint(store_dir: str | Path) -> str:
    """How to rebuild a store: Snakemake re-runs the job that writes it (and what reads it) when forced."""
    images = Path(store_dir) / "images.npy"
    return (
        f"Rebuild it with your run's command plus `--forcerun {images}` "
        f"(e.g. `snakemake --cores all --forcerun {images}`), or delete {store_dir} and run again"
    )


# ---------------------------------------------------------------------------------------------- layout


def npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset of a .npy file, from its header alone (no mapping, no reading)."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        offset = handle.tell()
    if fortran:
        raise ValueError("the array is stored in Fortran order (a store is C order)")
    return tuple(int(s) for s in shape), np.dtype(dtype), offset


def _checked_layout(store_dir: Path) -> tuple[tuple[int, ...], np.dtype]:
    path = store_dir / "images.npy"
    if not path.is_file():
        raise StoreError(store_dir, "images.npy not found")
    try:
        shape, dtype, offset = npy_layout(path)
    except (ValueError, OSError, EOFError) as exc:
        raise StoreError(store_dir, f"images.npy is not a readable .npy file ({exc})") from exc
    needed = offset + math.prod(shape) * dtype.itemsize
    size = path.stat().st_size
    if size < needed:
        raise StoreError(
            store_dir, f"images.npy is truncated: {size:,} bytes, its header ({shape}) needs {needed:,}"
        )
    if size > needed:
        raise StoreError(store_dir, f"images.npy has {size - needed:,} bytes more than its header {shape}")
    return shape, dtype


# ---------------------------------------------------------------------------------------------- digests


def chunk_rows(shape: tuple[int, ...], itemsize: int = 1) -> int:
    row_bytes = max(1, math.prod(shape[1:]) * itemsize)
    return max(1, CHUNK_BYTES // row_bytes)


def _threads() -> int:
    try:
        available = len(os.sched_getaffinity(0))  # what the job was given (SLURM, taskset), not the machine
    except AttributeError:
        available = os.cpu_count() or 1
    return max(1, min(8, available))


def pixel_digests(images: np.ndarray, rows: int) -> list[str]:
    """SHA-256 of each block of ``rows`` images, the blocks hashed in parallel threads."""
    starts = range(0, len(images), rows)
    with ThreadPoolExecutor(_threads()) as pool:
        return list(pool.map(lambda s: hashlib.sha256(images[s : s + rows]).hexdigest(), starts))


def manifest_digest(manifest: pd.DataFrame) -> str:
    """SHA-256 of the manifest's identity columns in one canonical form."""
    digest = hashlib.sha256()
    for column in (*INTEGER_COLUMNS, *TEXT_COLUMNS, *FLOAT_COLUMNS):
        if column not in manifest.columns:
            continue
        values = manifest[column]
        digest.update(f"\x1e{column}\x1f".encode())
        if column in TEXT_COLUMNS:
            digest.update("\x1f".join(map(str, values)).encode())
        elif column in INTEGER_COLUMNS:
            digest.update(np.asarray(values, dtype="<i8").tobytes())
        else:
            numbers = np.asarray(values, dtype="<f8")
            digest.update(np.where(np.isnan(numbers), np.nan, numbers).tobytes())  # one NaN bit pattern
    return digest.hexdigest()


def _summary_digest(chunks: list[str]) -> str:
    return hashlib.sha256("".join(chunks).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------- write


def store_record(store_dir: str | Path, manifest: pd.DataFrame) -> dict:
    """The checksum record of a store's images.npy (as written) and manifest."""
    store_dir = Path(store_dir)
    shape, dtype = _checked_layout(store_dir)
    images = np.load(store_dir / "images.npy", mmap_mode="r")
    rows = chunk_rows(shape, dtype.itemsize)
    chunks = pixel_digests(images, rows)
    return {
        "version": RECORD_VERSION,
        "algorithm": "sha256",
        "shape": list(shape),
        "dtype": dtype.str,
        "chunk_rows": rows,
        "chunks": chunks,
        "pixels": _summary_digest(chunks),
        "manifest": manifest_digest(manifest),
    }


def write_manifest(manifest: pd.DataFrame, store_dir: str | Path) -> dict:
    """Write ``manifest.parquet`` with the checksum of the ``images.npy`` already beside it; the record."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    record = store_record(store_dir, manifest)
    table = pa.Table.from_pandas(manifest, preserve_index=False)
    metadata = {**(table.schema.metadata or {}), METADATA_KEY: json.dumps(record).encode()}
    with atomic_path(Path(store_dir) / "manifest.parquet") as tmp:
        pq.write_table(table.replace_schema_metadata(metadata), tmp)
    return record


# ---------------------------------------------------------------------------------------------- read


def read_record(store_dir: str | Path) -> dict:
    """The checksum record in a store's manifest; StoreError when there is none."""
    import pyarrow.parquet as pq

    store_dir = Path(store_dir)
    path = store_dir / "manifest.parquet"
    if not path.is_file():
        raise StoreError(store_dir, "manifest.parquet not found")
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise StoreError(store_dir, f"manifest.parquet cannot be read ({exc})") from exc
    if METADATA_KEY not in metadata:
        raise StoreError(
            store_dir,
            "its manifest records no checksum of the pixels (written by hand, by another program, or by a "
            "mammoflow from before stores carried one), so its content cannot be shown to be what was built",
        )
    record = json.loads(metadata[METADATA_KEY])
    if record.get("version") != RECORD_VERSION or record.get("algorithm") != "sha256":
        raise StoreError(store_dir, f"unknown checksum record {record.get('version')!r}")
    return record


def _changed_rows(bad: list[int], rows: int, n: int) -> str:
    spans = [f"{k * rows}-{min(n, (k + 1) * rows) - 1}" for k in bad[:5]]
    more = f", ... ({len(bad)} blocks in all)" if len(bad) > 5 else ""
    return ", ".join(spans) + more


def open_verified(store_dir: str | Path) -> tuple[np.ndarray, pd.DataFrame]:
    """The store's images (memory-mapped, read-only) and manifest, after checking both against the record."""
    store_dir = Path(store_dir)
    started = time.perf_counter()
    record = read_record(store_dir)
    shape, dtype = _checked_layout(store_dir)
    if list(shape) != record["shape"] or dtype.str != record["dtype"]:
        raise StoreError(
            store_dir,
            f"images.npy is {dtype.str} {list(shape)}, the manifest's record says {record['dtype']} "
            f"{record['shape']}: the two files are not from one build",
        )
    manifest = pd.read_parquet(store_dir / "manifest.parquet")
    if len(manifest) != shape[0]:
        raise StoreError(store_dir, f"manifest has {len(manifest)} rows but images.npy {shape[0]}")
    if manifest_digest(manifest) != record["manifest"]:
        raise StoreError(
            store_dir, "manifest.parquet was changed after the store was built (ids, labels or boxes)"
        )
    images = np.load(store_dir / "images.npy", mmap_mode="r")
    rows = int(record["chunk_rows"])
    found = pixel_digests(images, rows)
    bad = [k for k, (a, b) in enumerate(zip(found, record["chunks"], strict=False)) if a != b]
    if bad or len(found) != len(record["chunks"]):
        raise StoreError(
            store_dir,
            f"images.npy differs from the checksum its manifest records, in rows "
            f"{_changed_rows(bad, rows, shape[0])} of {shape[0]}: the pixels were changed or damaged after "
            "the store was built",
        )
    seconds = time.perf_counter() - started
    size = images.nbytes / 2**30
    say(f"store {store_dir}: {size:.2f} GiB verified (SHA-256, {len(found)} blocks) in {seconds:.1f} s")
    return images, manifest
