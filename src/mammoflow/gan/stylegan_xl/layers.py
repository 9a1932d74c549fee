"""The layers of StyleGAN-XL's generator (StyleGAN3-T's, "resetting" variant), with its parameter and buffer
names and shapes, so that its ``G_ema`` state loads one to one.

- ``FullyConnectedLayer``: equalised learning rate (weights stored N(0, 1)/lr_multiplier, scaled at run
  time), optional leaky ReLU ×√2;
- ``SynthesisInput``: Fourier features on a disc of frequencies, rotated and translated per sample by an
  affine map of w (initialised to the identity), then a learned channel mixing;
- ``SynthesisLayer``: a modulated convolution (weights and styles pre-normalised, demodulated; the "to
  image" layer is modulated only), the magnitude EMA as input gain, and the filtered leaky ReLU that
  up- and downsamples with the layer's Kaiser filters.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mammoflow.gan.stylegan_xl.arch import InputSpec, LayerSpec
from mammoflow.gan.stylegan_xl.filters import Activation, Resampling, filtered_lrelu, lowpass_filter

SQRT2 = math.sqrt(2.0)


class FullyConnectedLayer(nn.Module):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        weight_init: float = 1.0,
        bias_init: float | list[float] = 0.0,
    ):
        super().__init__()
        if activation not in ("linear", "lrelu"):
            raise ValueError(f"activation {activation!r}: linear or lrelu")
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) * (weight_init / lr_multiplier))
        bias = torch.as_tensor(np.broadcast_to(np.asarray(bias_init, np.float32), [out_features]).copy())
        self.bias = nn.Parameter(bias / lr_multiplier)
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(x.dtype) * self.weight_gain
        bias = self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear":
            return torch.addmm(bias.unsqueeze(0), x, weight.t())
        return F.leaky_relu(x.matmul(weight.t()) + bias, 0.2) * SQRT2

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"
        )


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool,
    padding: int,
    input_gain: torch.Tensor,
) -> torch.Tensor:
    """StyleGAN3's modulated convolution, computed on the activations instead of per-sample weights.

    StyleGAN3 builds one weight per sample (weight·style, demodulated, times the input gain) and runs a
    grouped convolution. Scaling the input channels by the styles, convolving with the shared weight and
    scaling the output channels by the demodulation coefficients is the same sum, in one ordinary
    convolution over the batch (faster on CPUs and with cuDNN, and differentiable the same way).
    """
    if demodulate:
        # Pre-normalisation (StyleGAN3): keeps fp16 in range; divided out again by the demodulation.
        weight = weight * weight.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()
    x = x * styles.to(x.dtype)[:, :, None, None]
    x = F.conv2d(x, weight.to(x.dtype), padding=padding)
    if demodulate:
        # Per sample and output channel: 1 / |weight · style| over (input channel, kernel).
        coefficients = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()
        return x * (coefficients * input_gain).to(x.dtype)[:, :, None, None]
    return x * input_gain.to(x.dtype)


class SynthesisInput(nn.Module):
    """Fourier features, transformed per sample (StyleGAN3's ``SynthesisInput``)."""

    def __init__(self, w_dim: int, spec: InputSpec):
        super().__init__()
        self.w_dim, self.channels = w_dim, spec.channels
        self.size, self.sampling_rate, self.bandwidth = spec.size, spec.sampling_rate, spec.bandwidth
        # Frequencies drawn uniformly-ish from a disc of radius `bandwidth` (StyleGAN3's draw), random phases.
        freqs = torch.randn(spec.channels, 2)
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * spec.bandwidth
        self.weight = nn.Parameter(torch.randn(spec.channels, spec.channels))
        self.affine = FullyConnectedLayer(w_dim, 4, weight_init=0, bias_init=[1, 0, 0, 0])
        self.register_buffer("transform", torch.eye(3, 3))  # a user's inverse transform of the image
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", torch.rand(spec.channels) - 0.5)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        n = w.shape[0]
        t = self.affine(w)  # (cos, sin, tx, ty), unnormalised
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        eye = torch.eye(3, device=w.device, dtype=t.dtype)
        rotation = eye.repeat(n, 1, 1)  # the inverse rotation of the image
        rotation[:, 0, 0], rotation[:, 0, 1] = t[:, 0], -t[:, 1]
        rotation[:, 1, 0], rotation[:, 1, 1] = t[:, 1], t[:, 0]
        translation = eye.repeat(n, 1, 1)  # the inverse translation
        translation[:, 0, 2], translation[:, 1, 2] = -t[:, 2], -t[:, 3]
        transforms = rotation @ translation @ self.transform.unsqueeze(0)

        phases = self.phases.unsqueeze(0) + (self.freqs.unsqueeze(0) @ transforms[:, :2, 2:]).squeeze(2)
        freqs = self.freqs.unsqueeze(0) @ transforms[:, :2, :2]  # (n, channels, 2)
        # Frequencies a user transform pushed past the band fade out instead of aliasing.
        amplitudes = (
            1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)
        ).clamp(0, 1)

        # Sample positions: pixel centres, in units of the sampling rate, centred on the image.
        coords = (
            torch.arange(self.size, device=w.device, dtype=t.dtype) + 0.5 - self.size / 2
        ) / self.sampling_rate
        grid_x = coords.view(1, 1, -1, 1) * freqs[:, None, None, :, 0]  # (n, 1, W, channels)
        grid_y = coords.view(1, -1, 1, 1) * freqs[:, None, None, :, 1]  # (n, H, 1, channels)
        x = torch.sin((grid_x + grid_y + phases[:, None, None, :]) * (2 * math.pi))
        x = x * amplitudes[:, None, None, :]
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2).contiguous()

    def extra_repr(self) -> str:
        return (
            f"w_dim={self.w_dim}, channels={self.channels}, size={self.size}, "
            f"sampling_rate={self.sampling_rate:g}, bandwidth={self.bandwidth:g}"
        )


class SynthesisLayer(nn.Module):
    """One layer of the synthesis network; its spec (``LayerSpec``) fixes every size, rate and filter."""

    def __init__(self, w_dim: int, spec: LayerSpec):
        super().__init__()
        self.spec = spec
        self.w_dim = w_dim
        self.affine = FullyConnectedLayer(w_dim, spec.in_channels, bias_init=1)
        k = spec.conv_kernel
        self.weight = nn.Parameter(torch.randn(spec.out_channels, spec.in_channels, k, k))
        self.bias = nn.Parameter(torch.zeros(spec.out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))
        self.register_buffer(
            "up_filter",
            lowpass_filter(spec.up_taps, spec.in_cutoff, spec.in_half_width * 2, spec.tmp_sampling_rate),
        )
        self.register_buffer(
            "down_filter",
            lowpass_filter(
                spec.down_taps,
                spec.out_cutoff,
                spec.out_half_width * 2,
                spec.tmp_sampling_rate,
                radial=spec.down_radial,
            ),
        )
        self.resampling = Resampling(spec.up_factor, spec.down_factor, spec.padding)
        self.activation = Activation(
            gain=1.0 if spec.is_torgb else SQRT2, slope=1.0 if spec.is_torgb else 0.2, clamp=spec.conv_clamp
        )
        self.style_gain = 1 / math.sqrt(spec.in_channels * k * k) if spec.is_torgb else 1.0

    def forward(self, x: torch.Tensor, w: torch.Tensor, update_emas: bool = False) -> torch.Tensor:
        if update_emas:
            with torch.no_grad():
                magnitude = x.detach().float().square().mean()
                self.magnitude_ema.copy_(magnitude.lerp(self.magnitude_ema, self.spec.magnitude_ema_beta))
        styles = self.affine(w)
        if self.style_gain != 1.0:
            styles = styles * self.style_gain
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            demodulate=not self.spec.is_torgb,
            padding=self.spec.conv_kernel - 1,
            input_gain=self.magnitude_ema.rsqrt(),
        )
        return filtered_lrelu(
            x, self.bias, self.up_filter, self.down_filter, self.resampling, self.activation
        )

    def extra_repr(self) -> str:
        s = self.spec
        return (
            f"{s.in_channels}->{s.out_channels} ch, {s.in_size}->{s.out_size} px, rate "
            f"{s.in_sampling_rate}->{s.out_sampling_rate}, up {s.up_factor}, down {s.down_factor}"
            + (", to image" if s.is_torgb else "")
        )
