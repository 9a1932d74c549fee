"""Drawing from a trained stage, and the synthetic store that joins the `augmented` data set.

The store has the layout of every other store (``images.npy`` N x res x res uint8 + ``manifest.parquet``)
so the training cells read it the same way:

- ``image_id``: 9_000_000_000 + 100_000_000 * (k + 1) + i for a ``clean`` fold-k store, 9_000_000_000 + i
  for the ``paper`` store: never an RSNA id (those are below 2**31) and unique across stores;
- ``patient_id``: -(image_id - 9_000_000_000 + 1): one made-up patient per image, negative;
- ``laterality``: what the image shows (the chest wall on the left edge: L), ``view`` "SYN", ``cancer`` 1,
  ``source`` "synthetic", lesion boxes NaN (the generator does not say where the lesion is);
- ``paper`` only: ``fold``, a seeded, balanced fold per image, because the study added the synthetic
  images before its split and so scored some of them in validation.

The generator draws with the chest wall on the left (it was trained that way, see data.py); half of the
images, chosen by the seed, are mirrored, and each image's laterality is then read off the image.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mammoflow.atomic import atomic_path, write_parquet, write_text
from mammoflow.devices import pick_device
from mammoflow.gan.data import resize
from mammoflow.gan.network_io import load_network, to_uint8
from mammoflow.progress import progress, say
from mammoflow.store import LESION_COLUMNS, write_contact_sheet

ID_BASE = 9_000_000_000
PART_STRIDE = 100_000_000


def latents(n: int, z_dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def generate(
    generator,
    n: int,
    seed: int,
    truncation: float = 1.0,
    batch: int = 64,
    device: str | torch.device = "cpu",
    show_progress: bool = False,
) -> np.ndarray:
    """``n`` images (uint8, N x res x res) from the seed's latents; constant noise, so fully determined."""
    z = latents(n, generator.z_dim, seed)
    out = np.empty((n, generator.resolution, generator.resolution), np.uint8)
    starts = range(0, n, batch)
    for start in progress(starts, "generate", total=len(starts), enabled=show_progress):
        chunk = z[start : start + batch].to(device)
        out[start : start + len(chunk)] = to_uint8(
            generator(chunk, None, truncation_psi=truncation, noise_mode="const")
        )
    return out


def chest_wall_left(images: np.ndarray) -> np.ndarray:
    """Per image: is the left edge brighter than the right one (the breast lies against the left edge)?"""
    edge = max(1, images.shape[-1] // 8)
    return images[:, :, :edge].mean(axis=(1, 2)) >= images[:, :, -edge:].mean(axis=(1, 2))


def synthetic_manifest(
    n: int, laterality: np.ndarray, part_code: int, folds: int | None, seed: int
) -> pd.DataFrame:
    offset = ID_BASE + PART_STRIDE * part_code
    image_id = offset + np.arange(n, dtype=np.int64)
    manifest = pd.DataFrame(
        {
            "row": np.arange(n, dtype=np.int64),
            "image_id": image_id,
            "patient_id": -(image_id - ID_BASE + 1),
            "laterality": laterality,
            "view": "SYN",
            "cancer": np.ones(n, np.int8),
            "source": "synthetic",
        }
    )
    for column in LESION_COLUMNS:
        manifest[column] = np.nan
    manifest["lesion_kind"] = pd.Series([None] * n, dtype=object)
    if folds is not None:
        manifest["fold"] = np.random.default_rng([seed, 1]).permutation(np.arange(n) % folds).astype(np.int64)
    return manifest


def synthesize(
    network_path: str | Path,
    res: int,
    count: int,
    out_dir: str | Path,
    protocol: str,
    part: str,
    folds: int,
    seed: int = 0,
    truncation: float = 1.0,
    batch: int = 64,
    device: str | None = None,
) -> pd.DataFrame:
    """Write ``images.npy``, ``manifest.parquet``, ``contact_sheet.png`` and ``summary.json``."""
    from mammoflow.gan.data import parse_part

    held_out = parse_part(protocol, part)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    started = time.perf_counter()
    generator, payload = load_network(network_path, dev)
    if generator.resolution < res:
        raise ValueError(f"{network_path}: a {generator.resolution} px generator cannot make {res} px images")
    images = generate(generator, count, seed, truncation, batch, dev, show_progress=True)
    drawn_left = chest_wall_left(images)
    mirror = np.random.default_rng([seed, 0]).permutation(np.arange(count) % 2).astype(bool)
    images[mirror] = images[mirror][:, :, ::-1]
    images = resize(images, res) if count else np.zeros((0, res, res), np.uint8)
    laterality = np.where(chest_wall_left(images), "L", "R") if count else np.array([], dtype=str)
    part_code = 0 if held_out is None else held_out + 1
    manifest = synthetic_manifest(count, laterality, part_code, folds if protocol == "paper" else None, seed)

    with atomic_path(out_dir / "images.npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, images)
    write_parquet(manifest, out_dir / "manifest.parquet")
    title = f"synthetic {protocol} {part} {res}px (stage {generator.resolution}, psi {truncation})"
    write_contact_sheet(images, manifest, out_dir / "contact_sheet.png", title=title)
    summary = {
        "protocol": protocol,
        "part": part,
        "resolution": res,
        "images": int(count),
        "network": str(network_path),
        "stage": int(generator.resolution),
        "stage_kimg": payload.get("kimg"),
        "trained_on_positives": payload.get("training_images"),
        "truncation": truncation,
        "seed": seed,
        "laterality": {"L": int((laterality == "L").sum()), "R": int((laterality == "R").sum())},
        # Images the generator drew facing right although it was trained on left-facing ones: a sign of
        # an undertrained generator (their labels follow the image, not the intended side).
        "drawn_facing_right": int((~drawn_left).sum()),
        "folds": (manifest["fold"].value_counts().sort_index().tolist() if "fold" in manifest else None),
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_text(json.dumps(summary, indent=2) + "\n", out_dir / "summary.json")
    say(f"synthesize {protocol} {part} {res}px: {count} images in {summary['seconds']} s -> {out_dir}")
    return manifest
