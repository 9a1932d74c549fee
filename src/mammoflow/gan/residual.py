"""The residual discriminator (``gan.discriminator: residual``) behind the projected one's interface.

StyleGAN2's "resnet" discriminator (``networks.Discriminator``), trained from scratch, with DiffAugment in
front (cutout half the side, DiffAugment's own setting). It returns one logit per image, as a list of one
(N, 1) tensor, so that the stage loop treats both discriminators alike. Every parameter trains.
"""

from __future__ import annotations

import torch
from torch import nn

from mammoflow.gan.augment import diff_augment
from mammoflow.gan.networks import Discriminator

CUTOUT_RATIO = 0.5


class ResidualDiscriminator(nn.Module):
    def __init__(self, resolution: int, cbase: int, cmax: int, augment: tuple[str, ...]):
        super().__init__()
        self.net = Discriminator(resolution, cbase, cmax)
        self.augment = tuple(augment)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = diff_augment(images, self.augment, CUTOUT_RATIO) if self.augment else images
        return [self.net(x)[:, None]]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.net.parameters())

    def trained_state(self) -> dict[str, torch.Tensor]:
        return self.net.state_dict()

    def load_trained_state(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state)

    def frozen_digest(self) -> str:
        return ""  # nothing frozen
