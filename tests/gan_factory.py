"""What the GAN tests build: stage settings from config.yaml's own values, feature network weight files.

Settings come from the repository's ``config.yaml`` (the one home of every default), overlaid with a test's
few changes, through the same ``stage_settings`` -> ``specs_from_settings`` path the workflow's rule uses.
Weight files are written as timm's hub serves them (``model.safetensors``: a state dict of
``timm.create_model(name)``, randomly initialised), so loading them runs timm's real file path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from conftest import REPO

from mammoflow.config import load_yaml
from mammoflow.folds import make_folds
from mammoflow.gan.cli import specs_from_settings
from mammoflow.gan.data import load_positives
from mammoflow.gan.settings import stage_settings
from mammoflow.store_integrity import write_manifest

# Small widths for tests; the architecture keys only (training keys come from config.yaml).
SMALL = dict(cbase=256, cmax=32, syn_layers=3, head_layers=3, z_dim=16, w_dim=32, map_layers=2)
# A cheap projected discriminator for most tests: one small feature network (the paper's pair is tested once).
SMALL_FEATURES = ["tf_efficientnet_lite0"]


def gan_section(**overrides) -> dict:
    return {**load_yaml(REPO / "config.yaml")["gan"], **overrides}


def stage(stages: list[int], kimg: float, **overrides):
    """(generator ArchSpec, StageSettings, the settings dict the rule passes) for the last of ``stages``."""
    gan = gan_section(stages=stages, kimg=[kimg] * len(stages), **overrides)
    settings = stage_settings(gan, stages[-1])
    return (*specs_from_settings(settings), settings)


def write_timm_weights(name: str, folder: Path) -> Path:
    """``folder/name/model.safetensors``: a random ``timm.create_model(name)``, saved as the hub serves it."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(len(name))
    model = timm.create_model(name, pretrained=False)
    path = folder / name / "model.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def breast_like(n: int, res: int, seed: int) -> np.ndarray:
    """A simple distribution: a bright half-disc against the left edge, its radius and brightness vary."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:res, :res] / res
    out = np.zeros((n, res, res), np.uint8)
    for i in range(n):
        radius, cy, level = rng.uniform(0.45, 0.8), rng.uniform(0.4, 0.6), rng.uniform(150, 230)
        inside = (xx**2 + (yy - cy) ** 2) < radius**2
        out[i] = np.where(inside, level * (1 - 0.5 * xx / radius), 0).clip(0, 255).astype(np.uint8)
    return out


def write_gan_store(root: Path) -> Path:
    """A 32 px store: 12 patients x 2 images (a third positive), folds (k=2), a manifest without lesions."""
    n = 24
    images = breast_like(n, 32, seed=1)
    laterality = np.array(["L", "R"] * (n // 2))
    images[laterality == "R"] = images[laterality == "R"][:, :, ::-1]  # chest wall on the right for R
    manifest = pd.DataFrame(
        {
            "row": np.arange(n),
            "image_id": 1000 + np.arange(n) * 7,
            "patient_id": 500 + np.arange(n) // 2,
            "laterality": laterality,
            "view": "CC",
            "cancer": np.isin(np.arange(n) // 2, [0, 2, 4, 6]).astype(np.int8),
            "source": "real",
        }
    )
    (root / "32").mkdir()
    np.save(root / "32/images.npy", images)
    write_manifest(manifest, root / "32")
    make_folds(manifest, k=2, seed=3).to_parquet(root / "folds.parquet")
    return root


def positives_of(store: Path, protocol: str = "clean", part: str = "fold0", res: int = 16):
    return load_positives(store / "32", store / "folds.parquet", protocol, part, res)


def quick(stages=(16,), kimg: float = 0.064, **overrides):
    """(spec, settings) of a short stage with the residual discriminator (cheap: the generator's tests)."""
    extra = dict(batch=8, snapshots=3, grid=4, checkpoint_kimg=0.016, discriminator="residual")
    spec, settings, _ = stage(list(stages), kimg, **{**SMALL, **extra, **overrides})
    return spec, settings
