"""The stage loop's view of the generator: StyleGAN-XL's interface, over today's ``networks.Generator``.

TODO(issue 22): temporary. The loop is written against StyleGAN-XL's generator interface (``G.mapping(z, c,
truncation_psi, update_emas) -> ws``, ``G.synthesis(ws, update_emas) -> img``, ``z_dim``, ``w_dim``,
``num_ws``, ``img_resolution``, ``img_channels``); this module gives today's StyleGAN2-style generator that
interface (one w for every layer: ``num_ws`` 1) until the StyleGAN-XL generator (``gan/stylegan_xl/``)
replaces it, and then goes. Everything the loop asks of a generator is here: build or grow the stage's
generator, which parameters it trains, and what its ``network.pt`` holds.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mammoflow.gan.network_io import FORMAT
from mammoflow.gan.networks import Generator, GeneratorSpec, build_generator, grow_generator


class XLGenerator(nn.Module):
    """``networks.Generator`` with StyleGAN-XL's mapping / synthesis split."""

    c_dim = 0
    num_ws = 1
    img_channels = 1

    def __init__(self, net: Generator):
        super().__init__()
        self.net = net
        self.z_dim, self.w_dim = net.spec.z_dim, net.spec.w_dim
        self.img_resolution = net.resolution

    def mapping(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        update_emas: bool = False,
    ) -> torch.Tensor:
        # A frozen mapping network keeps the previous stage's w_avg (today's generator's rule).
        w = self.net.mapping(z, truncation_psi, update_emas and self.net.mapping_trainable)
        return w[:, None, :].expand(-1, self.num_ws, -1)

    def synthesis(
        self, ws: torch.Tensor, update_emas: bool = False, noise_mode: str = "random"
    ) -> torch.Tensor:
        w = ws[:, 0]
        x = self.net.stem.const[None].expand(ws.shape[0], -1, -1, -1)
        x, image = self.net.stem(x, w, noise_mode)
        for head in self.net.heads:
            x, residual = head(x, w, noise_mode)
            image = F.interpolate(image, size=residual.shape[-2:], mode="bilinear", align_corners=False)
            image = image + residual
        return image

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        noise_mode: str = "random",
    ) -> torch.Tensor:
        return self.synthesis(self.mapping(z, c, truncation_psi), noise_mode=noise_mode)


def stage_generator(spec: GeneratorSpec, previous: Path | None, head_only: bool) -> XLGenerator:
    """The stem (no previous stage) or the previous stage's EMA generator grown by one head; a grown stage
    trains its new head only when ``head_only`` (StyleGAN-XL's train_head_only)."""
    if previous is None:
        generator = build_generator(spec)
    else:
        payload = torch.load(previous, map_location="cpu", weights_only=True)
        if payload.get("format") != FORMAT:
            raise ValueError(f"{previous}: not a mammoflow GAN network (format {payload.get('format')!r})")
        previous_spec = GeneratorSpec.from_dict(payload["spec"])
        if previous_spec.grown(spec.resolution) != spec:
            raise ValueError(f"{previous}: its generator ({previous_spec}) does not grow into {spec}")
        generator = grow_generator(payload["state"], previous_spec, spec.resolution)
    generator.set_frozen(head_only)
    return XLGenerator(generator)


def is_stem(spec: GeneratorSpec) -> bool:
    return len(spec.stages) == 1


def trainable_parameters(generator: XLGenerator) -> list[nn.Parameter]:
    return [p for p in generator.parameters() if p.requires_grad]


def network_payload(g_ema: XLGenerator, spec: GeneratorSpec) -> dict:
    """The generator part of ``network.pt`` (the loop adds what the stage was trained on)."""
    return {
        "format": FORMAT,
        "spec": spec.to_dict(),
        "state": {k: v.detach().cpu() for k, v in g_ema.net.state_dict().items()},
    }
