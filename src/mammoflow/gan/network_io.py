"""A GAN stage's network file (``network.pt``): its format, loading it, and turning its images into bytes.

Shared by training (which writes it), sampling and FID (which read it), so that neither imports the
training loop. Loaded with ``weights_only=True``: tensors and plain data, never code from the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mammoflow.gan.stylegan_xl import ArchSpec, Generator, build_generator

# 2: StyleGAN-XL's generator (gan/stylegan_xl/), its layer table under "arch". 1 was the StyleGAN2-style
# generator of gan/networks.py, which no stage trains any more.
FORMAT = "mammoflow-gan/2"


def network_payload(generator: Generator) -> dict:
    """The generator part of a ``network.pt``: format, layer table, weights (the stage adds the rest)."""
    return {
        "format": FORMAT,
        "arch": generator.arch.to_dict(),
        "state": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
    }


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (N, 1, H, W) in [-1, 1] -> uint8 (N, H, W)."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0].cpu().numpy()


def load_network(path: str | Path, device: str | torch.device = "cpu") -> tuple[Generator, dict]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") == "mammoflow-gan/1":
        raise ValueError(
            f"{path}: a network of an earlier mammoflow (its StyleGAN2-style generator); train its stage "
            "again (snakemake --forcerun gan_stage)"
        )
    if payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a mammoflow GAN network (format {payload.get('format')!r})")
    generator = build_generator(ArchSpec.from_dict(payload["arch"]))
    generator.load_state_dict(payload["state"])
    generator.requires_grad_(False)
    return generator.eval().to(device), payload
