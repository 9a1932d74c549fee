"""A GAN stage's network file (``network.pt``): its format, loading it, and turning its images into bytes.

Shared by training (which writes it), sampling and FID (which read it), so that neither imports the
training loop. Loaded with ``weights_only=True``: tensors and plain data, never code from the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mammoflow.gan.networks import Generator, GeneratorSpec, build_generator

FORMAT = "mammoflow-gan/1"


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (N, 1, H, W) in [-1, 1] -> uint8 (N, H, W)."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0].cpu().numpy()


def load_network(path: str | Path, device: str | torch.device = "cpu") -> tuple[Generator, dict]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a mammoflow GAN network (format {payload.get('format')!r})")
    generator = build_generator(GeneratorSpec.from_dict(payload["spec"]))
    generator.load_state_dict(payload["state"])
    generator.requires_grad_(False)
    return generator.eval().to(device), payload
