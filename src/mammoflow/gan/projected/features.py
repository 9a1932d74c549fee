"""Frozen feature networks of the projected discriminator, each read out as four maps of falling resolution.

Two timm families, cut where StyleGAN-XL's ``pg_modules`` cuts them:

- EfficientNet (``tf_efficientnet_lite0`` .. ``lite4``): the stem and blocks 0-1 (stride 4), block 2
  (stride 8), blocks 3-4 (stride 16), blocks 5-6 (stride 32);
- DeiT (``deit_{tiny,small,base}_distilled_patch16_224``): the tokens after blocks 3, 6, 9 and 12 (prefix
  tokens dropped, laid out on the 14 x 14 patch grid), each read out by a fixed random layer to
  ``embed_dim / 8, / 4, / 2, / 1`` channels at 56, 28, 14 and 7 px (a 1x1 convolution, then a 4x
  transposed convolution, a 2x one, nothing, or a stride-2 3x3 convolution). A ViT always sees 224 px.

A network's input is an image in [0, 1]; it is mapped to the statistics the network was trained with
(timm's ``pretrained_cfg``: 0.5/0.5 for the EfficientNet-lite family, ImageNet's for DeiT), and grey images
are repeated into three channels (StyleGAN-XL was written for RGB; the paper's mammograms are grey).

Weights: a local file per network, loaded through timm (``pretrained_cfg_overlay=dict(file=...)``, so timm's
own key filtering applies), or random weights when the caller passes none (the config must ask for that).
Every part here is frozen and stays in eval mode.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mammoflow.gan.projected.projection import RandomProjection

EFFICIENTNETS = tuple(f"tf_efficientnet_lite{i}" for i in range(5))
VITS = tuple(f"deit_{size}_distilled_patch16_224" for size in ("tiny", "small", "base"))
SUPPORTED = EFFICIENTNETS + VITS
VIT_BLOCKS = (2, 5, 8, 11)  # the 12-block DeiTs' hooked blocks (0-based), as StyleGAN-XL's readout
VIT_SIDE = 224  # a patch-16 ViT with a 14 x 14 position grid


def check_names(names: list[str] | tuple[str, ...]) -> None:
    unknown = [n for n in names if n not in SUPPORTED]
    if unknown:
        raise ValueError(f"feature networks {unknown} are not supported; known: {', '.join(SUPPORTED)}")


def load_backbone(name: str, weights: Path | None) -> nn.Module:
    """timm's ``name``, from its weights file, or random when ``weights`` is None; frozen, eval mode."""
    import timm

    check_names([name])
    if weights is None:
        model = timm.create_model(name, pretrained=False)
    else:
        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(
                f"{weights}: no such file (the {name} weights of the projected discriminator)"
            )
        try:
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(weights)})
        except Exception as exc:  # whatever the file held (torch, safetensors, timm): one line naming it
            reason = str(exc).strip().splitlines()[0][:300]
            raise ValueError(f"{weights}: not {name} weights as timm stores them ({reason})") from exc
    return model.eval().requires_grad_(False)


class EfficientNetLevels(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        blocks = list(model.blocks)
        # timm >= 0.9 folds the stem's activation into bn1 (BatchNormAct2d): the same function as
        # StyleGAN-XL's conv_stem, bn1, act1 under timm 0.4.
        self.levels = nn.ModuleList(
            [
                nn.Sequential(model.conv_stem, model.bn1, *blocks[0:2]),
                nn.Sequential(*blocks[2:3]),
                nn.Sequential(*blocks[3:5]),
                nn.Sequential(*blocks[5:]),
            ]
        )
        with torch.no_grad():
            maps = self(torch.zeros(1, 3, 64, 64))
        self.channels = [m.shape[1] for m in maps]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for level in self.levels:
            x = level(x)
            out.append(x)
        return out


class VitLevels(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        if len(model.blocks) != 12:
            raise ValueError(f"a ViT with {len(model.blocks)} blocks: only the 12-block DeiTs are supported")
        self.model = model
        width = model.embed_dim
        self.channels = [width // 8, width // 4, width // 2, width]
        c0, c1, c2, c3 = self.channels
        # Random and frozen, like the rest of the feature path (StyleGAN-XL builds these with torch's
        # default initialisation and never trains them).
        self.readouts = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(width, c0, 1), nn.ConvTranspose2d(c0, c0, 4, stride=4)),
                nn.Sequential(nn.Conv2d(width, c1, 1), nn.ConvTranspose2d(c1, c1, 2, stride=2)),
                nn.Sequential(nn.Conv2d(width, c2, 1)),
                nn.Sequential(nn.Conv2d(width, c3, 1), nn.Conv2d(c3, c3, 3, stride=2, padding=1)),
            ]
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        tokens = self.model.forward_intermediates(
            x, indices=list(VIT_BLOCKS), norm=False, output_fmt="NCHW", intermediates_only=True
        )
        return [readout(t) for readout, t in zip(self.readouts, tokens, strict=True)]


class FeatureNetwork(nn.Module):
    """One frozen feature network and its random projection: image in [0, 1] -> four mixed maps."""

    def __init__(self, name: str, weights: Path | None, always_224: bool):
        super().__init__()
        backbone = load_backbone(name, weights)
        self.name, self.pretrained = name, weights is not None
        cfg = backbone.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg["std"]).view(1, 3, 1, 1), persistent=False)
        self.is_vit = name in VITS
        self.levels = VitLevels(backbone) if self.is_vit else EfficientNetLevels(backbone)
        self.projection = RandomProjection(self.levels.channels)
        self.channels = self.projection.out_channels
        # StyleGAN-XL's interp224: every input of a ViT, and every input of a smaller training resolution.
        self.always_224 = always_224 or self.is_vit
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> FeatureNetwork:
        return super().train(False)  # frozen batch statistics and no dropout, whatever the caller asks

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        if self.always_224:
            x = F.interpolate(x, size=(VIT_SIDE, VIT_SIDE), mode="bilinear", align_corners=False)
        return self.projection(self.levels(x))

    def backbone_tensors(self) -> dict[str, torch.Tensor]:
        """The backbone's own weights (what a weights file holds), apart from the random layers."""
        core = self.levels.model if self.is_vit else self.levels.levels
        return {k: v for k, v in core.state_dict().items()}
