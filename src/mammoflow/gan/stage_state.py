"""Everything a GAN stage carries from step to step, built in one place, saved and restored as one object.

``StageState`` holds the networks (generator, its EMA copy, discriminator), both optimisers, the loss (with
its own state: the running mean path length), the step reached, what was logged and drawn so far, and how
often each real image was shown. ``save`` writes it to ``resume.pt`` (a temporary name, then renamed);
``restore`` reads it back only when the checkpoint belongs to the same run (``identity``: the generator
spec, the settings, the previous stage's network, the real images, the feature networks' files) and to the
same frozen features (their tensors' digest), so a resumed stage continues exactly where it stopped.

What is not saved: the frozen feature networks (rebuilt from their files or, when random, from the seed,
and checked by digest), and any random state (every step seeds torch's generator itself).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mammoflow.atomic import atomic_path, file_sha256
from mammoflow.gan.data import Positives
from mammoflow.gan.losses import LogisticLoss, ProjectedLoss, StageLoss
from mammoflow.gan.network_io import load_network
from mammoflow.gan.projected.discriminator import ProjectedDiscriminator
from mammoflow.gan.residual import ResidualDiscriminator
from mammoflow.gan.settings import StageSettings
from mammoflow.gan.stylegan_xl import (
    ArchSpec,
    Generator,
    build_generator,
    grow_generator,
    set_train_head_only,
)

ADAM_BETAS = (0.0, 0.99)  # StyleGAN-XL's (and StyleGAN2's), for both players
ADAM_EPS = 1e-8


def is_stem(arch: ArchSpec) -> bool:
    return not arch.head_layer_names


def stage_generator(arch: ArchSpec, previous: Path | None, head_only: bool) -> Generator:
    """The stem (no previous stage: everything trains) or the previous stage's EMA generator grown by
    one head (StyleGAN-XL's SuperresGenerator); with ``head_only`` only the new head (and the Fourier
    input, which StyleGAN-XL's train_head_only leaves trainable) trains."""
    if previous is None:
        return build_generator(arch)
    before, _ = load_network(previous)
    grown = grow_generator(before, arch.img_resolution, head_layers=arch.stages[-1].layers)
    if grown.arch != arch:
        raise ValueError(
            f"{previous}: its generator ({before.img_resolution} px, {len(before.arch.layers)} layers) "
            f"does not grow into this stage's ({arch.img_resolution} px, {len(arch.layers)} layers)"
        )
    if head_only:
        set_train_head_only(grown)
    return grown


def stage_identity(
    spec: ArchSpec,
    settings: StageSettings,
    previous: Path | None,
    positives: Positives,
    features: dict[str, Path | None],
) -> str:
    """What this run is; a checkpoint of anything else is not resumed."""
    return hashlib.sha256(
        json.dumps(
            {
                "spec": spec.to_dict(),
                "settings": settings.to_dict(),
                "previous": file_sha256(previous) if previous else None,
                "images": hashlib.sha256(positives.images.tobytes()).hexdigest(),
                "ids": positives.image_ids.tolist(),
                "features": {name: file_sha256(p) if p else None for name, p in features.items()},
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()


def lazy_adam(params: list[nn.Parameter], lr: float, reg_interval: int | None, device: torch.device):
    """Adam as StyleGAN sets it up for lazy regularisation: with a regulariser every k steps, lr and the
    betas are scaled by k / (k + 1) so that the two kinds of update together keep the intended rates."""
    ratio = reg_interval / (reg_interval + 1) if reg_interval else 1.0
    betas = tuple(b**ratio for b in ADAM_BETAS)
    fused = device.type in ("cpu", "cuda") or None  # one kernel for all parameters (bench/optimizer.py)
    return torch.optim.Adam(params, lr=lr * ratio, betas=betas, eps=ADAM_EPS, fused=fused)


def build_discriminator(
    spec: ArchSpec, settings: StageSettings, features: dict[str, Path | None]
) -> nn.Module:
    # Built from the stage's seed on a forked generator: random features and projections are the same on
    # every run of the stage (a resumed run checks that by digest), and the global stream is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        if settings.projected:
            return ProjectedDiscriminator(spec.img_resolution, features, settings.augment)
        # Table 1's cbase / cmax: the generator's network values are doubled (StyleGAN-XL's train.py).
        cbase, cmax = spec.channel_base // 2, spec.channel_max // 2
        return ResidualDiscriminator(spec.img_resolution, cbase, cmax, settings.augment)


@dataclass
class StageState:
    G: nn.Module
    G_ema: nn.Module
    D: nn.Module
    g_params: list[nn.Parameter]
    d_params: list[nn.Parameter]
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    loss: StageLoss
    identity: str
    shown: np.ndarray
    step: int = 0
    stats: list[dict] = field(default_factory=list)
    snapshots: list[tuple[float, np.ndarray]] = field(default_factory=list)
    seconds_before: float = 0.0

    @classmethod
    def build(
        cls, spec, settings: StageSettings, previous: Path | None, features: dict[str, Path | None],
        positives: Positives, device: torch.device, autocast: Callable,
    ) -> StageState:  # fmt: skip
        """The stage's networks, optimisers and loss, before training (``restore`` may then resume)."""
        identity = stage_identity(spec, settings, previous, positives, features)
        torch.manual_seed(settings.seed)
        stem = is_stem(spec)
        G = stage_generator(spec, previous, head_only=settings.freeze and not stem)
        D = build_discriminator(spec, settings, features)
        # channels_last: faster convolutions on GPUs (tensor cores) and, measured here, on CPUs too (oneDNN).
        G.to(device, memory_format=torch.channels_last)
        D.to(device, memory_format=torch.channels_last)
        G_ema = copy.deepcopy(G).eval().requires_grad_(False)
        if settings.projected:
            loss: StageLoss = ProjectedLoss(G, D, autocast, settings, stem)
        else:
            loss = LogisticLoss(G, D, autocast, settings, spec.img_resolution)
        g_params = [p for p in G.parameters() if p.requires_grad]
        d_params = D.trainable_parameters()
        opt_g = lazy_adam(g_params, settings.glr, loss.g_reg_interval, device)
        opt_d = lazy_adam(d_params, settings.dlr, loss.d_reg_interval, device)
        # A parameter trains only in its own player's phases (the loop switches them on and off).
        for p in (*g_params, *d_params):
            p.requires_grad_(False)
        shown = np.zeros(len(positives.images), np.int64)
        return cls(G, G_ema, D, g_params, d_params, opt_g, opt_d, loss, identity, shown)

    def checkpoint(self, seconds: float) -> dict:
        return {
            "identity": self.identity,
            "frozen_digest": self.D.frozen_digest(),
            "step": self.step,
            "G": self.G.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "D": self.D.trained_state(),
            "opt_G": self.opt_g.state_dict(),
            "opt_D": self.opt_d.state_dict(),
            "loss": self.loss.state_dict(),
            "stats": self.stats,
            "snapshots": [(kimg, torch.from_numpy(tiles)) for kimg, tiles in self.snapshots],
            "shown": torch.from_numpy(self.shown),
            "seconds": seconds,
        }

    def save(self, path: Path, seconds: float) -> None:
        with atomic_path(path) as tmp:
            torch.save(self.checkpoint(seconds), tmp)

    def restore(self, path: Path, log: Callable[[str], None]) -> bool:
        """Continue from ``path`` if it is this run's checkpoint; say why not otherwise."""
        if not path.exists():
            return False
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("identity") != self.identity:
            log(f"{path} belongs to other settings or data; starting afresh")
            return False
        if state.get("frozen_digest") != self.D.frozen_digest():
            log(f"{path}: the discriminator's frozen features differ from the checkpoint's; starting afresh")
            return False
        self.G.load_state_dict(state["G"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.D.load_trained_state(state["D"])
        self.opt_g.load_state_dict(state["opt_G"])
        self.opt_d.load_state_dict(state["opt_D"])
        self.loss.load_state_dict(state["loss"])
        self.step, self.stats, self.seconds_before = state["step"], state["stats"], state["seconds"]
        self.snapshots = [(kimg, tiles.numpy()) for kimg, tiles in state["snapshots"]]
        self.shown = state["shown"].numpy().copy()
        return True

    def update_ema(self, beta: float) -> None:
        """G_ema <- beta * G_ema + (1 - beta) * G for the trained parameters (the frozen ones are equal in
        both, and lerp of equal values is exact); buffers copied."""
        trained = {id(p) for p in self.g_params}
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
                if id(p) in trained:
                    p_ema.copy_(p.detach().lerp(p_ema, beta))
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
                b_ema.copy_(b)
