"""The trainable part of the projected discriminator: one patch discriminator per projected feature level.

Each head (Projected GAN's ``SingleDisc``, as StyleGAN-XL runs it with four per feature network) halves its
map with strided blocks until a nominal 8 px and ends in a 4x4 convolution to one channel: a map of patch
logits, not one number per image. A block is a spectrally normalised 4x4 stride-2 convolution, batch
normalisation and leaky ReLU (0.2); the last convolution is spectrally normalised and has no bias.

Nominal sizes: Projected GAN sizes the heads for a 256 px input (the four levels at 128, 64, 32, 16 px),
whatever the input really is; at 224 px the maps are 112 ... 14 px and each head returns 4 x 4 logits.
Channel widths per nominal size follow its table (64 at 128 and 64 px, 128 at 32, 256 at 16, 512 at 8),
the first taking the projected level's channels.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

WIDTHS = {4: 512, 8: 512, 16: 256, 32: 128, 64: 64, 128: 64, 256: 32, 512: 16, 1024: 8}
NOMINAL = (128, 64, 32, 16)  # the four projected levels of a nominal 256 px input
END = 8


def sn_conv(cin: int, cout: int, kernel: int, stride: int, padding: int, bias: bool) -> nn.Module:
    return spectral_norm(nn.Conv2d(cin, cout, kernel, stride, padding, bias=bias))


class DownBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(sn_conv(cin, cout, 4, 2, 1, bias=True), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))


class PatchHead(nn.Sequential):
    def __init__(self, cin: int, nominal: int):
        widths = {**WIDTHS, nominal: cin}
        layers: list[nn.Module] = []
        size = nominal
        while size > END:
            layers.append(DownBlock(widths[size], widths[size // 2]))
            size //= 2
        layers.append(sn_conv(widths[END], 1, 4, 1, 0, bias=False))
        super().__init__(*layers)


class MultiScaleHeads(nn.Module):
    def __init__(self, channels: list[int]):
        super().__init__()
        self.heads = nn.ModuleList(PatchHead(c, n) for c, n in zip(channels, NOMINAL, strict=True))

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """One (N, patches) logit tensor per level."""
        return [head(x).flatten(1) for head, x in zip(self.heads, maps, strict=True)]
