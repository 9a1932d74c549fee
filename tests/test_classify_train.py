"""The training cell: models, data path, learning, determinism, resume, and where synthetic images go."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from store_factory import write_store

from mammoflow.atomic import file_sha256
from mammoflow.classify import recipe
from mammoflow.classify.data import epoch_batches, load_cell_data, oversampled, random_hflip
from mammoflow.classify.models import PAPER_MODELS, build_model
from mammoflow.classify.train import Cell, Trainer, TrainSettings, run_cell, starting_model
from mammoflow.decode import decode_shard, index_shards
from mammoflow.folds import make_folds
from mammoflow.limits import DecodeSettings
from mammoflow.phantom import PhantomSpec, generate
from mammoflow.store import build_store
from mammoflow.store_integrity import write_manifest

torch.set_num_threads(2)


@pytest.mark.parametrize("res", [32, 64])
@pytest.mark.parametrize("name", PAPER_MODELS)
def test_every_model_trains_a_step(name, res):
    model, weights = build_model(name, res)
    assert weights.label == "random" and not weights.pretrained
    settings = TrainSettings.configured(lr=1e-3, recipe="fit_one_cycle", pretrained=False)
    trainer = Trainer(model, settings, torch.device("cpu"), steps_per_epoch=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    images = np.random.default_rng(0).integers(0, 255, (2, res, res), dtype=np.uint8)
    logits = trainer._logits(trainer._inputs(images))
    assert logits.shape == (2, 2)  # fastai's head: two classes
    trainer.train_step(trainer._inputs(images), torch.tensor([0.0, 1.0]))
    moved = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert "head.8.weight" in moved and any(n.startswith("body.") for n in moved)


def test_pretrained_only_from_the_file_it_is_given(tmp_path):
    """No file, no pretrained cell: never a silent start from random; a missing file is named."""
    cell = Cell(tmp_path, tmp_path / "folds.parquet", "resnet18", 0, "clean", tmp_path / "out")
    with pytest.raises(ValueError, match=r"train\.pretrained is true but no pretrained weights file"):
        starting_model(cell, TrainSettings.configured(pretrained=True), 32)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        build_model("resnet18", 32, "/nowhere.pth", "resnet18.tv_in1k")
    with pytest.raises(ValueError, match="are not resnet18's"):
        build_model("resnet18", 32, __file__, "resnet34.a1_in1k")
    with pytest.raises(ValueError, match="cannot be loaded into resnet18"):
        build_model("resnet18", 32, __file__, "resnet18.tv_in1k")  # not a weights file at all


def test_local_weights_file_is_used(tmp_path):
    """A timm-format RGB checkpoint on disk (a weights-only torch file, as the tag's original URL serves it):
    loaded with the first conv summed to one channel, and recorded with its SHA-256."""
    import timm

    rgb = timm.create_model("resnet18", pretrained=False)
    torch.save(rgb.state_dict(), tmp_path / "model.pth")
    model, weights = build_model("resnet18", 32, tmp_path / "model.pth", "resnet18.tv_in1k")
    assert weights.label == "imagenet:resnet18.tv_in1k" and weights.sha256 == file_sha256(
        tmp_path / "model.pth"
    )
    torch.testing.assert_close(model.body.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))
    torch.testing.assert_close(model.body.layer1[0].conv1.weight, rgb.layer1[0].conv1.weight)


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
    """A small phantom store through the real data path (learning on it: tests/test_learning.py)."""
    root = tmp_path_factory.mktemp("easy")
    spec = PhantomSpec.configured(
        patients=16,
        prevalence=0.5,
        size_scale=0.1,
        mass_contrast=0.3,
        mass_diameter_mm=(30.0, 45.0),
        calcification_fraction=0.0,
    )
    generate(root / "data", spec, workers=2, progress=False)
    decode_shard(
        root / "data", root / "shard", 0, 1, settings=DecodeSettings.configured(working_size=256), workers=2
    )
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


def test_cell_is_deterministic_and_resumes(tmp_path, monkeypatch):
    """fine_tune's 1 + 2 epochs; killed in the second (a new phase: fresh optimizer state after the resume)
    and, in a second run, in the third (the same phase: the optimizer state comes from the checkpoint)."""
    root = _blob_store(tmp_path / "blob")
    settings = TrainSettings.configured(
        epochs=2, batch_size=16, lr=1e-3, recipe="fine_tune", pretrained=False
    )

    def cell(name):  # timm's smallest ResNet: determinism and resuming do not depend on the network's size
        return Cell(
            store=root,
            folds=root / "folds.parquet",
            model="test_resnet",
            fold=0,
            protocol="clean",
            out=tmp_path / name,
        )

    first = run_cell(cell("a"), settings, threads=2)
    second = run_cell(cell("b"), settings, threads=2)
    assert first["metrics"] == second["metrics"]
    pa, pb = (pd.read_parquet(tmp_path / f"{c}/predictions.parquet") for c in "ab")
    pd.testing.assert_frame_equal(pa, pb)

    history = pd.read_csv(tmp_path / "a/history.csv")
    assert history["phase"].tolist() == ["frozen", "unfrozen", "unfrozen"]

    # Killed during epoch 2 (or 3): the re-run resumes from the last checkpoint and ends where (a) ended.
    original = Trainer.train_epoch
    for killed_in, name in ((2, "c"), (3, "d")):
        calls = []

        def dies(self, *args, killed_in=killed_in, calls=calls, **kwargs):
            calls.append(1)
            if len(calls) == killed_in:
                raise KeyboardInterrupt("preempted")
            return original(self, *args, **kwargs)

        monkeypatch.setattr(Trainer, "train_epoch", dies)
        with pytest.raises(KeyboardInterrupt):
            run_cell(cell(name), settings, threads=2)
        assert (tmp_path / f"{name}/checkpoint.pt").exists() and not (
            tmp_path / f"{name}/metrics.json"
        ).exists()
        monkeypatch.setattr(Trainer, "train_epoch", original)
        resumed = run_cell(cell(name), settings, threads=2)
        assert resumed["metrics"] == first["metrics"], killed_in
        assert pd.read_csv(tmp_path / f"{name}/history.csv")["train_loss"].tolist() == pytest.approx(
            history["train_loss"].tolist()
        )

    # train.checkpoint_minutes: no checkpoint before that long has passed, so a cell killed in its third
    # epoch starts over, to the same result.
    calls = []

    def dies_in_third(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("preempted")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", dies_in_third)
    with pytest.raises(KeyboardInterrupt):
        run_cell(cell("e"), settings, threads=2, checkpoint_minutes=60)
    assert not (tmp_path / "e/checkpoint.pt").exists()
    monkeypatch.setattr(Trainer, "train_epoch", original)
    assert run_cell(cell("e"), settings, threads=2, checkpoint_minutes=60)["metrics"] == first["metrics"]


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
    with pytest.raises(ValueError, match=r"train: unknown setting\(s\) epoch"):
        TrainSettings.configured(epoch=3)
    with pytest.raises(ValueError, match=r"train: missing setting\(s\) batch_size, channels_last"):
        TrainSettings.from_config({"epochs": 3})  # every value comes from config.yaml, none from the code
    assert json.loads(json.dumps(TrainSettings.configured().__dict__))["batch_size"] == 64


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 9, 40])
def test_one_cycle_schedule_for_any_number_of_steps(steps):
    """fastai's schedule needs no minimum length (torch's OneCycleLR divided by zero on tiny folds)."""
    (phase,) = recipe.plan("fit_one_cycle", 1, 1e-3, pretrained=False)
    rates = [r[1] for r, _ in recipe.step_hypers(phase, 0, steps)]
    assert len(rates) == steps and max(rates) <= 1e-3 + 1e-12 and rates[0] == pytest.approx(1e-3 / 25)
    if steps >= 9:  # warm-up then annealing: the peak is inside, the end far below it (fastai's last step is
        # one step short of the annealing's end: at 9 steps 5.5 % of the peak, at 40 steps 0.4 %)
        assert 0 < int(np.argmax(rates)) < steps - 1 and rates[-1] < 0.06 * max(rates)


def test_recipes_are_fastais_calls():
    frozen, unfrozen = recipe.plan("fine_tune", 3, 1e-4, pretrained=True)
    assert (frozen.epochs, frozen.frozen, frozen.pct_start, frozen.div) == (1, True, 0.99, 25.0)
    assert frozen.lr_max == pytest.approx((1e-5, 1e-4))  # slice(lr): the body at lr/10
    assert (unfrozen.epochs, unfrozen.frozen, unfrozen.pct_start, unfrozen.div) == (3, False, 0.3, 5.0)
    assert unfrozen.lr_max == pytest.approx((5e-7, 5e-5))  # slice(lr/2/100, lr/2)
    assert [p.frozen for p in recipe.plan("fit_one_cycle", 3, 1e-4, pretrained=True)] == [True]
    assert [p.frozen for p in recipe.plan("fit_one_cycle", 3, 1e-4, pretrained=False)] == [False]
    with pytest.raises(ValueError, match=r"train\.recipe: 'fit' is not one of"):
        TrainSettings.configured(recipe="fit")
