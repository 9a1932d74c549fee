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

A stage's generator draws with the chest wall on the left (it was trained that way, see data.py); a
published network (``gan.network``) draws both sides. Half of the images, chosen by the seed, are
mirrored, and each image's laterality is then read off the image. ``summary.json`` names the network
(file, kind, SHA-256) that made the store.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mammoflow.atomic import atomic_path, write_text
from mammoflow.devices import pick_device
from mammoflow.gan.data import resize
from mammoflow.gan.network_io import PICKLE_KIND, draw, load_network, to_uint8, z_dim
from mammoflow.progress import progress, say
from mammoflow.store import LESION_COLUMNS, write_contact_sheet
from mammoflow.store_integrity import write_manifest

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
    """``n`` grayscale images (uint8, N x res x res) from the seed's latents, fully determined (see
    network_io.draw); a 3-channel network's images are turned to gray (network_io.to_gray)."""
    z = latents(n, z_dim(generator), seed)
    out = np.empty((n, generator.resolution, generator.resolution), np.uint8)
    starts = range(0, n, batch)
    for start in progress(starts, "generate", total=len(starts), enabled=show_progress):
        chunk = z[start : start + batch].to(device)
        out[start : start + len(chunk)] = to_uint8(draw(generator, chunk, truncation))
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


@dataclass(frozen=True)
class SynthesisJob:
    """One `synthesize` job: a network's images for one protocol's GAN (part) at one resolution."""

    network_path: str | Path
    res: int
    count: int  # images drawn
    out_dir: str | Path
    protocol: str
    part: str  # fold{k} or all (parse_part)
    folds: int  # the run's fold count (paper: each synthetic image gets a fold)
    seed: int
    truncation: float
    batch: int = 64  # latents drawn at once (memory, not results)


def synthesize(job: SynthesisJob, device: str | None = None) -> pd.DataFrame:
    """Write ``images.npy``, ``manifest.parquet``, ``contact_sheet.png`` and ``summary.json``."""
    network_path, res, count, out_dir = job.network_path, job.res, job.count, job.out_dir
    protocol, part, folds, seed, truncation, batch = (
        job.protocol,
        job.part,
        job.folds,
        job.seed,
        job.truncation,
        job.batch,
    )
    from mammoflow.gan.data import parse_part

    held_out = parse_part(protocol, part)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    started = time.perf_counter()
    generator, payload = load_network(network_path, dev)
    source = payload["source"]
    if generator.resolution < res:
        # Upsampling would make blurred images that pass for res px ones: refuse, say what would do.
        raise ValueError(
            f"{network_path}: a {generator.resolution} px generator cannot make {res} px images "
            f"(it would need upsampling); give a network of at least {res} px for this resolution"
        )
    published = source["kind"] == PICKLE_KIND
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
    write_manifest(manifest, out_dir)  # with the checksum of images.npy, as every store
    made_by = f"{source['file']}" if published else f"stage {generator.resolution}"
    title = f"synthetic {protocol} {part} {res}px ({made_by}, psi {truncation})"
    write_contact_sheet(images, manifest, out_dir / "contact_sheet.png", title=title)
    summary = {
        "protocol": protocol,
        "part": part,
        "resolution": res,
        "images": int(count),
        "network": source,
        "stage": int(generator.resolution),
        "stage_kimg": payload.get("kimg"),
        "trained_on_positives": payload.get("training_images"),
        "resized": f"{generator.resolution} -> {res} px (area)" if generator.resolution != res else None,
        "published": (
            {
                "grown": payload["pickle"]["stages"],
                "note": "a published StyleGAN-XL network, not trained by this run: it saw its authors' "
                "training images (for the paper's, RSNA positives this run may validate on), and it was "
                "trained on both orientations, so drawn_facing_right is no sign of undertraining here",
            }
            if published
            else None
        ),
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


def read_latents(path: str | Path, z_dim_expected: int) -> np.ndarray:
    """(N, z_dim) float32 latents from a .npy file; one clear line naming the file where they are not."""
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a numpy .npy array of latents ({exc})") from None
    if z.ndim != 2 or z.shape[1] != z_dim_expected:
        raise ValueError(f"{path}: latents of shape {z.shape}; the network takes (N, {z_dim_expected})")
    if not np.issubdtype(z.dtype, np.floating) and not np.issubdtype(z.dtype, np.integer):
        raise ValueError(f"{path}: latents of dtype {z.dtype}, not numbers")
    if not np.isfinite(z).all():
        raise ValueError(f"{path}: latents hold NaN or infinite values")
    return z.astype(np.float32)


@torch.no_grad()
def generate_raw(
    network_path: str | Path,
    latents_path: str | Path,
    out_path: str | Path,
    truncation: float = 1.0,
    batch: int = 8,
    device: str | None = None,
) -> dict:
    """``mammoflow gan generate``: the generator's raw output (N, C, H, W) float32 for the given z,
    unconditional, at ``truncation`` (1: none), written to ``out_path`` (.npy)."""
    dev = pick_device(device)
    started = time.perf_counter()
    generator, payload = load_network(network_path, dev)
    z = torch.from_numpy(read_latents(latents_path, z_dim(generator)))
    side = generator.resolution
    out = np.empty((len(z), getattr(generator, "img_channels", 1), side, side), np.float32)
    starts = range(0, len(z), batch)
    for start in progress(starts, "generate", total=len(starts), enabled=len(starts) > 1):
        out[start : start + batch] = (
            draw(generator, z[start : start + batch].to(dev), truncation).float().cpu()
        )
    with atomic_path(Path(out_path)) as tmp, open(tmp, "wb") as handle:
        np.save(handle, out)
    source = payload["source"]
    seconds = round(time.perf_counter() - started, 3)
    say(
        f"gan generate: {len(z)} images {tuple(out.shape[1:])} from {source['file']} ({source['kind']}, "
        f"sha256 {source['sha256'][:12]}) at truncation {truncation} in {seconds} s -> {out_path}"
    )
    return {"images": len(z), "shape": list(out.shape), "network": source, "seconds": seconds}
