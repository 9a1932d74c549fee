"""Which config keys a GAN job depends on, the settings of one stage, and which stage serves which resolution.

Imported by workflow/rules/gan.smk, so it must not import torch (every `snakemake` call would pay for it).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, fields

# Keys of the `gan:` config section by the job they change (Snakemake's params trigger re-runs that job).
ARCHITECTURE = ("cbase", "cmax", "syn_layers", "head_layers", "z_dim", "w_dim", "map_layers")
TRAINING = (
    "discriminator",
    "feature_networks",
    "feature_weights",
    "batch",
    "glr",
    "dlr",
    "blur_sigma",
    "blur_fade_kimg",
    "pl_weight",
    "pl_start_kimg",
    "r1_gamma",
    "r1_interval",
    "ema_kimg",
    "ema_rampup",
    "freeze",
    "augment",
    "mixed_precision",
    "seed",
    "snapshots",
    "grid",
    "checkpoint_kimg",
)
FID = ("fid_images", "fid_batch", "inception", "seed")
SYNTHESIS = ("synthetic_images", "truncation", "seed")
DISCRIMINATORS = ("projected", "residual")
FEATURE_WEIGHTS = ("pretrained", "random")
AUGMENTATIONS = ("color", "translation", "cutout")


@dataclass(frozen=True)
class StageSettings:
    """How one GAN stage trains: the ``gan:`` keys of TRAINING plus the stage's kimg (config.yaml holds
    every value and says what each means; this type holds none). Built by ``from_stage``."""

    kimg: float
    batch: int
    discriminator: str  # projected (StyleGAN-XL's) | residual (StyleGAN2's, trained from scratch)
    feature_networks: tuple[str, ...]  # projected: timm names, in the order the discriminator runs them
    feature_weights: str  # pretrained (a file per network, required) | random (only when asked for)
    glr: float
    dlr: float
    blur_sigma: float  # projected: the blur of the discriminator's input at the start, fading to 0 ...
    blur_fade_kimg: float  # ... over this many kimg
    pl_weight: float  # projected, stem stage only: path-length regularisation ...
    pl_start_kimg: float  # ... from this many kimg on
    r1_gamma: float | None  # residual: R1 weight (None: 0.0002 * res**2 / batch, StyleGAN2-ADA's heuristic)
    r1_interval: int
    ema_kimg: float
    ema_rampup: float | None
    freeze: bool  # grown stages train their new head only (StyleGAN-XL's train_head_only)
    augment: tuple[str, ...]
    mixed_precision: bool
    seed: int
    snapshots: int
    grid: int
    checkpoint_kimg: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "augment", tuple(self.augment))
        object.__setattr__(self, "feature_networks", tuple(self.feature_networks))
        problems = []
        if set(self.augment) - set(AUGMENTATIONS):
            problems.append(f"unknown augmentation {sorted(set(self.augment) - set(AUGMENTATIONS))}")
        if self.discriminator not in DISCRIMINATORS:
            problems.append(f"discriminator {self.discriminator!r} is not one of {', '.join(DISCRIMINATORS)}")
        if self.feature_weights not in FEATURE_WEIGHTS:
            problems.append(
                f"feature_weights {self.feature_weights!r} is not one of {', '.join(FEATURE_WEIGHTS)}"
            )
        if self.discriminator == "projected" and not self.feature_networks:
            problems.append("the projected discriminator needs at least one of feature_networks")
        if problems:
            raise ValueError("gan settings: " + "; ".join(problems))

    @classmethod
    def from_stage(cls, settings: dict) -> StageSettings:
        """From ``stage_settings``' dict (architecture keys and ``stages`` are the generator's, not these)."""
        names = {f.name for f in fields(cls)}
        missing = sorted(names - set(settings))
        if missing:
            raise ValueError(f"gan settings lack {missing} (config.yaml's gan section has every key)")
        return cls(**{k: v for k, v in settings.items() if k in names})

    @property
    def projected(self) -> bool:
        return self.discriminator == "projected"

    def gamma(self, res: int) -> float:
        return self.r1_gamma if self.r1_gamma is not None else 0.0002 * res * res / self.batch

    def steps(self) -> int:
        return max(1, math.ceil(self.kimg * 1000 / self.batch))

    def to_dict(self) -> dict:
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)
        }


def stage_settings(gan: dict, stage: int) -> dict:
    """Everything one stage's training depends on: stages up to it, its own kimg, architecture, training.

    Later stages and other stages' lengths are left out, so adding a stage re-runs nothing before it (an
    earlier stage that changes reaches this one through its network file).
    """
    stages = list(gan["stages"])
    i = stages.index(stage)
    out = {"stages": stages[: i + 1], "kimg": gan["kimg"][i]}
    out.update({k: gan[k] for k in (*ARCHITECTURE, *TRAINING) if k in gan})
    return out


def source_resolution(stage: int, resolutions: list[int]) -> int:
    """The store a stage's real images come from: the smallest resolution >= the stage (area-downsampled
    to it); the largest store, upsampled, when none is that large."""
    ordered = sorted(resolutions)
    i = bisect.bisect_left(ordered, stage)
    return ordered[i] if i < len(ordered) else ordered[-1]


def synthesis_stage(res: int, stages: list[int]) -> int:
    """The stage whose generator makes the ``res`` px synthetic images: the smallest stage >= res."""
    ordered = sorted(stages)
    i = bisect.bisect_left(ordered, res)
    if i == len(ordered):
        raise ValueError(f"gan.stages {stages} never reach {res} px: add a stage of at least {res}")
    return ordered[i]


def needed_stages(resolutions: list[int], stages: list[int]) -> list[int]:
    """The stages up to the one that serves the largest resolution (later ones would serve nothing)."""
    last = synthesis_stage(max(resolutions), stages)
    return [s for s in stages if s <= last]
