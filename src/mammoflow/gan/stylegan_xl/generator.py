"""StyleGAN-XL's generator: mapping network, synthesis network, the stem and its super-resolution heads.

The interface is StyleGAN-XL's own, so a training loop written against it reads like StyleGAN-XL's:
``G.z_dim, G.w_dim, G.c_dim, G.num_ws, G.img_resolution, G.img_channels``;
``G.mapping(z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False) -> ws (N, num_ws, w_dim)``;
``G.synthesis(ws, update_emas=False) -> images (N, img_channels, res, res)``; ``G(z, c, ...)`` both.
The state dict's names and shapes are those of StyleGAN-XL's ``G_ema`` (``SuperresGenerator`` or the stem's
``Generator``), less ``mapping.embed.weight``: the ImageNet class embedding StyleGAN-XL loads into every
mapping network, which an unconditional network never uses.

mammoflow's additions: ``build_stem`` (from the config's Table-1 values), ``grow_generator`` (one more head,
the previous weights copied, as StyleGAN-XL's ``SuperresGenerator`` does from its ``path_stem``) and
``set_train_head_only`` (StyleGAN-XL's ``train_head_only``: mapping and stem frozen, the new head trained).
"""

from __future__ import annotations

import torch
from torch import nn

from mammoflow.gan.stylegan_xl.arch import ArchSpec, StemConfig, cut_critical, grow_arch, stem_arch
from mammoflow.gan.stylegan_xl.layers import FullyConnectedLayer, SynthesisInput, SynthesisLayer

NOISE_MODES = ("random", "const", "none")  # accepted for StyleGAN's call signature; StyleGAN3 has no noise


class MappingNetwork(nn.Module):
    """z (normalised) -> ``num_layers`` fully connected layers (lr ×0.01) -> w, broadcast to ``num_ws``;
    a running mean of w (``w_avg``) for truncation."""

    def __init__(self, arch: ArchSpec):
        super().__init__()
        if arch.c_dim:
            raise ValueError(
                f"a conditional generator (c_dim {arch.c_dim}): mammoflow's StyleGAN-XL generator is "
                "unconditional (the paper's network has one class)"
            )
        self.z_dim, self.c_dim, self.w_dim = arch.z_dim, 0, arch.w_dim
        self.num_ws, self.num_layers, self.w_avg_beta = arch.num_ws, arch.mapping_layers, arch.w_avg_beta
        features = [arch.z_dim] + [arch.w_dim] * arch.mapping_layers
        for i in range(arch.mapping_layers):
            layer = FullyConnectedLayer(
                features[i], features[i + 1], activation="lrelu", lr_multiplier=arch.mapping_lr_multiplier
            )
            setattr(self, f"fc{i}", layer)
        self.register_buffer("w_avg", torch.zeros(arch.w_dim))

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be (N, {self.z_dim}), not {tuple(z.shape)}")
        if c is not None and c.numel():
            raise ValueError("this generator is unconditional: give c as None or an (N, 0) tensor")
        x = z.to(torch.float32)
        x = x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if update_emas:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws[:, :cutoff] = self.w_avg.lerp(ws[:, :cutoff], truncation_psi)
        return ws

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


class SynthesisNetwork(nn.Module):
    """Fourier-feature input, then the layers in table order (attributes named as StyleGAN-XL names
    them: ``L{index}_{size}_{channels}``), the output scaled by ``output_scale``."""

    def __init__(self, arch: ArchSpec):
        super().__init__()
        self.w_dim, self.num_ws = arch.w_dim, arch.num_ws
        self.img_resolution, self.img_channels = arch.img_resolution, arch.img_channels
        self.output_scale = arch.output_scale
        self.input = SynthesisInput(arch.w_dim, arch.input)
        self.layer_names = list(arch.layer_names)
        for spec in arch.layers:
            setattr(self, spec.name, SynthesisLayer(arch.w_dim, spec))

    def forward(
        self, ws: torch.Tensor, update_emas: bool = False, noise_mode: str = "const", force_fp32: bool = True
    ) -> torch.Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode {noise_mode!r}: one of {', '.join(NOISE_MODES)}")
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be (N, {self.num_ws}, {self.w_dim}), not {tuple(ws.shape)}")
        ws = ws.to(torch.float32).unbind(dim=1)
        # Channels-last from the input on: every later op keeps it, and the filters' depthwise
        # convolutions run about twice as fast so on a CPU (bench/gan_generator.py; oneDNN).
        x = self.input(ws[0]).contiguous(memory_format=torch.channels_last)
        for name, w in zip(self.layer_names, ws[1:], strict=True):
            x = getattr(self, name)(x, w, update_emas=update_emas)
        if self.output_scale != 1:
            x = x * self.output_scale
        return x.to(torch.float32).contiguous()

    def extra_repr(self) -> str:
        return f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}"


class Generator(nn.Module):
    """StyleGAN-XL's generator (stem, or stem and heads), built from its layer table ``arch``."""

    def __init__(self, arch: ArchSpec):
        super().__init__()
        self.arch = arch
        self.z_dim, self.c_dim, self.w_dim = arch.z_dim, arch.c_dim, arch.w_dim
        self.img_resolution, self.img_channels = arch.img_resolution, arch.img_channels
        self.synthesis = SynthesisNetwork(arch)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(arch)
        self.head_layer_names = list(arch.head_layer_names)

    @property
    def resolution(self) -> int:
        return self.img_resolution

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
        **synthesis_kwargs,
    ) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi, truncation_cutoff, update_emas=update_emas)
        return self.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)


def build_generator(arch: ArchSpec) -> Generator:
    """A generator with StyleGAN-XL's initialisation (torch's global RNG: seed it first)."""
    return Generator(arch)


def build_stem(config: StemConfig) -> Generator:
    return Generator(stem_arch(config))


def grow_generator(previous: Generator, resolution: int, head_layers: int) -> Generator:
    """``previous`` with its critically sampled layers cut and a new head up to ``resolution`` px.

    The mapping, the Fourier input and the kept layers carry ``previous``'s weights and buffers; the head
    starts from StyleGAN-XL's initialisation. (StyleGAN-XL's ``SuperresGenerator`` does the same with the
    stem pickle it is given.)
    """
    grown = Generator(grow_arch(previous.arch, resolution, head_layers))
    kept = {f"synthesis.{spec.name}." for spec in cut_critical(previous.arch)}
    source = previous.state_dict()
    carried = {
        k: v
        for k, v in source.items()
        if k.startswith(("mapping.", "synthesis.input.")) or any(k.startswith(p) for p in kept)
    }
    target = grown.state_dict()
    for k, v in carried.items():
        if k not in target or target[k].shape != v.shape:
            raise ValueError(f"growing to {resolution} px: {k} does not carry over ({tuple(v.shape)})")
    grown.load_state_dict(carried, strict=False)
    return grown


def set_train_head_only(generator: Generator, freeze_input: bool = False) -> list[nn.Parameter]:
    """StyleGAN-XL's ``train_head_only``: the mapping and every layer outside the newest head frozen.

    StyleGAN-XL freezes the mapping and the synthesis *layers* but not the Fourier-feature input (its
    loop only walks ``layer_names``), so the input stays trainable there; ``freeze_input`` freezes it too.
    Returns the parameters left trainable.
    """
    if not generator.head_layer_names:
        raise ValueError("the generator has no super-resolution head: a stem trains everything")
    generator.mapping.requires_grad_(False)
    heads = set(generator.head_layer_names)
    for name in generator.synthesis.layer_names:
        getattr(generator.synthesis, name).requires_grad_(name in heads)
    generator.synthesis.input.requires_grad_(not freeze_input)
    return [p for p in generator.parameters() if p.requires_grad]
