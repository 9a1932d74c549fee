"""The model, optimizer and schedule of a training cell, and the two loops over its data.

The recipe (recipe.py) is a list of phases; each epoch belongs to one. Entering a phase freezes or
unfreezes the body and starts a fresh optimizer state, as fastai's ``freeze``/``unfreeze`` do; every step
sets each parameter group's rate and the momentum fastai would set for it (``applied`` keeps them).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mammoflow.classify import recipe
from mammoflow.classify.data import CellData, micro_batches, prefetched, random_hflip
from mammoflow.classify.models import normalize_batch, positive_probability
from mammoflow.classify.optimizer import Groups, set_hypers
from mammoflow.classify.precision import logits_fp32, resolve_precision


class Trainer:
    """One cell's training state: model, fastai's groups and phases, the optimizer of the current phase."""

    def __init__(
        self, model: nn.Module, settings, device: torch.device, steps_per_epoch: int, pretrained: bool = False
    ) -> None:
        self.settings, self.device, self.steps_per_epoch = settings, device, steps_per_epoch
        self.precision = resolve_precision(device, settings.precision)
        self.scaler = self.precision.scaler(device)
        self.pin = device.type == "cuda"  # pinned host memory: the copies to the GPU are truly asynchronous
        self.memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
        self.model = model.to(device, memory_format=self.memory_format)
        self.loss = nn.CrossEntropyLoss()  # fastai's CrossEntropyLossFlat for two classes
        self.groups = Groups.of(self.model)
        self.phases = recipe.plan(
            settings.recipe, settings.epochs, settings.lr, pretrained, settings.pct_start
        )
        self.phase_index = -1
        self.optimizer: torch.optim.AdamW | None = None
        self.hypers: list = []  # this epoch's (rates, momentum) per step
        self.step_in_epoch = 0
        self.applied: list[tuple[int, tuple[float, ...], float]] = []  # (phase, rates, momentum) per step
        self.start_epoch(0)

    @property
    def epochs(self) -> int:
        return recipe.total_epochs(self.phases)

    @property
    def bf16(self) -> bool:
        return self.precision.name == "bf16"

    def start_epoch(self, epoch: int) -> None:
        """Enter the cell's ``epoch`` (0-based over all phases): its phase, and the rates of its steps."""
        index, within = recipe.locate_epoch(self.phases, epoch)
        if index != self.phase_index:
            self.phase_index = index
            self.groups.freeze(self.phases[index].frozen)
            self.optimizer = self.groups.optimizer(self.settings.weight_decay, self.device)
        self.hypers = recipe.step_hypers(self.phases[index], within, self.steps_per_epoch)
        self.step_in_epoch = 0

    def _inputs(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(images).to(self.device, non_blocking=True)
        return normalize_batch(x).contiguous(memory_format=self.memory_format)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return logits_fp32(self.model, x, self.precision)

    def train_epoch(self, data: CellData, batches: list[np.ndarray], flip_seed: int) -> tuple[float, int]:
        self.model.train()
        flips = torch.Generator().manual_seed(flip_seed)
        # The loss stays on the device until the epoch ends: float(loss) per step would wait for the GPU.
        total, seen = torch.zeros((), device=self.device), 0
        for images, labels in prefetched(data, batches, pin=self.pin):
            x = self._inputs(images)
            if self.settings.hflip:
                x = random_hflip(x, flips)
            y = torch.as_tensor(labels).to(self.device, non_blocking=True)
            total += self.train_step(x, y) * len(labels)
            seen += len(labels)
        return float(total) / max(seen, 1), seen

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimiser step on the batch, in micro-batches whose gradients add up to the batch's.

        Each micro-batch's mean loss is weighted by its share of the batch, so the summed gradient is the
        full batch's mean-loss gradient: the same step as without micro-batching, except that batch norm
        normalises over each micro-batch (its statistics are what changes). Returns the batch's mean loss,
        on the device.
        """
        # More steps than the epoch was planned for (a caller stepping by hand) keep its last rates.
        rates, mom = self.hypers[min(self.step_in_epoch, len(self.hypers) - 1)]
        self.step_in_epoch += 1
        set_hypers(self.optimizer, rates, mom)
        self.applied.append((self.phase_index, rates, mom))
        self.optimizer.zero_grad(set_to_none=True)
        target = y.long()
        total = torch.zeros((), device=self.device)
        for part in micro_batches(len(y), self.settings.micro_batch):
            loss = self.loss(self._logits(x[part]), target[part])
            share = (part.stop - part.start) / len(y)
            self.scaler.scale(loss * share).backward()
            total += loss.detach() * share
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return total

    @torch.no_grad()
    def predict(self, data: CellData, positions: np.ndarray, batch_size: int) -> np.ndarray:
        self.model.eval()
        probabilities = []
        order = np.sort(positions)
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        for images, _ in prefetched(data, batches, pin=self.pin):
            probabilities.append(positive_probability(self._logits(self._inputs(images))).cpu().numpy())
        result = np.concatenate(probabilities) if probabilities else np.empty(0, np.float32)
        back = np.empty_like(result)
        back[np.argsort(positions, kind="stable")] = result  # in the caller's order
        return back

    def state(self) -> dict:
        return {
            "phase": self.phase_index,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def restore(self, state: dict, next_epoch: int) -> None:
        """Weights after ``next_epoch`` epochs; the optimizer's state too when the next epoch is in the same
        phase (a new phase starts from a fresh state, as it did in the uninterrupted run)."""
        self.model.load_state_dict(state["model"])
        if next_epoch < self.epochs:
            self.start_epoch(next_epoch)
        if state.get("phase") == self.phase_index:
            self.optimizer.load_state_dict(state["optimizer"])
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
