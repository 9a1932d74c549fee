"""The projected discriminator's parts and StyleGAN-XL's losses, each checked against an independent
computation: timm's own feature maps, hooked ViT blocks, a numpy blur, hand-computed hinge values, parameter
counts from the architecture's description. One test builds the paper's pair from weight files written
the way timm's hub serves them (DeiT-base: ~350 MB, a few seconds)."""

import contextlib
import math

import numpy as np
import pytest
import torch
from gan_factory import gan_section, write_timm_weights
from safetensors.torch import load_file

from mammoflow.gan.losses import LogisticLoss, ProjectedLoss, blur
from mammoflow.gan.projected.discriminator import ProjectedDiscriminator
from mammoflow.gan.projected.features import EfficientNetLevels, FeatureNetwork, VitLevels, load_backbone
from mammoflow.gan.projected.heads import MultiScaleHeads
from mammoflow.gan.projected.projection import RandomProjection
from mammoflow.gan.settings import StageSettings, stage_settings
from mammoflow.gan.stage_state import lazy_adam

PAPER_PAIR = ("deit_base_distilled_patch16_224", "tf_efficientnet_lite0")


# Bit-identical CPU results need one thread count, the CLI runs' (--threads 1): conftest.one_thread.
pytestmark = pytest.mark.usefixtures("one_thread")


def settings(**overrides) -> StageSettings:
    return StageSettings.from_stage(stage_settings(gan_section(stages=[16], kimg=[1], **overrides), 16))


# ----------------------------------------------------------------------------------------- feature networks


def test_efficientnet_levels_are_timms_own_feature_maps():
    import timm

    torch.manual_seed(0)
    model = load_backbone("tf_efficientnet_lite0", None)
    reference = timm.create_model("tf_efficientnet_lite0", features_only=True, out_indices=(1, 2, 3, 4))
    reference.load_state_dict(model.state_dict(), strict=False)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        ours, theirs = EfficientNetLevels(model)(x), reference.eval()(x)
    assert [m.shape[1:] for m in ours] == [(24, 24, 24), (40, 12, 12), (112, 6, 6), (320, 3, 3)]
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_vit_levels_read_out_the_hooked_blocks():
    torch.manual_seed(0)
    model = load_backbone("deit_tiny_distilled_patch16_224", None)
    levels = VitLevels(model)
    hooked = {}
    handles = [model.blocks[i].register_forward_hook(lambda m, a, out, i=i: hooked.__setitem__(i, out))
               for i in (2, 5, 8, 11)]  # fmt: skip
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours = levels(x)
        # Independently: the tokens after blocks 3, 6, 9, 12, prefix (class and distillation) tokens dropped,
        # on the 14 x 14 patch grid, then the readout layers.
        grids = [hooked[i][:, 2:].transpose(1, 2).reshape(2, 192, 14, 14) for i in (2, 5, 8, 11)]
        expected = [readout(g) for readout, g in zip(levels.readouts, grids, strict=True)]
    for h in handles:
        h.remove()
    assert levels.channels == [24, 48, 96, 192]
    assert [m.shape[1:] for m in ours] == [(24, 56, 56), (48, 28, 28), (96, 14, 14), (192, 7, 7)]
    for a, b in zip(ours, expected, strict=True):
        torch.testing.assert_close(a, b)


def test_projection_mixes_channels_and_scales_from_coarse_to_fine():
    torch.manual_seed(0)
    projection = RandomProjection([24, 40, 112, 320])
    maps = [torch.randn(1, c, s, s) for c, s in zip([24, 40, 112, 320], [56, 28, 14, 7], strict=True)]
    out = projection(maps)
    assert projection.out_channels == [64, 64, 128, 256]
    assert [m.shape[1:] for m in out] == [(64, 112, 112), (64, 56, 56), (128, 28, 28), (256, 14, 14)]
    # Scale mixing runs from the coarsest level down: changing the finest level leaves the coarser
    # outputs alone, changing the coarsest changes every output.
    finer = projection([maps[0] + 1, *maps[1:]])
    coarser = projection([*maps[:3], maps[3] + 1])
    assert not torch.equal(finer[0], out[0]) and all(
        torch.equal(a, b) for a, b in zip(finer[1:], out[1:], strict=True)
    )
    assert all(not torch.allclose(a, b) for a, b in zip(coarser, out, strict=True))


def expected_head_parameters(cin: int, nominal: int) -> int:
    """Projected GAN's head from its description: blocks down to 8 px (4x4 conv with bias, batch norm's
    scale and shift), widths 64/64/128/256/512 at 128/64/32/16/8 px nominal, a 4x4 conv to one channel."""
    widths = {128: 64, 64: 64, 32: 128, 16: 256, 8: 512}
    widths[nominal] = cin
    total, size = 0, nominal
    while size > 8:
        a, b = widths[size], widths[size // 2]
        total += a * b * 16 + b + 2 * b
        size //= 2
    return total + widths[8] * 16


def test_heads_return_patch_logits_and_have_projected_gans_widths():
    torch.manual_seed(0)
    heads = MultiScaleHeads([64, 64, 128, 256])
    count = sum(p.numel() for p in heads.parameters())
    assert count == sum(
        expected_head_parameters(c, n) for c, n in [(64, 128), (64, 64), (128, 32), (256, 16)]
    )
    at_224 = [torch.randn(2, c, s, s) for c, s in [(64, 112), (64, 56), (128, 28), (256, 14)]]
    at_256 = [torch.randn(2, c, s, s) for c, s in [(64, 128), (64, 64), (128, 32), (256, 16)]]
    assert [t.shape for t in heads(at_224)] == [(2, 16)] * 4  # 7 px after the blocks, 4 x 4 logits
    assert [t.shape for t in heads(at_256)] == [(2, 25)] * 4


# ----------------------------------------------------------------------------------------- the whole


def test_paper_pair_from_weight_files(tmp_path):
    files = {name: write_timm_weights(name, tmp_path) for name in PAPER_PAIR}
    torch.manual_seed(0)
    D = ProjectedDiscriminator(16, files, ("color", "translation", "cutout"))
    for name, net in zip(PAPER_PAIR, D.features.values(), strict=True):
        stored = load_file(str(files[name]))
        if net.is_vit:  # the DeiT inside the discriminator holds the file's tensors
            own = net.levels.model.state_dict()
            assert own.keys() == stored.keys() and all(torch.equal(own[k], v) for k, v in stored.items())
        else:  # the EfficientNet's levels compute what timm's model read from the file computes
            model = load_backbone(name, files[name])
            assert all(torch.equal(model.state_dict()[k], v) for k, v in stored.items())
            x = torch.rand(1, 3, 64, 64)
            with torch.no_grad():
                pairs = zip(net.levels(x), EfficientNetLevels(model)(x), strict=True)
                assert all(torch.equal(a, b) for a, b in pairs)
        assert net.pretrained and not any(p.requires_grad for p in net.parameters())
    # Only the heads train: 4 per feature network, each network's levels projected to 64, 64, 128, 256.
    heads = sum(expected_head_parameters(c, n) for c, n in [(64, 128), (64, 64), (128, 32), (256, 16)])
    assert sum(p.numel() for p in D.trainable_parameters()) == 2 * heads
    D.train()
    assert not any(m.training for m in D.features.modules()) and all(m.training for m in D.heads.modules())
    frozen_before = D.hash_frozen_tensors()
    x = (torch.rand(2, 1, 16, 16) * 2 - 1).requires_grad_(True)
    torch.manual_seed(1)
    logits = D(x)
    assert [t.shape for t in logits] == [(2, 64), (2, 64)]  # 4 heads x 4 x 4 patches per network
    sum(t.sum() for t in logits).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # the generator's gradient flows through
    assert all(p.grad is None for p in D.features.parameters())
    assert all(p.grad is not None for p in D.trainable_parameters())
    # Training mode left the feature networks' batch statistics alone (the heads' moved).
    assert D.hash_frozen_tensors() == frozen_before


def test_random_features_are_the_same_for_the_same_seed_and_not_pretrained():
    def build(seed):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return FeatureNetwork("tf_efficientnet_lite0", None, always_224=True)

    a, b, c = build(3), build(3), build(4)
    assert not a.pretrained
    same = all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert same and not torch.equal(a.projection.channel_mix[0].weight, c.projection.channel_mix[0].weight)


# ----------------------------------------------------------------------------------------- losses


def numpy_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    half = math.floor(3 * sigma)
    taps = 2.0 ** -((np.arange(-half, half + 1) / sigma) ** 2)
    taps /= taps.sum()
    rows = np.stack([np.convolve(r, taps, mode="same") for r in image])
    return np.stack([np.convolve(c, taps, mode="same") for c in rows.T]).T


def test_blur_is_a_zero_padded_gaussian_of_three_sigma():
    image = np.random.default_rng(0).uniform(-1, 1, (20, 20))
    x = torch.from_numpy(image).float()[None, None]
    np.testing.assert_allclose(blur(x, 2.0)[0, 0].numpy(), numpy_blur(image, 2.0), atol=1e-6)
    np.testing.assert_allclose(blur(x, 0.7)[0, 0].numpy(), numpy_blur(image, 0.7), atol=1e-6)
    assert torch.equal(blur(x, 0.3), x)  # under one tap either side: no blur


def test_hinge_loss_blur_schedule_and_path_length_rules():
    loss = ProjectedLoss(None, None, contextlib.nullcontext, settings(), stem=True)
    logits = [torch.tensor([[1.0, 3.0], [-1.0, -1.0]])]
    # Per image, the mean over its patches; summed over images (and networks).
    assert loss.g_loss(logits).item() == pytest.approx(-2 + 1)
    assert loss.d_loss(logits, real=True).item() == pytest.approx(0 + 2)  # relu(1 - l)
    assert loss.d_loss(logits, real=False).item() == pytest.approx(3 + 0)  # relu(1 + l)
    assert [loss.sigma(n) for n in (0, 150_000, 300_000, 10**6)] == [2.0, 1.0, 0.0, 0.0]
    assert ProjectedLoss(None, None, None, settings(blur_fade_kimg=1), stem=True).sigma(0) == 0.0
    # Path lengths: the stem only, from pl_start_kimg on.
    assert loss.pl_weight == 2.0 and loss.g_reg(torch.zeros(4, 8), nimg=999_999) is None
    assert ProjectedLoss(None, None, None, settings(), stem=False).pl_weight == 0.0
    logistic = LogisticLoss(None, None, contextlib.nullcontext, settings(discriminator="residual"), 64)
    assert logistic.g_loss([torch.zeros(4, 1)]).item() == pytest.approx(math.log(2))


def test_adam_is_set_up_for_lazy_regularisation_as_stylegan_xl():
    params = [torch.nn.Parameter(torch.zeros(2))]
    g = lazy_adam(params, 0.0025, 4, torch.device("cpu")).param_groups[0]
    d = lazy_adam(params, 0.002, 16, torch.device("cpu")).param_groups[0]
    plain = lazy_adam(params, 0.0025, None, torch.device("cpu")).param_groups[0]
    assert g["lr"] == pytest.approx(0.002) and g["betas"] == pytest.approx((0.0, 0.99**0.8))
    assert d["lr"] == pytest.approx(0.002 * 16 / 17) and d["betas"] == pytest.approx((0.0, 0.99 ** (16 / 17)))
    assert plain["lr"] == 0.0025 and plain["betas"] == (0.0, 0.99)
