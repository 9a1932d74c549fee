"""Which config keys a GAN job depends on, and which stage serves which resolution.

Imported by workflow/rules/gan.smk, so it must not import torch (every `snakemake` call would pay for it).
"""

from __future__ import annotations

import bisect

# Keys of the `gan:` config section by the job they change (Snakemake's params trigger re-runs that job).
ARCHITECTURE = ("cbase", "cmax", "syn_layers", "head_layers", "z_dim", "w_dim", "map_layers")
TRAINING = (
    "batch",
    "glr",
    "dlr",
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
