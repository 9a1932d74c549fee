"""Generator and discriminator, StyleGAN family, in plain PyTorch; grayscale (one channel), images in [-1, 1].

To be replaced: the generator here (StyleGAN2-style layers) goes once the stage loop (gan/train.py) trains
StyleGAN-XL's generator (gan/stylegan_xl/); until then it is what `gan-stage` trains and what the
`network.pt` files of format ``mammoflow-gan/1`` hold. The residual discriminator stays (gan.discriminator:
residual).

Generator (``GeneratorSpec.stages`` = the resolutions grown so far, e.g. (16, 32, 256)):

- mapping network: z (``z_dim``) -> normalised -> ``map_layers`` fully connected layers -> w (``w_dim``),
  learning rate x0.01 as in StyleGAN2; a running mean of w (``w_avg``) for truncation;
- stem: a learned 4x4 constant and ``syn_layers`` modulated 3x3 convolutions (weight demodulation, noise
  inputs) that double the size up to ``stages[0]`` (16 px), then a 1x1 modulated "to image" layer;
- one super-resolution head per later stage: ``head_layers`` modulated convolutions that take the
  previous stage's last feature map up to the stage's size (doubling per layer; a head that must grow
  more than 2**head_layers takes the rest in its first layer), plus its own "to image" layer whose
  output is *added* to the upsampled previous image. A new head's "to image" weights start at zero, so
  a grown generator first draws exactly what the previous stage drew, only larger.

Every layer at resolution r has ``min(cbase // r, cmax)`` channels. The same w drives every layer (no
style mixing). Weights use the equalised learning rate (stored N(0, 1), scaled at run time).

Discriminator: residual (StyleGAN2 "resnet"): 1x1 from-image layer, one block per halving down to 4x4
(two 3x3 convolutions + a 1x1 skip, summed with gain sqrt(1/2)), minibatch standard deviation, a 3x3
convolution and two fully connected layers. Trained from scratch at each stage.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)
CONST_RES = 4


def channels(res: int, cbase: int, cmax: int) -> int:
    """Feature maps of a layer at resolution ``res``: min(cbase / res, cmax), at least 1."""
    return max(1, min(cbase // res, cmax))


def layer_plan(start: int, end: int, layers: int) -> list[tuple[int, int]]:
    """(upsampling factor, output resolution) per layer, growing from ``start`` to ``end`` px.

    One doubling per layer from the first; if there are fewer layers than doublings, the first layer
    takes the surplus; layers beyond the doublings work at ``end``.
    """
    if end < start or end & (end - 1) or start & (start - 1):
        raise ValueError(f"resolutions must be increasing powers of two, not {start} -> {end}")
    doublings = int(math.log2(end // start))
    ups = [1] * layers
    if doublings:
        if layers >= doublings:
            for i in range(doublings):
                ups[i] = 2
        else:
            ups[0] = 2 ** (doublings - layers + 1)
            for i in range(1, layers):
                ups[i] = 2
    plan, res = [], start
    for up in ups:
        res *= up
        plan.append((up, res))
    assert res == end, (start, end, layers, plan)
    return plan


@dataclass(frozen=True)
class GeneratorSpec:
    """The earlier StyleGAN2-style generator's shape, as its network.pt files record it (read back only)."""

    stages: tuple[int, ...]
    cbase: int
    cmax: int
    syn_layers: int
    head_layers: int
    z_dim: int
    w_dim: int
    map_layers: int

    def __post_init__(self) -> None:
        stages = tuple(int(s) for s in self.stages)
        object.__setattr__(self, "stages", stages)
        if not stages or list(stages) != sorted(set(stages)):
            raise ValueError(f"gan stages must be an increasing list, not {list(stages)}")
        for s in stages:
            if s < CONST_RES or s & (s - 1):
                raise ValueError(f"gan stage {s}: stages must be powers of two >= {CONST_RES}")

    @property
    def resolution(self) -> int:
        return self.stages[-1]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stages"] = list(self.stages)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> GeneratorSpec:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: (tuple(v) if k == "stages" else v) for k, v in d.items() if k in known})

    def grown(self, stage: int) -> GeneratorSpec:
        """The spec of the generator one stage further."""
        return GeneratorSpec(**{**asdict(self), "stages": (*self.stages, stage)})


# ------------------------------------------------------------------------------------------------ layers


class EqualLinear(nn.Module):
    def __init__(self, cin: int, cout: int, bias_init: float = 0.0, lr_mul: float = 1.0, act: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin) / lr_mul)
        self.bias = nn.Parameter(torch.full((cout,), float(bias_init) / lr_mul))
        self.weight_gain = lr_mul / math.sqrt(cin)
        self.lr_mul = lr_mul
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.lr_mul)
        return F.leaky_relu(x, 0.2) * SQRT2 if self.act else x


class EqualConv2d(nn.Module):
    def __init__(
        self, cin: int, cout: int, kernel: int, bias: bool = True, act: bool = True, down: bool = False
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(cin * kernel * kernel)
        self.padding = kernel // 2
        self.act, self.down = act, down

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        x = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.padding)
        if self.down:
            x = F.avg_pool2d(x, 2)
        if self.act:
            x = F.leaky_relu(x, 0.2) * SQRT2
        return x * gain if gain != 1.0 else x


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    def __init__(self, z_dim: int, w_dim: int, layers: int, lr_mul: float = 0.01, w_avg_beta: float = 0.995):
        super().__init__()
        dims = [z_dim] + [w_dim] * layers
        self.fcs = nn.ModuleList(
            EqualLinear(a, b, lr_mul=lr_mul, act=True) for a, b in itertools.pairwise(dims)
        )
        self.w_avg_beta = w_avg_beta
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, truncation: float = 1.0, update_w_avg: bool = False) -> torch.Tensor:
        w = normalize_2nd_moment(z.float())
        for fc in self.fcs:
            w = fc(w)
        if update_w_avg:
            self.w_avg.copy_(w.detach().float().mean(0).lerp(self.w_avg, self.w_avg_beta))
        if truncation != 1.0:
            w = self.w_avg.lerp(w, truncation)
        return w


class ModulatedConv(nn.Module):
    """Convolution whose input channels are scaled by a style from w (and demodulated, StyleGAN2)."""

    def __init__(self, cin: int, cout: int, w_dim: int, kernel: int, demodulate: bool = True):
        super().__init__()
        self.affine = EqualLinear(w_dim, cin, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.weight_gain = 1.0 / math.sqrt(cin * kernel * kernel)
        self.demodulate = demodulate
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)  # (N, cin)
        weight = self.weight * self.weight_gain
        # Modulate the activations instead of building one weight per sample: the same arithmetic, but
        # one ordinary convolution for the whole batch (cuDNN, channels_last) instead of a grouped one.
        x = x * styles.to(x.dtype)[:, :, None, None]
        x = F.conv2d(x, weight.to(x.dtype), padding=self.padding)
        if self.demodulate:
            # sum over (cin, k, k) of (weight * style)^2, per sample and output channel
            dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # (N, cout)
            x = x * dcoefs.to(x.dtype)[:, :, None, None]
        return x


class SynthesisLayer(nn.Module):
    def __init__(self, cin: int, cout: int, w_dim: int, res: int, up: int):
        super().__init__()
        self.conv = ModulatedConv(cin, cout, w_dim, 3)
        self.up, self.res = up, res
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(res, res))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        if self.up > 1:
            x = F.interpolate(x, scale_factor=self.up, mode="bilinear", align_corners=False)
        x = self.conv(x, w)
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.res, self.res, device=x.device, dtype=x.dtype)
            x = x + noise * self.noise_strength.to(x.dtype)
        elif noise_mode == "const":
            x = x + (self.noise_const * self.noise_strength).to(x.dtype)
        x = x + self.conv.bias.to(x.dtype)[:, None, None]
        return F.leaky_relu(x, 0.2) * SQRT2


class ToImage(nn.Module):
    def __init__(self, cin: int, w_dim: int, zero_init: bool = False):
        super().__init__()
        self.conv = ModulatedConv(cin, 1, w_dim, 1, demodulate=False)
        if zero_init:
            nn.init.zeros_(self.conv.weight)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.conv.bias.to(x.dtype)[:, None, None]


class SynthesisBlock(nn.Module):
    """The stem (from the learned constant to stages[0]) or one super-resolution head."""

    def __init__(self, cin: int, start: int, end: int, layers: int, spec: GeneratorSpec, head: bool):
        super().__init__()
        if not head:
            self.const = nn.Parameter(torch.randn(cin, start, start))
        self.plan = layer_plan(start, end, layers)
        blocks, c = [], cin
        for up, res in self.plan:
            cout = channels(res, spec.cbase, spec.cmax)
            blocks.append(SynthesisLayer(c, cout, spec.w_dim, res, up))
            c = cout
        self.layers = nn.ModuleList(blocks)
        self.to_image = ToImage(c, spec.w_dim, zero_init=head)
        self.out_channels = c

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        for layer in self.layers:
            x = layer(x, w, noise_mode)
        return x, self.to_image(x, w)


class Generator(nn.Module):
    def __init__(self, spec: GeneratorSpec):
        super().__init__()
        self.spec = spec
        self.mapping = MappingNetwork(spec.z_dim, spec.w_dim, spec.map_layers)
        c0 = channels(CONST_RES, spec.cbase, spec.cmax)
        self.stem = SynthesisBlock(c0, CONST_RES, spec.stages[0], spec.syn_layers, spec, head=False)
        heads, c = [], self.stem.out_channels
        for prev, res in itertools.pairwise(spec.stages):
            heads.append(SynthesisBlock(c, prev, res, spec.head_layers, spec, head=True))
            c = heads[-1].out_channels
        self.heads = nn.ModuleList(heads)
        self.mapping_trainable = True

    @property
    def resolution(self) -> int:
        return self.spec.resolution

    def forward(
        self,
        z: torch.Tensor,
        truncation: float = 1.0,
        noise_mode: str = "random",
        update_w_avg: bool = False,
    ) -> torch.Tensor:
        # A frozen mapping network keeps the previous stage's w_avg (and so its truncation centre).
        w = self.mapping(z, truncation, update_w_avg and self.mapping_trainable)
        x = self.stem.const[None].expand(z.shape[0], -1, -1, -1)
        x, image = self.stem(x, w, noise_mode)
        for head in self.heads:
            x, residual = head(x, w, noise_mode)
            image = F.interpolate(image, size=residual.shape[-2:], mode="bilinear", align_corners=False)
            image = image + residual
        return image

    def frozen_part(self) -> list[nn.Module]:
        """What a grown stage freezes by default (StyleGAN-XL): mapping, stem and all earlier heads."""
        if not self.heads:
            return []
        return [self.mapping, self.stem, *self.heads[:-1]]

    def set_frozen(self, freeze: bool) -> None:
        for p in self.parameters():
            p.requires_grad_(True)
        self.mapping_trainable = True
        if freeze:
            for module in self.frozen_part():
                for p in module.parameters():
                    p.requires_grad_(False)
            self.mapping_trainable = not self.heads

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def build_generator(spec: GeneratorSpec) -> Generator:
    generator = Generator(spec)
    generator.set_frozen(False)
    return generator


def grow_generator(previous_state: dict, previous_spec: GeneratorSpec, stage: int) -> Generator:
    """A generator one stage larger whose earlier layers hold the previous stage's weights."""
    generator = build_generator(previous_spec.grown(stage))
    missing, unexpected = generator.load_state_dict(previous_state, strict=False)
    new_prefix = f"heads.{len(generator.heads) - 1}."
    if unexpected or any(not k.startswith(new_prefix) for k in missing):
        raise ValueError(
            f"the previous stage's generator does not fit: unexpected {unexpected[:5]}, "
            f"missing {[k for k in missing if not k.startswith(new_prefix)][:5]}"
        )
    return generator


# ------------------------------------------------------------------------------------------------ critic


class DiscriminatorBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv0 = EqualConv2d(cin, cin, 3)
        self.conv1 = EqualConv2d(cin, cout, 3, down=True)
        self.skip = EqualConv2d(cin, cout, 1, bias=False, act=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gain = math.sqrt(0.5)
        return self.skip(x, gain) + self.conv1(self.conv0(x), gain)


def minibatch_std(x: torch.Tensor, group: int = 4) -> torch.Tensor:
    """One extra feature map: the standard deviation of features over groups of samples."""
    n, c, h, w = x.shape
    g = next(g for g in range(min(group, n), 0, -1) if n % g == 0)
    y = x.float().reshape(g, n // g, c, h, w)
    y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()  # (n/g, c, h, w)
    y = y.mean(dim=[1, 2, 3]).reshape(1, n // g, 1, 1, 1).expand(g, -1, 1, h, w).reshape(n, 1, h, w)
    return torch.cat([x, y.to(x.dtype)], dim=1)


class Discriminator(nn.Module):
    def __init__(self, resolution: int, cbase: int, cmax: int, mbstd_group: int = 4):
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise ValueError(f"discriminator resolution must be a power of two >= 8, not {resolution}")
        self.resolution = resolution
        self.mbstd_group = mbstd_group
        self.from_image = EqualConv2d(1, channels(resolution, cbase, cmax), 1)
        blocks, res = [], resolution
        while res > CONST_RES:
            blocks.append(DiscriminatorBlock(channels(res, cbase, cmax), channels(res // 2, cbase, cmax)))
            res //= 2
        self.blocks = nn.ModuleList(blocks)
        c4 = channels(CONST_RES, cbase, cmax)
        self.conv = EqualConv2d(c4 + 1, c4, 3)
        self.fc = EqualLinear(c4 * CONST_RES * CONST_RES, c4, act=True)
        self.out = EqualLinear(c4, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.from_image(image)
        for block in self.blocks:
            x = block(x)
        x = self.conv(minibatch_std(x, self.mbstd_group))
        return self.out(self.fc(x.flatten(1))).squeeze(1)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
