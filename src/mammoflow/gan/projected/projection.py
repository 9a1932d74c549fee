"""Projected GAN's fixed random projection of a feature network's four levels (its ``proj_type`` 2).

1. Cross-channel mixing: a 1x1 convolution per level to ``cout * (1, 2, 4, 8)`` channels (``expand``).
2. Cross-scale mixing, from the coarsest level down: each level's mixed map, plus the coarser level's
   result, is upsampled 2x (bilinear, corners aligned) and passed through a 1x1 convolution that halves
   its channels (the finest keeps them). The four results have ``cout * (1, 1, 2, 4)`` channels and twice
   the resolution of the levels they start from: strides 2, 4, 8, 16 of the network's input.

Both are randomly initialised (torch's default) and never trained: they spread each pretrained feature
over many channels and scales so that no head can latch onto a few dominant ones (Sauer et al. 2021).
StyleGAN-XL uses ``cout`` 64 with ``expand``; so does this module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

COUT = 64  # StyleGAN-XL's backbone_kwargs.cout
EXPAND = (1, 2, 4, 8)


class RandomProjection(nn.Module):
    def __init__(self, in_channels: list[int], cout: int = COUT):
        super().__init__()
        if len(in_channels) != len(EXPAND):
            raise ValueError(f"four feature levels are projected, not {len(in_channels)}")
        mixed = [cout * e for e in EXPAND]
        self.channel_mix = nn.ModuleList(nn.Conv2d(c, m, 1) for c, m in zip(in_channels, mixed, strict=True))
        # Level i's fusion halves its channels, except the finest (level 0), which keeps them.
        fused = [mixed[0], *(m // 2 for m in mixed[1:])]
        self.scale_mix = nn.ModuleList(nn.Conv2d(m, f, 1) for m, f in zip(mixed, fused, strict=True))
        self.out_channels = fused

    def forward(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        mixed = [conv(x) for conv, x in zip(self.channel_mix, levels, strict=True)]
        out: list[torch.Tensor] = [None] * len(mixed)  # type: ignore[list-item]
        coarser = None
        for i in reversed(range(len(mixed))):
            x = mixed[i] if coarser is None else mixed[i] + coarser
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
            out[i] = coarser = self.scale_mix[i](x)
        return out
