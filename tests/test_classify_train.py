"""The training cell: models, data path, learning, determinism, resume, and where synthetic images go."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from store_factory import write_store

from mammoflow.classify.data import epoch_batches, load_cell_data, oversampled, random_hflip
from mammoflow.classify.models import PAPER_MODELS, build_model
from mammoflow.classify.train import Cell, Trainer, TrainSettings, run_cell
from mammoflow.decode import decode_shard, index_shards
from mammoflow.folds import make_folds
from mammoflow.phantom import PhantomSpec, generate
from mammoflow.store import build_store
from mammoflow.store_integrity import write_manifest

torch.set_num_threads(2)


@pytest.mark.parametrize("res", [32, 64])
@pytest.mark.parametrize("name", PAPER_MODELS)
def test_every_model_trains_a_step(name, res):
    model, weights = build_model(name, res, pretrained=False)
    assert weights.source == "random"
    trainer = Trainer(model, TrainSettings(lr=1e-3), torch.device("cpu"), steps=2)
    before = [p.detach().clone() for p in model.parameters()][-1]
    x = trainer._inputs(np.random.default_rng(0).integers(0, 255, (2, res, res), dtype=np.uint8))
    logits = trainer._logits(x)
    assert logits.shape == (2,)
    loss = trainer.loss(logits, torch.tensor([0.0, 1.0]))
    loss.backward()
    trainer.optimizer.step()
    assert not torch.equal(before, list(model.parameters())[-1])


def test_pretrained_without_network_falls_back_with_notice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, weights = build_model("resnet18", 32, pretrained=True)
    assert weights.source == "random" and "could not be loaded" in weights.notice
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        build_model("resnet18", 32, weights_file="/nowhere.pth")


def test_unreachable_hub_falls_back_without_retrying(monkeypatch):
    import mammoflow.classify.models as models

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(models, "hub_reachable", lambda: False)
    _, weights = build_model("resnet18", 32, pretrained=True)
    assert weights.source == "random" and "unreachable" in weights.notice
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"  # what the hub client then sees: no 46 s of retries


def test_local_weights_file_is_used(tmp_path):
    """A timm-format RGB checkpoint on disk: loaded with the first conv summed to one channel."""
    import timm

    rgb = timm.create_model("resnet18", pretrained=False)
    torch.save(rgb.state_dict(), tmp_path / "resnet18.pth")
    model, weights = build_model("resnet18", 32, weights_file=str(tmp_path / "resnet18.pth"))
    assert weights.source.startswith("imagenet (file")
    torch.testing.assert_close(model.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))
    torch.testing.assert_close(model.layer1[0].conv1.weight, rgb.layer1[0].conv1.weight)


def test_oversampling_and_batches():
    labels = np.array([0, 0, 1, 0, 1, 0], np.float32)
    train = np.array([0, 1, 2, 3, 4])
    picked = oversampled(train, labels, 5)
    assert len(picked) == 5 + 4 * 2 and (labels[picked] == 1).sum() == 10
    batches = epoch_batches(picked, 4, seed=1)
    assert all(len(b) == 4 and (np.diff(b) >= 0).all() for b in batches)  # full, sorted for the memory map
    assert len(batches) == 3  # 13 positions: the last partial batch is dropped
    assert [b.tolist() for b in batches] == [b.tolist() for b in epoch_batches(picked, 4, seed=1)]


def test_hflip_mirrors_about_half_exactly():
    x = torch.arange(200 * 4 * 4, dtype=torch.float32).view(200, 1, 4, 4)
    out = random_hflip(x, torch.Generator().manual_seed(0))
    flipped = [bool(torch.equal(out[i], x[i].flip(-1))) for i in range(200)]
    same = [bool(torch.equal(out[i], x[i])) for i in range(200)]
    assert all(f or s for f, s in zip(flipped, same, strict=True))
    assert 70 < sum(flipped) < 130


@pytest.fixture(scope="module")
def easy_store(tmp_path_factory):
    """Phantom data where large, bright masses decide the label: a model must learn this quickly."""
    root = tmp_path_factory.mktemp("easy")
    spec = PhantomSpec(
        patients=150,
        prevalence=0.5,
        size_scale=0.1,
        mass_contrast=0.3,
        mass_diameter_mm=(30.0, 45.0),
        calcification_fraction=0.0,
    )
    generate(root / "data", spec, workers=2, progress=False)
    decode_shard(root / "data", root / "shard", 0, 1, working_size=256, workers=2)
    index = index_shards([root / "shard"], root / "index.parquet", root / "errors.parquet")
    build_store(root / "index.parquet", "processed", 64, root / "store", workers=2)
    make_folds(index[["image_id", "patient_id", "cancer"]], 2, 0).to_parquet(root / "folds.parquet")
    return root


def _cell(root, out, **kw):
    return Cell(
        store=root / "store",
        folds=root / "folds.parquet",
        model="resnet18",
        fold=0,
        protocol="clean",
        out=out,
        **kw,
    )


def _blob_store(path, n=240, res=32, seed=0):
    """Noise images; positives carry a bright 6x6 square somewhere: any working pipeline learns this."""
    rng = np.random.default_rng(seed)
    images = rng.integers(60, 140, (n, res, res)).astype(np.uint8)
    cancer = (np.arange(n) % 3 == 0).astype(int)
    for i in np.flatnonzero(cancer):
        y, x = rng.integers(2, res - 8, 2)
        images[i, y : y + 6, x : x + 6] = 230
    manifest = write_store(path, images, cancer)
    make_folds(manifest, 2, 0).to_parquet(path / "folds.parquet")
    return path


def test_pipeline_learns_a_planted_blob(tmp_path):
    root = _blob_store(tmp_path / "blob")
    cell = Cell(
        store=root,
        folds=root / "folds.parquet",
        model="resnet18",
        fold=0,
        protocol="clean",
        out=tmp_path / "cell",
    )
    # 60 optimiser steps: enough from random initialisation (15 steps at batch 32 are not).
    settings = TrainSettings(epochs=4, batch_size=8, lr=2e-3, pretrained=False, oversample_positive=1)
    assert run_cell(cell, settings, threads=2)["metrics"]["auc"] > 0.9


def test_short_run_learns_on_easy_phantom(easy_store, tmp_path):
    """Large masses, 30 % brighter than their tissue, 600 images, random init: clearly better than chance
    (0.66 measured; deterministic on CPU), though dense tissue hides some masses, as it does in screening."""
    settings = TrainSettings(epochs=5, batch_size=16, lr=2e-3, pretrained=False, oversample_positive=1)
    summary = run_cell(_cell(easy_store, tmp_path / "cell"), settings, threads=2)
    assert summary["metrics"]["auc"] > 0.6, summary["metrics"]
    history = pd.read_csv(tmp_path / "cell/history.csv")
    assert len(history) == 5 and history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert not (tmp_path / "cell/checkpoint.pt").exists()


def test_cell_is_deterministic_and_resumes(tmp_path, monkeypatch):
    root = _blob_store(tmp_path / "blob")
    settings = TrainSettings(epochs=2, batch_size=16, lr=1e-3, pretrained=False)

    def cell(name):
        return Cell(
            store=root,
            folds=root / "folds.parquet",
            model="resnet18",
            fold=0,
            protocol="clean",
            out=tmp_path / name,
        )

    first = run_cell(cell("a"), settings, threads=2)
    second = run_cell(cell("b"), settings, threads=2)
    assert first["metrics"] == second["metrics"]
    pa, pb = (pd.read_parquet(tmp_path / f"{c}/predictions.parquet") for c in "ab")
    pd.testing.assert_frame_equal(pa, pb)

    # Killed during epoch 2: the re-run resumes from the epoch-1 checkpoint and ends where (a) ended.
    original = Trainer.train_epoch
    calls = []

    def dies_in_second_epoch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("preempted")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", dies_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_cell(cell("c"), settings, threads=2)
    assert (tmp_path / "c/checkpoint.pt").exists() and not (tmp_path / "c/metrics.json").exists()
    monkeypatch.setattr(Trainer, "train_epoch", original)
    resumed = run_cell(cell("c"), settings, threads=2)
    assert resumed["metrics"] == first["metrics"]
    assert pd.read_csv(tmp_path / "c/history.csv")["train_loss"].tolist() == pytest.approx(
        pd.read_csv(tmp_path / "a/history.csv")["train_loss"].tolist()
    )


def _synthetic_store(root, path):
    """Three copies of real positives posing as synthetic images, with paper-protocol folds."""
    images = np.load(root / "store/images.npy")
    manifest = pd.read_parquet(root / "store/manifest.parquet")
    rows = manifest.index[manifest["cancer"] == 1][:3]
    path.mkdir()
    np.save(path / "images.npy", images[rows])
    manifest = pd.DataFrame(
        {
            "row": range(3),
            "image_id": 9_000_000_000 + np.arange(3),
            "patient_id": -1 - np.arange(3),
            "laterality": "L",
            "view": "SYN",
            "cancer": 1,
            "source": "synthetic",
            "fold": [0, 1, 0],
        }
    )
    write_manifest(manifest, path)
    return path


@pytest.mark.parametrize("protocol", ["clean", "paper"])
def test_synthetic_images_validate_only_in_paper(easy_store, tmp_path, protocol):
    synthetic = _synthetic_store(easy_store, tmp_path / "syn")
    data = load_cell_data(easy_store / "store", easy_store / "folds.parquet", protocol, 0, synthetic)
    sources = data.table["source"].to_numpy()
    assert (sources[data.train] == "synthetic").sum() == (3 if protocol == "clean" else 1)
    assert (sources[data.valid] == "synthetic").sum() == (0 if protocol == "clean" else 2)
    gathered = data.gather(np.sort(np.concatenate([data.train, data.valid])))
    assert gathered.shape[0] == len(data.table)


def test_settings_reject_unknown_keys():
    with pytest.raises(ValueError, match="unknown train setting"):
        TrainSettings.from_config({"epoch": 3})
    assert json.loads(json.dumps(TrainSettings().__dict__))["batch_size"] == 64


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 9, 40])
def test_one_cycle_schedule_for_any_number_of_steps(steps):
    from mammoflow.classify.train import one_cycle

    optimizer = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=1e-3)
    schedule = one_cycle(optimizer, TrainSettings(lr=1e-3), steps)
    rates = []
    for _ in range(steps):
        optimizer.step()
        rates.append(optimizer.param_groups[0]["lr"])
        schedule.step()
    assert max(rates) <= 1e-3 + 1e-12
    if steps >= 9:  # warm-up then annealing: the peak is inside, the end far below it
        assert 0 < int(np.argmax(rates)) < steps - 1 and rates[-1] < 0.05 * max(rates)
