"""fastai's training recipes as phases of a cell, and every step's learning rate and momentum in each.

``train.recipe``:

- ``fit_one_cycle``: fastai's ``Learner.fit_one_cycle(epochs, lr)``: one phase, the same rate for both
  parameter groups, cosine warm-up from lr/25 over ``pct_start`` (0.25) of the steps, then cosine down to
  lr/1e5; momentum (Adam's beta1) 0.95 -> 0.85 -> 0.95. A pretrained vision_learner starts frozen, so this
  phase trains the head and the body's normalisation layers only (fastai's ``train_bn``); from random
  initialisation nothing is frozen.
- ``fine_tune``: fastai's ``Learner.fine_tune(epochs, lr)``: one frozen epoch of fit_one_cycle at
  ``slice(lr)`` (the body group at lr/10, the head at lr) with ``pct_start`` 0.99, then unfrozen
  ``epochs`` more at discriminative rates ``slice(lr/2/100, lr/2)`` (body lr/200, head lr/2), ``div`` 5
  and ``pct_start`` 0.3. fastai freezes for the first epoch whether or not the weights are pretrained.

The arithmetic is fastai's, not only its formulas, so the rates agree to the last bit (the test compares
them with fastai's own Learner, tests/test_fastai_recipe.py): a step's position in the fit is the epoch's
start ``epoch / epochs`` plus ``1 / (steps * epochs)`` added once per step before it (fastai's
TrainEvalCallback), and the position within a warm-up or annealing phase is computed in float32 (fastai's
``combine_scheds`` keeps the phase boundaries in a float32 tensor); the cosine itself in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RECIPES = ("fine_tune", "fit_one_cycle")
MOMS = (0.95, 0.85, 0.95)  # vision_learner's moms
GROUPS = 2  # fastai's default_split for a timm body: the body, the head


@dataclass(frozen=True)
class Phase:
    """One ``fit_one_cycle`` call: its epochs, whether the body is frozen, its peak rate per group."""

    name: str
    epochs: int
    frozen: bool
    lr_max: tuple[float, ...]  # per parameter group: body, head
    pct_start: float
    div: float = 25.0
    div_final: float = 1e5
    moms: tuple[float, float, float] = MOMS


def group_rates(lr: float | slice) -> tuple[float, ...]:
    """The rate of each parameter group for ``lr`` as fastai's Optimizer.set_hyper spreads it: a number for
    every group; ``slice(b)``: b/10 for all but the head, b for the head; ``slice(a, b)``: a to b in equal
    ratios (fastcore's even_mults)."""
    if not isinstance(lr, slice):
        return (float(lr),) * GROUPS
    if not lr.start:
        return (lr.stop / 10,) * (GROUPS - 1) + (lr.stop,)
    step = (lr.stop / lr.start) ** (1 / (GROUPS - 1))
    return tuple(lr.start * (step**i) for i in range(GROUPS))


def fit_one_cycle(epochs: int, lr: float | slice, frozen: bool, pct_start: float = 0.25) -> list[Phase]:
    return [Phase("fit_one_cycle", epochs, frozen, group_rates(lr), pct_start)]


def fine_tune(epochs: int, base_lr: float, pct_start: float = 0.3) -> list[Phase]:
    """fastai's defaults: freeze_epochs=1, lr_mult=100, div=5."""
    half = base_lr / 2
    return [
        Phase("frozen", 1, True, group_rates(slice(base_lr)), 0.99),
        Phase("unfrozen", epochs, False, group_rates(slice(half / 100, half)), pct_start, div=5.0),
    ]


def plan(
    recipe: str, epochs: int, lr: float, pretrained: bool, pct_start: float | None = None
) -> list[Phase]:
    """The phases of ``recipe`` (train.recipe); ``pct_start`` None keeps the recipe's fastai default."""
    if recipe == "fine_tune":
        return fine_tune(epochs, lr, 0.3 if pct_start is None else pct_start)
    if recipe == "fit_one_cycle":
        # vision_learner freezes a pretrained body; fit_one_cycle does not unfreeze it.
        return fit_one_cycle(
            epochs, lr, frozen=pretrained, pct_start=0.25 if pct_start is None else pct_start
        )
    raise ValueError(f"train.recipe must be one of {', '.join(RECIPES)}, not {recipe!r}")


def cosine(start, end, pos: float):
    """fastai's SchedCos: from ``start`` at pos 0 to ``end`` at pos 1 along half a cosine."""
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def combined_cos(pct: float, start, middle, end, pos: float):
    """fastai's combined_cos(pct, start, middle, end) at ``pos`` (0..1): start -> middle over the first
    ``pct``, middle -> end over the rest; the position within a part in float32, as fastai's tensors."""
    bounds = np.cumsum(np.array([0.0, pct, 1 - pct], dtype=np.float32), dtype=np.float32)
    here = np.float32(pos)
    part = min(int(np.flatnonzero(here >= bounds).max()), len(bounds) - 2)
    within = float((here - bounds[part]) / (bounds[part + 1] - bounds[part]))
    return cosine(start, middle, within) if part == 0 else cosine(middle, end, within)


def positions(epoch: int, epochs: int, steps: int) -> list[float]:
    """Each step's position in the fit (0..1) for epoch ``epoch`` of ``epochs``, ``steps`` steps each, summed
    as fastai's TrainEvalCallback sums it (the rounding of repeated addition included)."""
    here, out = epoch / epochs, []
    for _ in range(steps):
        out.append(here)
        here += 1.0 / (steps * epochs)
    return out


def step_hypers(phase: Phase, epoch: int, steps: int) -> list[tuple[tuple[float, ...], float]]:
    """(rate per group, momentum) of every step of ``epoch`` (within the phase), ``steps`` steps long."""
    lr_max = np.asarray(phase.lr_max, dtype=np.float64)
    out = []
    for pos in positions(epoch, phase.epochs, steps):
        rates = combined_cos(phase.pct_start, lr_max / phase.div, lr_max, lr_max / phase.div_final, pos)
        mom = combined_cos(phase.pct_start, *phase.moms, pos)
        out.append((tuple(float(r) for r in rates), float(mom)))
    return out


def locate_epoch(phases: list[Phase], epoch: int) -> tuple[int, int]:
    """(phase index, epoch within that phase) of the cell's ``epoch`` (0-based over all phases)."""
    start = 0
    for index, phase in enumerate(phases):
        if epoch < start + phase.epochs:
            return index, epoch - start
        start += phase.epochs
    raise IndexError(f"epoch {epoch} is past the plan's {start} epochs")


def total_epochs(phases: list[Phase]) -> int:
    return sum(phase.epochs for phase in phases)
