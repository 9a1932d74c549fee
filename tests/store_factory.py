"""A packed store (src/mammoflow/store.py: images.npy + manifest.parquet) written straight from arrays, for
tests that need one without decoding: one image per row, two images per patient, left CC views."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mammoflow.store import LESION_COLUMNS
from mammoflow.store_integrity import write_manifest


def write_store(
    path: Path,
    images: np.ndarray,
    cancer: np.ndarray,
    first_id: int = 1000,
    lesions: np.ndarray | None = None,
) -> pd.DataFrame:
    """Write images (N x res x res uint8) and their manifest into ``path`` (created); returns the manifest.
    ``lesions`` (N x 4, NaN where none) become the manifest's lesion box columns."""
    n = len(images)
    path.mkdir(parents=True)
    np.save(path / "images.npy", images)
    manifest = pd.DataFrame(
        {
            "row": range(n),
            "image_id": first_id + np.arange(n),
            "patient_id": np.arange(n) // 2,
            "laterality": "L",
            "view": "CC",
            "cancer": cancer,
            "source": "real",
        }
    )
    if lesions is not None:
        for k, column in enumerate(LESION_COLUMNS):
            manifest[column] = lesions[:, k]
    write_manifest(manifest, path)  # with the checksum every reader verifies
    return manifest
