"""A stage's losses, phase by phase, as StyleGAN3's ``training/loss.py`` splits them.

A training step runs up to four phases, each one backward pass into one optimiser: ``Gmain`` (the
generator's adversarial loss), ``Greg`` (its regulariser, every ``g_reg_interval`` steps), ``Dmain`` (the
discriminator on generated, then on real images), ``Dreg`` (its regulariser, every ``d_reg_interval``). The
loop owns the optimisers and which parameters train; a loss only computes and back-propagates.

- ``ProjectedLoss`` (``gan.discriminator: projected``), StyleGAN-XL's ``ProjectedGANLoss``: hinge loss
  (generator: -logit; discriminator: relu(1 + fake logit) + relu(1 - real logit)), each image's patch
  logits averaged per feature network and summed over images and networks; both players see the images
  blurred by a Gaussian whose sigma fades linearly from ``blur_sigma`` to 0 over ``blur_fade_kimg``;
  path-length regularisation (``pl_weight``, from ``pl_start_kimg`` on, on half the batch, every 4 steps)
  when the stem trains, none for super-resolution heads; no R1. The generator's mapping updates its w
  average during the discriminator phase, as StyleGAN-XL's does.
- ``LogisticLoss`` (``residual``), StyleGAN2's: non-saturating logistic loss averaged over images, lazy R1
  on real images every ``r1_interval`` steps (scaled by the interval), no generator regulariser.

Randomness (latents, augmentation, noise) comes from torch's global generator, seeded per step by the loop.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PL_BATCH_SHRINK = 2  # StyleGAN2's path-length batch: half the step's latents
PL_DECAY = 0.01  # of the running mean path length
PL_INTERVAL = 4  # StyleGAN-XL's G_reg_interval (training_loop's default; its train.py keeps it)
D_REG_INTERVAL = 16  # StyleGAN-XL's D_reg_interval: its Dreg phase does nothing, but Adam is set up for it

Stats = dict[str, torch.Tensor]


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur, zero-padded to the same size, taps 2**-(x/sigma)**2 for |x| <= 3 sigma
    (StyleGAN-XL's blur of the discriminator's input); the images themselves when that is no tap."""
    half = math.floor(sigma * 3)
    if half <= 0:
        return images
    taps = torch.arange(-half, half + 1, device=images.device, dtype=torch.float32).div(sigma).square().neg()
    taps = taps.exp2()
    taps = (taps / taps.sum()).to(images.dtype)
    c = images.shape[1]
    x = F.conv2d(images, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, half), groups=c)
    return F.conv2d(x, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(half, 0), groups=c)


def mean_logit(logits: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([logit.detach().float().flatten() for logit in logits]).mean()


class StageLoss:
    g_reg_interval: int | None = None
    d_reg_interval: int | None = None

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        autocast: Callable[[], contextlib.AbstractContextManager],
    ):
        self.G, self.D, self.autocast = generator, discriminator, autocast

    # --- what a subclass defines
    def g_loss(self, logits: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def d_loss(self, logits: list[torch.Tensor], real: bool) -> torch.Tensor:
        raise NotImplementedError

    def d_input(self, images: torch.Tensor, nimg: int) -> torch.Tensor:
        return images

    def g_reg(self, z: torch.Tensor, nimg: int) -> Stats | None:
        return None

    def d_reg(self, real: torch.Tensor, nimg: int) -> Stats | None:
        return None

    def schedule(self, nimg: int) -> Stats:
        """Scheduled values worth logging at ``nimg``."""
        return {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass

    # --- shared
    def run_g(self, z: torch.Tensor, update_emas: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        ws = self.G.mapping(z, z.new_zeros(z.shape[0], 0), update_emas=update_emas)
        return self.G.synthesis(ws, update_emas=False), ws

    def run_d(self, images: torch.Tensor, nimg: int) -> list[torch.Tensor]:
        return self.D(self.d_input(images, nimg))

    def g_main(self, z: torch.Tensor, nimg: int) -> Stats:
        with self.autocast():
            fake, _ = self.run_g(z)
            logits = self.run_d(fake, nimg)
            loss = self.g_loss(logits)
        loss.backward()
        return {"loss_g": loss.detach().float()}

    def d_main(self, real: torch.Tensor, z: torch.Tensor, nimg: int) -> Stats:
        # Generated and real images in separate passes: the projected heads' batch normalisation sees
        # each kind on its own, as in StyleGAN-XL.
        with torch.no_grad(), self.autocast():
            fake, _ = self.run_g(z, update_emas=True)
        with self.autocast():
            logits_fake = self.run_d(fake, nimg)
            loss_fake = self.d_loss(logits_fake, real=False)
        loss_fake.backward()
        with self.autocast():
            logits_real = self.run_d(real.detach(), nimg)
            loss_real = self.d_loss(logits_real, real=True)
        loss_real.backward()
        return {
            "loss_d": (loss_fake + loss_real).detach().float(),
            "d_fake": mean_logit(logits_fake),
            "d_real": mean_logit(logits_real),
        }


class ProjectedLoss(StageLoss):
    g_reg_interval = PL_INTERVAL
    d_reg_interval = D_REG_INTERVAL

    def __init__(self, generator, discriminator, autocast, settings, stem: bool):
        super().__init__(generator, discriminator, autocast)
        self.blur_sigma, self.blur_fade_nimg = settings.blur_sigma, settings.blur_fade_kimg * 1000
        # StyleGAN-XL regularises path lengths for the stem only (its super-resolution stages: pl_weight 0).
        self.pl_weight = settings.pl_weight if stem else 0.0
        self.pl_start_nimg = settings.pl_start_kimg * 1000
        self.pl_mean = torch.zeros([])

    def sigma(self, nimg: int) -> float:
        if self.blur_fade_nimg <= 1000:  # StyleGAN-XL: no blur unless it fades over more than 1 kimg
            return 0.0
        return max(1 - nimg / self.blur_fade_nimg, 0) * self.blur_sigma

    def d_input(self, images: torch.Tensor, nimg: int) -> torch.Tensor:
        return blur(images, self.sigma(nimg))

    def schedule(self, nimg: int) -> Stats:
        return {"blur_sigma": torch.tensor(self.sigma(nimg))}

    def g_loss(self, logits: list[torch.Tensor]) -> torch.Tensor:
        return sum((-logit.float()).mean(dim=1).sum() for logit in logits)

    def d_loss(self, logits: list[torch.Tensor], real: bool) -> torch.Tensor:
        sign = -1.0 if real else 1.0
        return sum(F.relu(1 + sign * logit.float()).mean(dim=1).sum() for logit in logits)

    def g_reg(self, z: torch.Tensor, nimg: int) -> Stats | None:
        if not self.pl_weight or nimg < self.pl_start_nimg:
            return None
        # Full precision: a penalty on gradients is sensitive to rounding.
        fake, ws = self.run_g(z[: max(1, z.shape[0] // PL_BATCH_SHRINK)])
        noise = torch.randn_like(fake) / np.sqrt(fake.shape[2] * fake.shape[3])
        (grads,) = torch.autograd.grad((fake * noise).sum(), ws, create_graph=True)
        lengths = grads.square().sum(2).mean(1).sqrt()
        self.pl_mean = self.pl_mean.to(lengths.device)
        pl_mean = self.pl_mean.lerp(lengths.mean(), PL_DECAY)
        self.pl_mean.copy_(pl_mean.detach())
        penalty = (lengths - pl_mean).square()
        (penalty * self.pl_weight).mean().backward()
        return {"pl_penalty": penalty.mean().detach()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"pl_mean": self.pl_mean.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.pl_mean = state["pl_mean"].clone()


class LogisticLoss(StageLoss):
    g_reg_interval = None

    def __init__(self, generator, discriminator, autocast, settings, resolution: int):
        super().__init__(generator, discriminator, autocast)
        self.gamma, self.d_reg_interval = settings.gamma(resolution), settings.r1_interval

    def g_loss(self, logits: list[torch.Tensor]) -> torch.Tensor:
        return sum(F.softplus(-logit.float()).mean() for logit in logits)

    def d_loss(self, logits: list[torch.Tensor], real: bool) -> torch.Tensor:
        return sum(F.softplus(-logit.float() if real else logit.float()).mean() for logit in logits)

    def d_reg(self, real: torch.Tensor, nimg: int) -> Stats | None:
        if self.gamma <= 0:
            return None
        real_in = real.detach().requires_grad_(True)
        logits = self.D(real_in)
        (grad,) = torch.autograd.grad(sum(logit.sum() for logit in logits), real_in, create_graph=True)
        penalty = grad.square().sum(dim=[1, 2, 3]).mean()
        (penalty * (self.gamma / 2) * self.d_reg_interval).backward()
        return {"r1": penalty.detach()}
