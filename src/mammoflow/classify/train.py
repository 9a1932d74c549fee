"""One training cell: a model fine-tuned on one fold of one data set at one resolution.

Training as in the paper (fastai defaults where the paper is silent): BCE on one logit, AdamW
(betas 0.9/0.99, eps 1e-5, weight decay 0.01), a one-cycle schedule (warm-up over the first quarter, cosine
down to lr/1e5), batch 64, 3 epochs, lr 1e-4, positives over-sampled 5x, horizontal flip. The cell writes
a checkpoint after every epoch and resumes from it, so a killed or preempted job loses at most one epoch.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from mammoflow.atomic import atomic_path, write_json, write_parquet
from mammoflow.classify.artifact import save_cell_artifact
from mammoflow.classify.data import (
    CellData,
    epoch_batches,
    load_cell_data,
    micro_batches,
    oversampled,
    prefetched,
    random_hflip,
)
from mammoflow.classify.metrics import binary_metrics, cell_metrics
from mammoflow.classify.models import build_model, normalize_batch
from mammoflow.classify.precision import PRECISIONS, configure_backends, logits_fp32, resolve_precision
from mammoflow.devices import pick_device
from mammoflow.progress import say

HISTORY_COLUMNS = [
    "epoch",
    "train_loss",
    "valid_loss",
    "accuracy",
    "auc",
    "precision",
    "recall",
    "f1",
    "seconds",
]


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 3
    batch_size: int = 64
    lr: float = 1e-4
    oversample_positive: int = 5
    hflip: bool = True
    pretrained: bool = True
    weights_file: str = ""
    seed: int = 0
    weight_decay: float = 0.01
    pct_start: float = 0.25
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (see precision.py)
    channels_last: bool = True
    micro_batch: int = 0  # images per forward/backward; gradients accumulate to batch_size (0: no split)
    max_steps_per_epoch: int = 0  # optimiser steps per epoch at most (0: no cap; rehearsals, benchmarks)
    deterministic: bool = False  # CUDA: deterministic kernels, no cuDNN autotuning (slower)
    keep_weights: bool = True  # false: model.json without model.safetensors (disk; no predict/cam then)

    @classmethod
    def from_config(cls, section: dict) -> TrainSettings:
        known = {k: v for k, v in section.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(section) - set(known) - {"threads"})
        if unknown:
            raise ValueError(f"unknown train setting(s): {', '.join(unknown)}")
        if known.get("precision", "auto") not in PRECISIONS:
            raise ValueError(
                f"train.precision must be one of {', '.join(PRECISIONS)}, not {known['precision']!r}"
            )
        if known.get("micro_batch", 0) < 0 or known.get("max_steps_per_epoch", 0) < 0:
            raise ValueError("train.micro_batch and train.max_steps_per_epoch must be >= 0")
        return cls(**known)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Cell:
    store: Path
    folds: Path
    model: str
    fold: int
    protocol: str
    out: Path
    synthetic: Path | None = None
    decode: dict | None = None  # the decode settings of the store's images, for the model artifact


def one_cycle(optimizer: torch.optim.Optimizer, settings: TrainSettings, steps: int):
    """fastai's fit_one_cycle schedule (warm-up, then cosine to lr/1e5; momentum 0.95 -> 0.85 -> 0.95).

    torch's OneCycleLR divides by zero when the warm-up rounds to no step (tiny folds): the warm-up is
    kept at least 1.5 steps long, and a run of fewer than 3 steps uses the constant rate.
    """
    if steps < 3:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=settings.lr,
        total_steps=steps,
        pct_start=min(max(settings.pct_start, 1.5 / steps), 0.9),
        div_factor=25.0,
        final_div_factor=1e5,
        base_momentum=0.85,
        max_momentum=0.95,
    )


class Trainer:
    """The model, optimiser and schedule of a cell, and the two loops over its data."""

    def __init__(self, model: nn.Module, settings: TrainSettings, device: torch.device, steps: int) -> None:
        self.settings, self.device = settings, device
        self.precision = resolve_precision(device, settings.precision)
        self.scaler = self.precision.scaler(device)
        self.pin = device.type == "cuda"  # pinned host memory: the copies to the GPU are truly asynchronous
        self.memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
        self.model = model.to(device, memory_format=self.memory_format)
        self.loss = nn.BCEWithLogitsLoss()
        self.optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=settings.lr,
            betas=(0.9, 0.99),
            eps=1e-5,
            weight_decay=settings.weight_decay,
            # One fused kernel for all parameters: on a CPU 5-7x faster than PyTorch's default per-tensor
            # loop, which took a third of a resnet152 step (bench/optimizer.py)
            fused=device.type in ("cpu", "cuda") or None,
        )
        self.schedule = one_cycle(self.optimizer, settings, steps)

    @property
    def bf16(self) -> bool:
        return self.precision.name == "bf16"

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
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for part in micro_batches(len(y), self.settings.micro_batch):
            loss = self.loss(self._logits(x[part]), y[part])
            share = (part.stop - part.start) / len(y)
            self.scaler.scale(loss * share).backward()
            total += loss.detach() * share
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()
        return total

    @torch.no_grad()
    def predict(self, data: CellData, positions: np.ndarray, batch_size: int) -> np.ndarray:
        self.model.eval()
        probabilities = []
        order = np.sort(positions)
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        for images, _ in prefetched(data, batches, pin=self.pin):
            probabilities.append(torch.sigmoid(self._logits(self._inputs(images))).cpu().numpy())
        result = np.concatenate(probabilities) if probabilities else np.empty(0, np.float32)
        back = np.empty_like(result)
        back[np.argsort(positions, kind="stable")] = result  # in the caller's order
        return back


def _bce(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if len(y) else 0.0


def run_cell(cell: Cell, settings: TrainSettings, device: str = "auto", threads: int = 0) -> dict:
    """Train and validate one cell; write metrics.json, predictions.parquet, history.csv and the model
    artifact (model.safetensors + model.json, classify/artifact.py)."""
    started = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    backend = configure_backends(dev, settings.deterministic)
    cell.out.mkdir(parents=True, exist_ok=True)
    data = load_cell_data(cell.store, cell.folds, cell.protocol, cell.fold, cell.synthetic)
    res = data.real.shape[1]
    labels = data.labels
    train_positions = oversampled(data.train, labels, settings.oversample_positive)
    batch_size = min(settings.batch_size, len(train_positions))
    steps_per_epoch = len(epoch_batches(train_positions, batch_size, 0))
    if settings.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, settings.max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise ValueError(f"{cell.store}: fold {cell.fold} leaves {len(train_positions)} training images")
    torch.manual_seed(settings.seed)
    model, weights = build_model(cell.model, res, settings.pretrained, settings.weights_file)
    trainer = Trainer(model, settings, dev, settings.epochs * steps_per_epoch)
    say(
        f"{cell.model} {res}px fold {cell.fold} ({cell.protocol}): {len(data.train)} training images "
        f"({len(train_positions)} with {settings.oversample_positive}x positives), "
        f"{len(data.valid)} validation; "
        f"weights {weights.source}; {dev.type} {trainer.precision.name} ({trainer.precision.reason}); "
        f"batch {batch_size} in micro-batches of {settings.micro_batch or batch_size}; "
        f"{steps_per_epoch} steps per epoch"
    )

    checkpoint_path = cell.out / "checkpoint.pt"
    history, first_epoch = _resume(checkpoint_path, trainer, settings)
    train_seconds, train_images = 0.0, 0
    valid_y = labels[data.valid]
    for epoch in range(first_epoch, settings.epochs):
        epoch_started = time.perf_counter()
        torch.manual_seed(settings.seed * 1000 + epoch)  # dropout etc.: the same after a resume
        batches = epoch_batches(train_positions, batch_size, settings.seed * 1000 + epoch)[:steps_per_epoch]
        train_loss, seen = trainer.train_epoch(data, batches, flip_seed=settings.seed * 1000 + epoch)
        train_seconds += time.perf_counter() - epoch_started
        train_images += seen
        probabilities = trainer.predict(data, data.valid, max(batch_size, 64))
        scores = binary_metrics(valid_y, probabilities)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "valid_loss": _bce(valid_y, probabilities),
                **{k: scores[k] for k in ("accuracy", "auc", "precision", "recall", "f1")},
                "seconds": time.perf_counter() - epoch_started,
            }
        )
        say(
            f"epoch {epoch + 1}/{settings.epochs}: "
            + ", ".join(f"{k} {v:.4f}" for k, v in history[-1].items() if isinstance(v, float))
        )
        _save_checkpoint(checkpoint_path, trainer, settings, history, epoch + 1)

    if first_epoch >= settings.epochs:  # resumed after the last epoch: nothing validated in this run yet
        probabilities = trainer.predict(data, data.valid, max(batch_size, 64))
    # else: the last epoch's validation pass already holds them (the model has not changed since)
    predictions = data.table.iloc[data.valid][
        ["image_id", "patient_id", "laterality", "view", "cancer", "source", "fold"]
    ].reset_index(drop=True)
    predictions["probability"] = probabilities.astype(np.float64)
    metrics, warnings = cell_metrics(predictions)
    if cell.protocol == "paper" and (predictions["source"] == "synthetic").any():
        real = predictions[predictions["source"] == "real"]
        metrics["real_only"], _ = cell_metrics(real)
        warnings.append(
            "paper protocol: synthetic images are part of this validation fold (as in the study); "
            "`real_only` gives the metrics without them"
        )
    for warning in warnings:
        say(f"warning: {warning}")
    summary = {
        "model": cell.model,
        "resolution": res,
        "protocol": cell.protocol,
        "fold": cell.fold,
        "store": str(cell.store),
        "synthetic": str(cell.synthetic) if cell.synthetic else None,
        "weights": weights.source,
        "weights_notice": weights.notice,
        "device": str(dev),
        **run_record(trainer, settings, batch_size, steps_per_epoch, backend),
        "torch_threads": torch.get_num_threads(),
        "settings": asdict(settings),
        "train_images": len(data.train),
        "train_images_oversampled": len(train_positions),
        "valid_images": len(data.valid),
        "train_images_per_second": train_images / train_seconds if train_seconds else None,
        "seconds": time.perf_counter() - started,
        "metrics": metrics,
        "warnings": warnings,
    }
    _write_outputs(cell, trainer, settings, weights.source, res, predictions, history, summary)
    checkpoint_path.unlink(missing_ok=True)
    return summary


def run_record(trainer: Trainer, settings: TrainSettings, batch: int, steps: int, backend: dict) -> dict:
    """How the cell ran (metrics.json): precision, batch shapes, backend flags, peak memory."""
    record = {
        "precision": trainer.precision.name,
        "precision_reason": trainer.precision.reason,
        "effective_batch": batch,
        "micro_batch": min(settings.micro_batch or batch, batch),
        "steps_per_epoch": steps,
        "steps_capped": bool(settings.max_steps_per_epoch),
        **backend,
        "peak_host_memory_mib": peak_host_memory_mib(),
    }
    if trainer.device.type == "cuda":
        record["peak_cuda_memory_mib"] = torch.cuda.max_memory_allocated(trainer.device) / 2**20
    return record


def peak_host_memory_mib() -> float:
    """This process's peak resident memory (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _resume(path: Path, trainer: Trainer, settings: TrainSettings) -> tuple[list[dict], int]:
    if not path.is_file():
        return [], 0
    state = torch.load(path, map_location=trainer.device, weights_only=True)
    if state.get("settings_digest") != settings.digest():
        say(f"{path}: written with other settings; starting afresh")
        return [], 0
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.schedule.load_state_dict(state["schedule"])
    if "scaler" in state:
        trainer.scaler.load_state_dict(state["scaler"])
    say(f"resuming from {path} after epoch {state['epoch']}")
    return state["history"], state["epoch"]


def _save_checkpoint(
    path: Path, trainer: Trainer, settings: TrainSettings, history: list, epoch: int
) -> None:
    state = {
        "epoch": epoch,
        "history": history,
        "settings_digest": settings.digest(),
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "schedule": trainer.schedule.state_dict(),
        "scaler": trainer.scaler.state_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _write_outputs(cell, trainer, settings, weights, res, predictions, history, summary) -> None:
    write_parquet(predictions, cell.out / "predictions.parquet")
    frame = pd.DataFrame(history, columns=HISTORY_COLUMNS)
    with atomic_path(cell.out / "history.csv") as tmp:
        frame.to_csv(tmp, index=False)
    save_cell_artifact(cell, trainer.model, asdict(settings), weights, res, predictions)
    write_json(summary, cell.out / "metrics.json")
