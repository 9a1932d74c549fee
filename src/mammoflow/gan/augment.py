"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) for a discriminator that sees few positives.

The same random transform family is applied to real and generated images before the discriminator, and
gradients flow through it to the generator, so the generator is not taught to draw the augmentations.
Images are one-channel, in [-1, 1], background (air) at -1:

- ``color``: brightness (add U(-0.5, 0.5)) and contrast (scale about the image mean by U(0.5, 1.5)); the
  saturation step of the original policy has no meaning for one channel and is left out;
- ``translation``: shift by up to 1/8 of the side, filling with the background value -1 (the original fills
  with 0, mid-grey here; -1 is what lies outside a mammogram);
- ``cutout``: a square of ``cutout_ratio`` of the side (the residual discriminator: 0.5, DiffAugment's
  paper; the projected one: 0.2, StyleGAN-XL's ``training/diffaug.py``), at a random place, set to 0.

Randomness comes from torch's global generator, which the training loop seeds per step.
"""

from __future__ import annotations

import torch

POLICIES = ("color", "translation", "cutout")


def brightness_contrast(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    x = x + (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = 0.125, fill: float = -1.0) -> torch.Tensor:
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sy, sy + 1, (n, 1, 1), device=x.device)
    tx = torch.randint(-sx, sx + 1, (n, 1, 1), device=x.device)
    gy = torch.arange(h, device=x.device)[None, :, None] + ty
    gx = torch.arange(w, device=x.device)[None, None, :] + tx
    # Pad by one pixel of `fill`; every index outside the image lands on that border.
    gy = (gy + 1).clamp(0, h + 1).expand(n, h, w)
    gx = (gx + 1).clamp(0, w + 1).expand(n, h, w)
    padded = torch.nn.functional.pad(x, [1, 1, 1, 1], value=fill)
    batch = torch.arange(n, device=x.device)[:, None, None].expand(n, h, w)
    return padded.permute(0, 2, 3, 1)[batch, gy, gx].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    gy = torch.arange(h, device=x.device)[None, :, None] - cy + ch // 2
    gx = torch.arange(w, device=x.device)[None, None, :] - cx + cw // 2
    inside = (gy >= 0) & (gy < ch) & (gx >= 0) & (gx < cw)
    return x * (~inside).to(x.dtype)[:, None]


def diff_augment(
    x: torch.Tensor, policy: tuple[str, ...] | list[str], cutout_ratio: float = 0.5
) -> torch.Tensor:
    for name in policy:
        if name == "color":
            x = brightness_contrast(x)
        elif name == "translation":
            x = translation(x)
        elif name == "cutout":
            x = cutout(x, cutout_ratio)
        else:
            raise ValueError(f"unknown augmentation {name!r}; known: {', '.join(POLICIES)}")
    return x
