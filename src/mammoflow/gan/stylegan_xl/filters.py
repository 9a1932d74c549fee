"""StyleGAN3's filters and its filtered leaky ReLU, in plain PyTorch (no custom CUDA op to build).

``filtered_lrelu`` computes what StyleGAN3's op of that name computes (its reference path: bias, upsample by
zero insertion, pad, FIR filter, gain, leaky ReLU, clamp, FIR filter, keep every ``down``-th sample), but
without multiplying zeros: the upsampling is a strided transposed convolution with the filter (the same
sum as zero insertion followed by the filter), the downsampling a strided convolution that computes only
the samples it keeps. Separable filters run as two 1-D passes. Tested against a literal transcription of
the reference's steps (tests/test_stylegan_xl.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.signal
import scipy.special
import torch
import torch.nn.functional as F


def lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False):
    """A Kaiser-windowed low-pass FIR filter as StyleGAN3 designs it, or None for the identity (1 tap).

    Separable (1-D, ``scipy.signal.firwin``) unless ``radial``: then 2-D, a jinc windowed by the outer
    product of Kaiser windows, normalised to unit DC gain (StyleGAN3-R's downsampling filters).
    """
    if numtaps < 1:
        raise ValueError(f"a filter needs at least one tap, not {numtaps}")
    if numtaps == 1:
        return None
    if not radial:
        taps = scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)
        return torch.as_tensor(taps, dtype=torch.float32)
    offsets = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    radius = np.hypot(*np.meshgrid(offsets, offsets))
    jinc = scipy.special.j1(2 * np.pi * cutoff * radius) / (np.pi * radius)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    window = np.kaiser(numtaps, beta)
    taps = jinc * np.outer(window, window)
    return torch.as_tensor(taps / taps.sum(), dtype=torch.float32)


def _upsample(x: torch.Tensor, f: torch.Tensor | None, up: int, padding: tuple[int, int, int, int]):
    """Zero-insertion upsampling by ``up``, padding (negative: cropping), convolution with ``f`` (gain up²).

    With f of T taps per axis, the transposed convolution yields the full convolution of the
    zero-inserted signal (length (L - 1)·up + T); the reference keeps the part its padding selects,
    which starts T - 1 - pad_before samples in, so the same window is cut (or zero-extended) here.
    """
    px0, px1, py0, py1 = padding
    if f is None:
        if up != 1:
            raise ValueError("upsampling needs a filter")
        return F.pad(x, [px0, px1, py0, py1])
    channels = x.shape[1]
    taps = f.shape[-1]
    if f.ndim == 1:
        k = (f * up).to(x.dtype)
        x = F.conv_transpose2d(
            x, k.view(1, 1, 1, taps).expand(channels, 1, 1, taps), stride=(1, up), groups=channels
        )
        x = F.conv_transpose2d(
            x, k.view(1, 1, taps, 1).expand(channels, 1, taps, 1), stride=(up, 1), groups=channels
        )
    else:
        k = (f * up * up).to(x.dtype)
        x = F.conv_transpose2d(x, k[None, None].expand(channels, 1, taps, taps), stride=up, groups=channels)
    return F.pad(x, [px0 - taps + 1, px1 + up - taps, py0 - taps + 1, py1 + up - taps])


def _downsample(x: torch.Tensor, f: torch.Tensor | None, down: int) -> torch.Tensor:
    """Convolution with ``f`` (valid part only), then every ``down``-th sample: one strided convolution."""
    if f is None:
        return x[:, :, ::down, ::down] if down > 1 else x
    channels = x.shape[1]
    k = f.flip(list(range(f.ndim))).to(x.dtype)  # convolution, as the reference: correlation with the flip
    taps = f.shape[-1]
    if f.ndim == 1:
        x = F.conv2d(x, k.view(1, 1, 1, taps).expand(channels, 1, 1, taps), stride=(1, down), groups=channels)
        return F.conv2d(
            x, k.view(1, 1, taps, 1).expand(channels, 1, taps, 1), stride=(down, 1), groups=channels
        )
    return F.conv2d(x, k[None, None].expand(channels, 1, taps, taps), stride=down, groups=channels)


@dataclass(frozen=True)
class Resampling:
    """A layer's up and down factors and the padding around its upsampled signal (x0, x1, y0, y1)."""

    up: int
    down: int
    padding: tuple[int, int, int, int]


@dataclass(frozen=True)
class Activation:
    """Leaky ReLU slope (1: none), gain, and the clamp of the result (None: none)."""

    gain: float
    slope: float
    clamp: float | None


def filtered_lrelu(
    x: torch.Tensor,
    bias: torch.Tensor,
    up_filter: torch.Tensor | None,
    down_filter: torch.Tensor | None,
    resampling: Resampling,
    activation: Activation,
) -> torch.Tensor:
    """Bias, upsample (filtered), leaky ReLU, gain, clamp, downsample (filtered)."""
    up, down, padding = resampling.up, resampling.down, resampling.padding
    gain, slope, clamp = activation.gain, activation.slope, activation.clamp
    x = _upsample(x + bias.to(x.dtype).view(1, -1, 1, 1), up_filter, up, padding)
    if slope != 1 or gain != 1 or clamp is not None:
        x = _GainLeakyClamp.apply(x, gain, slope, clamp)
    return _downsample(x, down_filter, down)


class _GainLeakyClamp(torch.autograd.Function):
    """leaky ReLU(x)·gain clamped to ±clamp, in place on ``x`` (a fresh tensor), keeping only its output
    for the backward pass: the gradient is the incoming one where the output is inside (-clamp, clamp),
    times gain, times slope where the output is negative. Autograd's own version of these three ops keeps
    a copy of the input for the clamp and spends two passes on its masks; on a CPU these element-wise
    passes cost about as much as the filters. The backward is made of differentiable ops, so gradients of
    gradients (path-length regularisation) flow through it."""

    @staticmethod
    def forward(ctx, x, gain: float, slope: float, clamp: float | None):
        if slope != 1:
            x = F.leaky_relu_(x, slope)
        if gain != 1:
            x = x.mul_(gain)
        if clamp is not None:
            x = x.clamp_(-clamp, clamp)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        ctx.gain, ctx.slope, ctx.clamp = gain, slope, clamp
        return x

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        if ctx.clamp is not None:  # zero where the output sits on a bound (it was clamped)
            grad = torch.ops.aten.hardtanh_backward(grad, y, -ctx.clamp, ctx.clamp)
        if ctx.slope != 1:  # the output has the input's sign
            grad = torch.ops.aten.leaky_relu_backward(grad, y, ctx.slope, True)
        if ctx.gain != 1:
            grad = grad * ctx.gain
        return grad, None, None, None
