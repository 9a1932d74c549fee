"""What verifying a store costs: SHA-256 throughput, and open_store on a store of a given size.

    python bench/store_checksum.py --gib 1 [--dir /scratch]

Writes a random store of ``--gib`` GiB (512 x 512 images) under ``--dir``, records its checksum
(store_integrity.write_manifest) and opens it with verification, twice: the first open reads from whatever
the page cache holds after writing, the second from the cache. Also hashes the same bytes in one thread and
in the thread pool the verification uses. Prints one JSON object; the figures the module docstring of
src/mammoflow/store_integrity.py quotes came from here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mammoflow.store import open_store
from mammoflow.store_integrity import _threads, chunk_rows, pixel_digests, write_manifest

RES = 512


def _store(folder: Path, n: int) -> np.ndarray:
    images = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.uint8, shape=(n, RES, RES))
    rng = np.random.default_rng(0)
    for start in range(0, n, 256):
        images[start : start + 256] = rng.integers(0, 256, images[start : start + 256].shape, dtype=np.uint8)
    images.flush()
    return np.load(folder / "images.npy", mmap_mode="r")


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--gib", type=float, default=1.0, help="store size in GiB")
    parser.add_argument("--dir", default=None, help="where to write it (default: the temp folder)")
    args = parser.parse_args()
    n = max(1, int(args.gib * 2**30 / RES**2))
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        images = _store(folder, n)
        gib = images.nbytes / 2**30
        manifest = pd.DataFrame({"row": np.arange(n), "image_id": np.arange(n), "patient_id": np.arange(n),
                                 "laterality": "L", "view": "CC", "cancer": 0, "source": "real"})  # fmt: skip
        out = {"gib": round(gib, 3), "images": n, "threads": _threads(), "cpus": os.cpu_count()}
        started = time.perf_counter()
        hashlib.sha256(images).hexdigest()
        out["sha256_one_thread_gib_s"] = round(gib / (time.perf_counter() - started), 2)
        started = time.perf_counter()
        pixel_digests(images, chunk_rows(images.shape))
        out["sha256_pool_gib_s"] = round(gib / (time.perf_counter() - started), 2)
        started = time.perf_counter()
        write_manifest(manifest, folder)
        out["record_s"] = round(time.perf_counter() - started, 3)
        for name in ("open_verified_s", "open_verified_again_s"):
            started = time.perf_counter()
            open_store(folder)
            out[name] = round(time.perf_counter() - started, 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
