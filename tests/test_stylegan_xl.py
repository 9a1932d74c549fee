"""StyleGAN-XL's generator (src/mammoflow/gan/stylegan_xl/): layer tables against StyleGAN-XL's own, the
filtered leaky ReLU against a transcription of StyleGAN3's reference steps, the interface, growing, and
head-only training. (Pickles: test_stylegan_xl_pickle.py.)"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mammoflow.gan.stylegan_xl.arch import (
    ArchSpec,
    StemConfig,
    arch_for_stages,
    doubled_widths,
    grow_arch,
    head_up_factor,
    stem_arch,
)
from mammoflow.gan.stylegan_xl.filters import Activation, Resampling, filtered_lrelu, lowpass_filter
from mammoflow.gan.stylegan_xl.generator import Generator, build_stem, grow_generator, set_train_head_only

REFERENCE = json.loads((Path(__file__).parent / "data" / "stylegan_xl_table1_layers.json").read_text())
SMALL = StemConfig.configured(
    resolution=16, cbase=128, cmax=16, syn_layers=3, z_dim=8, w_dim=16, map_layers=2
)


# ------------------------------------------------------------------------------------- layer tables
@pytest.mark.parametrize(
    ("key", "stages"), [("stem16", [16]), ("head32", [16, 32]), ("head256", [16, 32, 256])]
)
def test_paper_layer_table_is_stylegan_xls(key, stages):
    """Table 1's settings give, layer for layer, what StyleGAN-XL's own code built (its attributes were
    recorded into tests/data/stylegan_xl_table1_layers.json by running it): names, widths, sizes,
    sampling rates, cut-offs, transition bands, up/down factors, filter taps and padding."""
    want = REFERENCE[key]
    arch = arch_for_stages(StemConfig.configured(cbase=16384, cmax=256, syn_layers=7), stages, head_layers=4)
    assert (arch.img_resolution, arch.num_ws) == (want["img_resolution"], want["num_ws"])
    assert arch.input.channels == want["input"]["channels"] and arch.input.size == want["input"]["size"]
    assert arch.input.sampling_rate == pytest.approx(want["input"]["sampling_rate"], rel=1e-12)
    assert arch.input.bandwidth == pytest.approx(want["input"]["bandwidth"], rel=1e-12)
    assert list(arch.head_layer_names) == want["head_layer_names"]
    assert [layer.name for layer in arch.layers] == [row["name"] for row in want["layers"]]
    for layer, row in zip(arch.layers, want["layers"], strict=True):
        got = {k: getattr(layer, k) for k in row if k not in ("name", "padding")}
        assert got == pytest.approx({k: v for k, v in row.items() if k not in ("name", "padding")}, rel=1e-12)
        assert list(layer.padding) == row["padding"], layer.name
    params = sum(p.numel() for p in Generator(arch).parameters()) if key == "stem16" else None
    if params is not None:  # building the 256 px network here would cost seconds; the stem suffices
        assert params == want["parameters"]


def test_table1_widths_are_doubled():
    """StyleGAN-XL's train.py doubles --cbase/--cmax for stylegan3-t: Table 1's 16384 / 256 are a network
    with channel_base 32768 and channel_max 512 (512 feature maps up to a 32 px cut-off)."""
    assert doubled_widths(16384, 256) == (32768, 512)
    arch = stem_arch(StemConfig.configured())
    assert (arch.channel_base, arch.channel_max) == (32768, 512)
    assert {layer.out_channels for layer in arch.layers[:-1]} == {512}


def test_arch_round_trips_through_plain_data():
    arch = arch_for_stages(SMALL, [16, 64], head_layers=3)
    assert ArchSpec.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda: stem_arch(replace(SMALL, syn_layers=2)), "syn_layers 2"),
        (lambda: grow_arch(stem_arch(SMALL), 32, 2), "head_layers 2"),
        (lambda: grow_arch(stem_arch(SMALL), 48, 3), "grow by 2, 4, 8, 16"),
        (lambda: head_up_factor(16, 16 * 32), "not 32"),
        (lambda: stem_arch(replace(SMALL, resolution=24)), "power of two"),
    ],
)
def test_what_stylegan_xl_cannot_build_is_refused(change, message):
    with pytest.raises(ValueError, match=message):
        change()


# ---------------------------------------------------------------------------------------- filters
def reference_filtered_lrelu(x, fu, fd, b, resampling, activation):
    """StyleGAN3's reference steps written out literally: zero insertion, pad, convolve (flipped filter,
    gain up² spread over the axes), leaky ReLU, gain, clamp, convolve, keep every down-th sample."""
    up, down, padding = resampling.up, resampling.down, resampling.padding
    gain, slope, clamp = activation.gain, activation.slope, activation.clamp
    n, c, h, w = x.shape
    x = x + b.view(1, -1, 1, 1)
    z = torch.zeros(n, c, h * up, w * up, dtype=x.dtype)
    z[:, :, ::up, ::up] = x
    px0, px1, py0, py1 = padding
    z = F.pad(z, [px0, px1, py0, py1])

    def convolve(v, f, gain_total):
        if f is None:
            return v * gain_total
        f = f.flip(list(range(f.ndim))) * gain_total ** (f.ndim / 2)
        if f.ndim == 1:
            v = F.conv2d(v, f.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
            return F.conv2d(v, f.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
        return F.conv2d(v, f[None, None].repeat(c, 1, 1, 1), groups=c)

    z = convolve(z, fu, up**2)
    z = F.leaky_relu(z, slope) * gain
    z = z.clamp(-clamp, clamp)
    return convolve(z, fd, 1.0)[:, :, ::down, ::down]


@pytest.mark.parametrize(
    ("up", "down", "padding", "radial"),
    [(2, 2, (5, 4, 5, 4), False), (4, 2, (11, 9, 11, 9), False), (1, 1, (-2, -2, -2, -2), False),
     (8, 2, (20, -3, 20, -3), False), (2, 2, (5, 4, 6, 3), True)],
)  # fmt: skip
def test_filtered_lrelu_matches_the_reference_steps(up, down, padding, radial):
    torch.manual_seed(0)
    fu = lowpass_filter(6 * up if up > 1 else 1, 3.0, 2.0, 16 * up)
    fd = lowpass_filter(6 * down if down > 1 else 1, 3.5, 2.0, 32, radial=radial)
    x, b = torch.randn(2, 3, 14, 14, dtype=torch.float64) * 3, torch.randn(3, dtype=torch.float64)
    fu64, fd64 = (f.double() if f is not None else None for f in (fu, fd))
    resampling, activation = Resampling(up, down, padding), Activation(math.sqrt(2), 0.2, 4.0)
    want = reference_filtered_lrelu(x, fu64, fd64, b, resampling, activation)
    got = filtered_lrelu(x, b, fu64, fd64, resampling, activation)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_filtered_lrelu_gradients():
    """The in-place activation (its own backward) keeps gradients right, clamp and ReLU included, to the
    second order."""
    torch.manual_seed(1)
    fu, fd = lowpass_filter(12, 3.0, 2.0, 32).double(), lowpass_filter(12, 3.5, 2.0, 32).double()
    x = (torch.randn(1, 1, 6, 6, dtype=torch.float64) * 2).requires_grad_(True)
    b = torch.randn(1, dtype=torch.float64, requires_grad=True)

    def op(x, b):
        return filtered_lrelu(
            x.clone(), b, fu, fd, Resampling(2, 2, (8, 7, 8, 7)), Activation(math.sqrt(2), 0.2, 1.5)
        )

    assert torch.autograd.gradcheck(op, (x, b), fast_mode=True)
    assert torch.autograd.gradgradcheck(op, (x, b), fast_mode=True)  # path-length regularisation: twice


def test_lowpass_filter_is_kaiser_firwin():
    """Separable filters are scipy's firwin with a Kaiser window (unit DC gain, symmetric)."""
    f = lowpass_filter(12, 4.0, 3.0, 32).numpy()
    assert f.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(f, f[::-1])
    assert lowpass_filter(1, 4.0, 3.0, 32) is None
    radial = lowpass_filter(12, 4.0, 3.0, 32, radial=True).numpy()
    assert radial.shape == (12, 12) and radial.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(radial, radial.T, atol=1e-7)


# -------------------------------------------------------------------------------------- interface
@pytest.fixture(scope="module")
def small_stem():
    torch.manual_seed(0)
    return build_stem(SMALL).eval()


def test_interface_is_stylegan_xls(small_stem):
    g = small_stem
    assert (g.z_dim, g.w_dim, g.c_dim, g.img_resolution, g.img_channels) == (8, 16, 0, 16, 1)
    assert g.num_ws == len(g.synthesis.layer_names) + 1 == g.mapping.num_ws == g.synthesis.num_ws
    z = torch.randn(3, 8)
    with torch.no_grad():
        ws = g.mapping(z, None, truncation_psi=1, update_emas=False)
        assert ws.shape == (3, g.num_ws, 16)
        images = g.synthesis(ws, update_emas=False)
        assert images.shape == (3, 1, 16, 16) and images.dtype == torch.float32
        torch.testing.assert_close(g(z, torch.zeros(3, 0)), images)
        # truncation 0 draws the mean w for every sample
        torch.testing.assert_close(
            g.mapping(z, None, truncation_psi=0), g.mapping.w_avg.expand(3, g.num_ws, -1)
        )
    with pytest.raises(ValueError, match="unconditional"):
        g.mapping(z, torch.ones(3, 2))


def test_update_emas_tracks_w_and_magnitudes():
    torch.manual_seed(2)
    g = build_stem(SMALL)
    layer = getattr(g.synthesis, g.synthesis.layer_names[0])
    with torch.no_grad():
        g(torch.randn(4, 8), update_emas=False)
        assert g.mapping.w_avg.abs().sum() == 0 and layer.magnitude_ema.item() == 1.0
        g(torch.randn(4, 8), update_emas=True)
    assert g.mapping.w_avg.abs().sum() > 0 and layer.magnitude_ema.item() != 1.0


def test_grow_carries_weights_and_trains_the_head_only(small_stem):
    torch.manual_seed(3)
    grown = grow_generator(small_stem, 64, head_layers=3)
    assert grown.img_resolution == 64 and grown.arch.stages[-1].up_factor == 4
    kept = [
        n
        for n in small_stem.synthesis.layer_names
        if not getattr(small_stem.synthesis, n).spec.is_critically_sampled
    ]
    assert grown.synthesis.layer_names[: len(kept)] == kept
    before, after = small_stem.state_dict(), grown.state_dict()
    for name in [
        k
        for k in before
        if k.startswith(("mapping.", "synthesis.input.", *(f"synthesis.{n}." for n in kept)))
    ]:
        assert torch.equal(before[name], after[name]), name
    trainable = set(map(id, set_train_head_only(grown)))
    for name, p in grown.named_parameters():
        in_head = any(name.startswith(f"synthesis.{n}.") for n in grown.head_layer_names)
        assert (id(p) in trainable) == (in_head or name.startswith("synthesis.input.")), name
    set_train_head_only(grown, freeze_input=True)
    assert not any(p.requires_grad for p in grown.synthesis.input.parameters())
    with torch.no_grad():
        assert grown(torch.randn(2, 8)).shape == (2, 1, 64, 64)
