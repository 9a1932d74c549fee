"""StyleGAN-XL's projected discriminator: frozen feature networks, random projections, trainable heads.

For each feature network, in order, an image batch in [-1, 1] is

1. augmented (DiffAugment: colour, translation, cutout; a fresh draw per feature network, as StyleGAN-XL
   draws one per backbone; its cutout is 0.2 of the side),
2. mapped to [0, 1], repeated to three channels if grey, normalised with the network's statistics, and
   interpolated to 224 px when the training resolution is below 224 (every ViT input always),
3. read out at four levels, projected (``projection``), and judged by four heads (``heads``).

The result is one (N, patches) logit tensor per feature network, its four heads' patch logits side by
side (at 224 px: 4 x 16). StyleGAN-XL's loss averages each image's patch logits per feature network and
sums over images and networks (its discriminator hands the loss a list with one entry per image and
network); ``losses.ProjectedLoss`` does the same.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from mammoflow.gan.augment import diff_augment
from mammoflow.gan.projected.features import VIT_SIDE, FeatureNetwork, check_names
from mammoflow.gan.projected.heads import MultiScaleHeads

CUTOUT_RATIO = 0.2  # StyleGAN-XL's training/diffaug.py (DiffAugment's own default is 0.5)


class ProjectedDiscriminator(nn.Module):
    def __init__(self, resolution: int, weights: dict[str, Path | None], augment: tuple[str, ...]):
        """``weights``: feature network name -> its weights file (None: random weights), in the order used."""
        super().__init__()
        check_names(list(weights))
        if not weights:
            raise ValueError("the projected discriminator needs at least one feature network")
        self.resolution = resolution
        self.augment = tuple(augment)
        below = resolution < VIT_SIDE
        self.features = nn.ModuleDict(
            {name.replace(".", "_"): FeatureNetwork(name, path, below) for name, path in weights.items()}
        )
        self.heads = nn.ModuleDict({key: MultiScaleHeads(net.channels) for key, net in self.features.items()})
        self._digest: str | None = None

    def train(self, mode: bool = True) -> ProjectedDiscriminator:
        self.training = mode
        self.heads.train(mode)
        self.features.train(False)
        return self

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        logits: list[torch.Tensor] = []
        for key, net in self.features.items():
            x = diff_augment(images, self.augment, CUTOUT_RATIO) if self.augment else images
            logits.append(torch.cat(self.heads[key](net((x + 1) / 2)), dim=1))
        return logits

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.heads.parameters())

    def trained_state(self) -> dict[str, torch.Tensor]:
        """What training changes (the heads: weights, spectral-norm vectors, batch-norm statistics)."""
        return self.heads.state_dict()

    def load_trained_state(self, state: dict[str, torch.Tensor]) -> None:
        self.heads.load_state_dict(state)

    def frozen_digest(self) -> str:
        """SHA-256 of every frozen tensor (feature networks and random projections): a checkpoint of the
        heads is resumed only against the very features they were trained on. Computed once (they never
        change; DeiT-base's 350 MB take about a second)."""
        if self._digest is None:
            self._digest = self.hash_frozen_tensors()
        return self._digest

    def hash_frozen_tensors(self) -> str:
        digest = hashlib.sha256()
        for key, value in sorted(self.features.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()
