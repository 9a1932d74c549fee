"""GAN network files: reading any generator mammoflow can draw from, drawing, and the images as bytes.

Three kinds of file, told apart by their content, not their name:

- ``network.pt`` of format ``mammoflow-gan/2``: a stage's StyleGAN-XL generator (``gan/stylegan_xl``):
  its layer table (``arch``) and state dict (``generator_payload`` writes it);
- ``network.pt`` of format ``mammoflow-gan/1``: the earlier StyleGAN2-style generator (``gan/networks.py``),
  read until the stage loop has moved to StyleGAN-XL's;
- a StyleGAN-XL ``network-snapshot-*.pkl`` (the authors' published networks): its ``G_ema``, read by the
  restricted unpickler of ``gan/stylegan_xl/pickle_reader.py``, which runs nothing from the file.

``.pt`` files are loaded with ``weights_only=True``: tensors and plain data, never code from the file.
Shared by training (which writes), sampling and FID (which read), so that neither imports the loop.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from mammoflow.atomic import file_sha256

FORMAT = "mammoflow-gan/1"  # the StyleGAN2-style generator (gan/networks.py)
FORMAT_STYLEGAN_XL = "mammoflow-gan/2"  # StyleGAN-XL's generator (gan/stylegan_xl/)
PICKLE_KIND = "StyleGAN-XL pickle"
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L"): RGB networks to grayscale stores


def to_gray(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, 1, H, W): one channel as is; three by BT.601 luma (a network trained on
    grayscale mammograms saved as RGB draws three near-equal channels)."""
    if images.shape[1] == 1:
        return images
    if images.shape[1] != 3:
        raise ValueError(f"images with {images.shape[1]} channels: 1 or 3")
    weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (N, C, H, W) in [-1, 1] -> uint8 (N, H, W) (grayscale, see ``to_gray``)."""
    gray = to_gray(images.float())
    return ((gray.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0].cpu().numpy()


def is_stylegan_xl(generator) -> bool:
    return hasattr(generator, "mapping") and hasattr(generator, "synthesis") and hasattr(generator, "num_ws")


def z_dim(generator) -> int:
    return generator.z_dim if is_stylegan_xl(generator) else generator.spec.z_dim


def draw(generator, z: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
    """The generator's raw images (N, C, H, W) float32 for latents ``z``: unconditional, StyleGAN's
    constant noise for the earlier generator (StyleGAN3's layers have none), so fully determined."""
    if is_stylegan_xl(generator):
        return generator(z, None, truncation_psi=truncation)
    return generator(z, truncation=truncation, noise_mode="const")


def generator_payload(generator, **meta) -> dict:
    """What a stage's ``network.pt`` holds for a StyleGAN-XL generator (``meta``: kimg, settings, ...)."""
    return {
        "format": FORMAT_STYLEGAN_XL,
        "arch": generator.arch.to_dict(),
        "state": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
        "stage": generator.img_resolution,
        **meta,
    }


def _load_pt(path: Path) -> tuple[object, dict]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if fmt == FORMAT_STYLEGAN_XL:
        from mammoflow.gan.stylegan_xl.arch import ArchSpec
        from mammoflow.gan.stylegan_xl.generator import Generator

        generator = Generator(ArchSpec.from_dict(payload["arch"]))
    elif fmt == FORMAT:
        from mammoflow.gan.networks import GeneratorSpec, build_generator

        generator = build_generator(GeneratorSpec.from_dict(payload["spec"]))
    else:
        raise ValueError(f"{path}: not a mammoflow GAN network (format {fmt!r})")
    generator.load_state_dict(payload["state"])
    return generator, payload


def load_network(path: str | Path, device: str | torch.device = "cpu") -> tuple[object, dict]:
    """(generator in eval mode without gradients, its payload: format, kimg, ... and ``source``: what the
    file is, its name and SHA-256)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such network file")
    if zipfile.is_zipfile(path):  # torch.save's archive
        generator, payload = _load_pt(path)
        kind = "mammoflow stage"
        sha256 = file_sha256(path)
    else:
        from mammoflow.gan.stylegan_xl.pickle_network import load_stylegan_xl_pickle

        generator, info = load_stylegan_xl_pickle(path)
        payload = {"format": PICKLE_KIND, "kimg": info.kimg, "pickle": info.to_dict()}
        kind, sha256 = PICKLE_KIND, info.sha256
    payload = {
        **payload,
        "source": {
            "kind": kind,
            "file": path.name,
            "path": str(path),
            "sha256": sha256,
            "resolution": int(generator.resolution),
            "channels": int(getattr(generator, "img_channels", 1)),
        },
    }
    generator.requires_grad_(False)
    return generator.eval().to(device), payload
