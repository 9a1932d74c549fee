"""Fast learning checks through the real data path (phantom -> DICOM -> decode -> store -> folds -> cell).

A model that learns from images and labels that belong together, and stays at chance when they do not:
labels shifted by one row, or images whose lesions were never drawn. If the decode, the store or the
training data path ever let labels and images fall out of step, the first check fails.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mammoflow.classify.train import Cell, TrainSettings, run_cell
from mammoflow.decode import decode_shard, index_shards
from mammoflow.folds import make_folds
from mammoflow.limits import DecodeSettings
from mammoflow.phantom import PhantomSpec, generate
from mammoflow.store import build_store
from mammoflow.store_integrity import write_manifest

torch.set_num_threads(2)

# Large, dense, well-contrasted masses on small images; every other patient has cancer in one breast.
EASY = PhantomSpec.configured(
    patients=60,
    prevalence=0.5,
    seed=4,
    size_scale=0.05,
    mass_diameter_mm=(30.0, 45.0),
    mass_contrast=1.0,
    calcification_fraction=0.0,
)
# The same phantom with the lesions never drawn: the labels, scanners, benign calcifications, markers and
# text stay as they were, so only a shortcut could predict the label.
NO_LESIONS = dataclasses.replace(EASY, mass_contrast=0.0)
# timm's smallest ResNet (a test model, 0.2 M parameters): the check is about the data path, not the network.
MODEL = "test_resnet"
SETTINGS = TrainSettings.configured(
    epochs=12, batch_size=16, lr=5e-3, recipe="fit_one_cycle", pretrained=False, oversample_positive=1
)


def _store(root: Path, spec: PhantomSpec) -> Path:
    generate(root / "data", spec, workers=2, progress=False)
    decode_shard(
        root / "data", root / "shard", 0, 1, settings=DecodeSettings.configured(working_size=128), workers=2
    )
    index = index_shards([root / "shard"], root / "index.parquet", root / "errors.parquet")
    build_store(root / "index.parquet", "processed", 32, root / "store", workers=2)
    make_folds(index[["image_id", "patient_id", "cancer"]], 2, 0).to_parquet(root / "folds.parquet")
    return root


@pytest.fixture(scope="module")
def easy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _store(tmp_path_factory.mktemp("easy"), EASY)


def _auc(root: Path, out: Path, store: str = "store") -> float:
    cell = Cell(
        store=root / store, folds=root / "folds.parquet", model=MODEL, fold=0, protocol="clean", out=out
    )
    return run_cell(cell, SETTINGS, threads=2)["metrics"]["auc"]


def test_learns_when_labels_belong_to_images(easy: Path, tmp_path: Path) -> None:
    # 0.82-0.85 over seeds 0-2 (measured; lr 1e-2 for 8 epochs: 0.70-0.82)
    assert _auc(easy, tmp_path / "cell") > 0.75
    history = pd.read_csv(tmp_path / "cell/history.csv")  # one row per epoch, the loss falls
    assert len(history) == SETTINGS.epochs and history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert not (tmp_path / "cell/checkpoint.pt").exists()  # a finished cell keeps no checkpoint


def test_labels_shifted_by_one_patient_stay_at_chance(easy: Path, tmp_path: Path) -> None:
    """The store lists a patient's four images together: a shift of four rows gives every image another
    patient's label (a shift of one row would leave half of a positive breast's views labelled right)."""
    shifted = tmp_path / "shifted"
    shutil.copytree(easy / "store", shifted)
    manifest = pd.read_parquet(shifted / "manifest.parquet")
    manifest["cancer"] = np.roll(manifest["cancer"].to_numpy(), 4)
    write_manifest(manifest, shifted)  # a new store, with its own checksum
    folds = pd.read_parquet(easy / "folds.parquet")
    cancer = manifest.set_index("image_id")["cancer"]
    folds["cancer"] = cancer.loc[folds["image_id"]].to_numpy()
    root = tmp_path / "root"
    root.mkdir()
    shutil.move(shifted, root / "store")
    folds.to_parquet(root / "folds.parquet")
    assert 0.3 < _auc(root, tmp_path / "cell") < 0.7


def test_without_lesions_a_model_stays_at_chance(tmp_path: Path) -> None:
    root = _store(tmp_path / "bare", NO_LESIONS)
    assert 0.3 < _auc(root, tmp_path / "cell") < 0.7
