"""One training cell: a model fine-tuned on one fold of one data set at one resolution.

Training as the paper's fastai did it (recipe.py, optimizer.py, models.py): fastai's head on a timm body,
cross-entropy over two classes, fastai's Adam with decoupled weight decay and none on norm layers and
biases, and ``train.recipe``'s schedule (``fine_tune``: one frozen epoch, then ``epochs`` unfrozen at
discriminative rates; or ``fit_one_cycle``); batch 64, lr 1e-4, positives over-sampled 5x, horizontal
flip. The cell writes a checkpoint after every epoch (or, with ``train.checkpoint_minutes``, after the
first epoch that ends that long after the last checkpoint) and resumes from it, so a killed or preempted
job loses at most one epoch (or that long and one epoch).
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

from mammoflow.atomic import atomic_path, write_json, write_parquet
from mammoflow.classify.artifact import save_cell_artifact
from mammoflow.classify.data import CellData, epoch_batches, load_cell_data, oversampled
from mammoflow.classify.metrics import binary_metrics, cell_metrics
from mammoflow.classify.models import Weights, build_model
from mammoflow.classify.precision import configure_backends
from mammoflow.classify.trainer import Trainer
from mammoflow.devices import pick_device
from mammoflow.progress import say
from mammoflow.sections import FromSection

__all__ = ["Cell", "TrainSettings", "Trainer", "run_cell"]

HISTORY_COLUMNS = [
    "epoch",
    "phase",
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
class TrainSettings(FromSection):
    """config.yaml's train section (with a model's model_settings), checked once (mammoflow.sections)."""

    SECTION = "train"

    epochs: int
    batch_size: int
    lr: float
    recipe: str  # fine_tune | fit_one_cycle (recipe.py): fastai's call of that name
    oversample_positive: int
    hflip: bool
    pretrained: bool  # the cell then needs its weights file (Cell.weights_file)
    seed: int
    weight_decay: float
    pct_start: float | None  # None: the recipe's fastai default (fine_tune 0.3, fit_one_cycle 0.25)
    precision: str  # auto | fp32 | bf16 | fp16 (see precision.py)
    channels_last: bool
    micro_batch: int  # images per forward/backward; gradients accumulate to batch_size (0: no split)
    max_steps_per_epoch: int  # optimiser steps per epoch at most (0: no cap; rehearsals, benchmarks)
    deterministic: bool  # CUDA: deterministic kernels, no cuDNN autotuning (slower)
    keep_weights: bool  # false: model.json without model.safetensors (disk; no predict/cam then)

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
    weights_file: Path | None = None  # the pretrained backbone (from the weights folder), when pretrained
    weights_tag: str = ""  # its timm <name>.<tag>


def starting_model(cell: Cell, settings: TrainSettings, res: int):
    """The cell's model as training starts, and where its weights came from. Pretrained only from the file
    the workflow found in the weights folder; random initialisation only when the settings say so."""
    if settings.pretrained and cell.weights_file is None:
        raise ValueError(
            f"{cell.model}: train.pretrained is true but no pretrained weights file was given (--weights; "
            "the workflow passes the one in the weights folder: `snakemake weights` fetches it)"
        )
    if not settings.pretrained and cell.weights_file is not None:
        raise ValueError(f"{cell.model}: a weights file was given but train.pretrained is false")
    return build_model(cell.model, res, cell.weights_file, cell.weights_tag)


def run_cell(
    cell: Cell, settings: TrainSettings, device: str = "auto", threads: int = 0, checkpoint_minutes: float = 0
) -> dict:
    """Train and validate one cell; write metrics.json, predictions.parquet, history.csv and the model
    artifact (model.safetensors + model.json, classify/artifact.py). A checkpoint is written after an
    epoch once ``checkpoint_minutes`` have passed since the last one (0: after every epoch)."""
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
    model, weights = starting_model(cell, settings, res)
    trainer = Trainer(model, settings, dev, steps_per_epoch, pretrained=settings.pretrained)
    say(
        f"{cell.model} {res}px fold {cell.fold} ({cell.protocol}): {len(data.train)} training images "
        f"({len(train_positions)} with {settings.oversample_positive}x positives), "
        f"{len(data.valid)} validation; weights {weights.label}"
        + (f" ({weights.file}, sha256 {weights.sha256[:12]})" if weights.pretrained else "")
        + f"; recipe {settings.recipe} ({' + '.join(f'{p.epochs} {p.name}' for p in trainer.phases)}); "
        f"{dev.type} {trainer.precision.name} ({trainer.precision.reason}); "
        f"batch {batch_size} in micro-batches of {settings.micro_batch or batch_size}; "
        f"{steps_per_epoch} steps per epoch"
    )
    checkpoint_path = cell.out / "checkpoint.pt"
    history, first_epoch = _resume(checkpoint_path, trainer, settings, weights)
    checkpoint = (checkpoint_path, checkpoint_minutes * 60)
    seen = _epochs(trainer, data, train_positions, batch_size, (history, first_epoch), checkpoint, weights)
    if first_epoch >= trainer.epochs:  # resumed after the last epoch: nothing validated in this run yet
        probabilities = trainer.predict(data, data.valid, max(batch_size, 64))
    else:  # the last epoch's validation pass holds them (the model has not changed since)
        probabilities = seen["probabilities"]
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
        "weights": weights.label,
        "pretrained": weights.as_dict(),
        "recipe": [asdict(phase) for phase in trainer.phases],
        "device": str(dev),
        **run_record(trainer, settings, batch_size, steps_per_epoch, backend),
        "torch_threads": torch.get_num_threads(),
        "settings": asdict(settings),
        "train_images": len(data.train),
        "train_images_oversampled": len(train_positions),
        "valid_images": len(data.valid),
        "train_images_per_second": seen["images"] / seen["seconds"] if seen["seconds"] else None,
        "seconds": time.perf_counter() - started,
        "metrics": metrics,
        "warnings": warnings,
    }
    _write_outputs(cell, trainer, settings, weights, res, predictions, seen["history"], summary)
    checkpoint_path.unlink(missing_ok=True)
    return summary


def _epochs(trainer, data: CellData, positions, batch_size, resumed, checkpoint, weights) -> dict:
    """The epochs still to run (all phases), each validated, checkpointed once ``checkpoint``'s seconds
    have passed since the last checkpoint (or the start); the history and timings."""
    settings = trainer.settings
    history, first_epoch = resumed
    checkpoint_path, checkpoint_seconds = checkpoint
    last_checkpoint = time.perf_counter()
    seconds, images, probabilities = 0.0, 0, None
    valid_y = data.labels[data.valid]
    for epoch in range(first_epoch, trainer.epochs):
        epoch_started = time.perf_counter()
        trainer.start_epoch(epoch)
        torch.manual_seed(settings.seed * 1000 + epoch)  # dropout etc.: the same after a resume
        batches = epoch_batches(positions, batch_size, settings.seed * 1000 + epoch)[
            : trainer.steps_per_epoch
        ]
        train_loss, seen = trainer.train_epoch(data, batches, flip_seed=settings.seed * 1000 + epoch)
        seconds += time.perf_counter() - epoch_started
        images += seen
        probabilities = trainer.predict(data, data.valid, max(batch_size, 64))
        scores = binary_metrics(valid_y, probabilities)
        history.append(
            {
                "epoch": epoch + 1,
                "phase": trainer.phases[trainer.phase_index].name,
                "train_loss": train_loss,
                "valid_loss": _cross_entropy(valid_y, probabilities),
                **{k: scores[k] for k in ("accuracy", "auc", "precision", "recall", "f1")},
                "seconds": time.perf_counter() - epoch_started,
            }
        )
        say(
            f"epoch {epoch + 1}/{trainer.epochs} ({history[-1]['phase']}): "
            + ", ".join(f"{k} {v:.4f}" for k, v in history[-1].items() if isinstance(v, float))
        )
        if time.perf_counter() - last_checkpoint >= checkpoint_seconds:
            _save_checkpoint(checkpoint_path, trainer, settings, weights, history, epoch + 1)
            last_checkpoint = time.perf_counter()
    return {"history": history, "seconds": seconds, "images": images, "probabilities": probabilities}


def _cross_entropy(y: np.ndarray, p: np.ndarray) -> float:
    """The validation loss: two-class cross-entropy of the positive probabilities (clipped as a float32
    softmax can be)."""
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if len(y) else 0.0


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


def _digest(settings: TrainSettings, weights: Weights) -> str:
    """What a checkpoint must have been trained with to be resumed: the settings and the starting weights."""
    return f"{settings.digest()}-{weights.sha256[:16] or 'random'}"


def _resume(
    path: Path, trainer: Trainer, settings: TrainSettings, weights: Weights
) -> tuple[list[dict], int]:
    if not path.is_file():
        return [], 0
    state = torch.load(path, map_location=trainer.device, weights_only=True)
    if state.get("settings_digest") != _digest(settings, weights):
        say(f"{path}: written with other settings or starting weights; starting afresh")
        return [], 0
    trainer.restore(state, state["epoch"])
    say(f"resuming from {path} after epoch {state['epoch']}")
    return state["history"], state["epoch"]


def _save_checkpoint(
    path: Path, trainer: Trainer, settings, weights: Weights, history: list, epoch: int
) -> None:
    state = {
        "epoch": epoch,
        "history": history,
        "settings_digest": _digest(settings, weights),
        **trainer.state(),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _write_outputs(cell, trainer, settings, weights: Weights, res, predictions, history, summary) -> None:
    write_parquet(predictions, cell.out / "predictions.parquet")
    frame = pd.DataFrame(history, columns=HISTORY_COLUMNS)
    with atomic_path(cell.out / "history.csv") as tmp:
        frame.to_csv(tmp, index=False)
    save_cell_artifact(cell, trainer.model, asdict(settings), weights, res, predictions)
    write_json(summary, cell.out / "metrics.json")
