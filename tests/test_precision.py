"""Precision, micro-batching and what a cell records about them (classify/precision.py, train.py)."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from store_factory import write_store
from torch import nn

from mammoflow.classify import precision as prec
from mammoflow.classify.data import micro_batches
from mammoflow.classify.models import build_model, positive_probability
from mammoflow.classify.train import Cell, Trainer, TrainSettings, run_cell
from mammoflow.folds import make_folds

torch.set_num_threads(2)


class NoBatchNorm(nn.Module):
    """A small convolutional classifier with group norm (its gradient is a sum over images), split into a
    body and a two-class head as the cell's classifiers are."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU()
        )
        self.head = nn.Linear(16, 2)

    def forward_features(self, x):
        return self.body(x)

    def forward_head(self, x):
        return self.head(x.mean(dim=(2, 3)))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def _step(model, settings, images, labels):
    trainer = Trainer(model, settings, torch.device("cpu"), steps_per_epoch=10)
    loss = trainer.train_step(trainer._inputs(images), torch.from_numpy(labels))
    return float(loss), {n: p.grad.clone() for n, p in model.named_parameters()}, model


def test_micro_batched_step_equals_the_plain_step_without_batch_norm():
    torch.manual_seed(0)
    model = NoBatchNorm()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (10, 24, 24), dtype=np.uint8)
    labels = (np.arange(10) % 2).astype(np.float32)
    plain = TrainSettings.configured(
        lr=1e-2, precision="fp32", channels_last=False, recipe="fit_one_cycle", pretrained=False
    )
    micro = replace(plain, micro_batch=3)  # 3+3+4
    loss_a, grads_a, model_a = _step(copy.deepcopy(model), plain, images, labels)
    loss_b, grads_b, model_b = _step(copy.deepcopy(model), micro, images, labels)
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-6)
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-6)
    # And the split did happen: one micro-batch alone gives another gradient.
    _, grads_c, _ = _step(copy.deepcopy(model), plain, images[:3], labels[:3])
    assert not torch.allclose(grads_a["head.weight"], grads_c["head.weight"])


def test_micro_batches_cover_the_batch_and_never_leave_one_image():
    assert micro_batches(10, 0) == [slice(0, 10)]
    assert micro_batches(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert micro_batches(9, 4) == [slice(0, 4), slice(4, 9)]  # 4 + 4 + 1 -> 4 + 5
    assert micro_batches(64, 16) == [slice(i, i + 16) for i in range(0, 64, 16)]
    assert micro_batches(5, 8) == [slice(0, 5)]


def test_validation_probabilities_are_not_rounded_to_bf16():
    """bf16 autocast on the whole network rounds each logit to 8 significant bits: a few hundred distinct
    probabilities for thousands of images. The cell's head runs in fp32, so they stay distinct."""
    model, _ = build_model("resnet18", 32)
    model.eval()
    settings = TrainSettings.configured(precision="bf16", channels_last=False)
    trainer = Trainer(model, settings, torch.device("cpu"), steps_per_epoch=1)
    images = np.random.default_rng(1).integers(0, 255, (1000, 32, 32), dtype=np.uint8)
    with torch.no_grad():
        x = trainer._inputs(images)
        cell = positive_probability(trainer._logits(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rounded = positive_probability(model(x))  # the whole network under autocast
    assert len(torch.unique(rounded)) < 900  # the defect this guards against (796 of 1000 here)
    assert len(torch.unique(cell)) > 990
    assert trainer.precision.name == "bf16"


def test_precision_choice(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert prec.resolve_precision(cpu, "fp32").name == "fp32"
    monkeypatch.setattr(prec, "cpu_bf16_native", lambda: False)
    assert prec.resolve_precision(cpu, "auto").name == "fp32"
    monkeypatch.setattr(prec, "cpu_bf16_native", lambda: True)
    assert prec.resolve_precision(cpu, "auto").name == "bf16"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        prec.resolve_precision(cpu, "fp16")
    # A GPU without native bf16 (V100, T4): fp16 with loss scaling, and bf16 on request is refused.
    monkeypatch.setattr(prec, "cuda_bf16_native", lambda device: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    chosen = prec.resolve_precision(cuda, "auto")
    assert chosen.name == "fp16" and "loss scaling" in chosen.reason
    with pytest.raises(ValueError, match="V100 has no native bf16"):
        prec.resolve_precision(cuda, "bf16")
    monkeypatch.setattr(prec, "cuda_bf16_native", lambda device: True)
    assert prec.resolve_precision(cuda, "auto").name == "bf16"
    with pytest.raises(ValueError, match=r"train\.precision: 'fp8' is not one of"):
        TrainSettings.configured(precision="fp8")


def test_fp16_loss_scaling_step_matches_fp32():
    """The fp16 path (autocast + GradScaler) takes the fp32 step, within fp16's rounding (run on CPU)."""
    torch.manual_seed(0)
    model = NoBatchNorm()
    images = np.random.default_rng(2).integers(0, 255, (8, 16, 16), dtype=np.uint8)
    labels = (np.arange(8) % 2).astype(np.float32)
    settings = TrainSettings.configured(
        lr=1e-2, precision="fp32", channels_last=False, recipe="fit_one_cycle", pretrained=False
    )
    _, grads_32, _ = _step(copy.deepcopy(model), settings, images, labels)
    half = Trainer(copy.deepcopy(model), settings, torch.device("cpu"), steps_per_epoch=10)
    half.precision = prec.Precision("fp16", "test")
    half.scaler = half.precision.scaler(torch.device("cpu"))
    assert half.scaler.is_enabled()
    half.train_step(half._inputs(images), torch.from_numpy(labels))
    for name, p in half.model.named_parameters():
        torch.testing.assert_close(p.grad, grads_32[name], rtol=0.05, atol=2e-3)


def _store(path, n=48, res=32):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, res, res)).astype(np.uint8)
    manifest = write_store(path, images, (np.arange(n) % 3 == 0).astype(int), first_id=100)
    make_folds(manifest, 2, 0).to_parquet(path / "folds.parquet")
    return path


def test_cell_records_precision_micro_batch_and_effective_batch(tmp_path):
    store = _store(tmp_path / "store")
    cell = Cell(store, store / "folds.parquet", "resnet18", 0, "clean", tmp_path / "cell")
    settings = TrainSettings.configured(
        epochs=1, batch_size=8, micro_batch=4, max_steps_per_epoch=2, pretrained=False, precision="fp32"
    )
    run_cell(cell, settings, threads=2)
    metrics = json.loads((tmp_path / "cell/metrics.json").read_text())
    assert metrics["precision"] == "fp32" and metrics["precision_reason"] == "asked for"
    assert metrics["effective_batch"] == 8 and metrics["micro_batch"] == 4
    assert metrics["steps_per_epoch"] == 2 and metrics["steps_capped"] is True
    assert metrics["deterministic"] is True and metrics["cudnn_benchmark"] is False  # CPU
    assert metrics["peak_host_memory_mib"] > 0


def test_gan_checks_bf16_support_instead_of_assuming_it(monkeypatch):
    from mammoflow.gan.train import gan_precision

    assert gan_precision(True, torch.device("cpu")) == (False, "fp32 (CPU)")
    assert gan_precision(False, torch.device("cuda"))[0] is False
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    on, note = gan_precision(True, torch.device("cuda"))
    assert not on and "T4 has no native bf16" in note
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert gan_precision(True, torch.device("cuda")) == (True, "bf16 autocast")
