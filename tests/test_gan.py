"""The progressive GAN: networks per stage, sampling, leakage (the stage loop and growth: test_gan_stage.py;
StyleGAN-XL's generator: test_stylegan_xl.py)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from gan_factory import SMALL, positives_of, quick, write_gan_store

from mammoflow.gan.augment import cutout, diff_augment, translation
from mammoflow.gan.data import training_positive_ids
from mammoflow.gan.network_io import load_network
from mammoflow.gan.networks import (
    Discriminator,
    GeneratorSpec,
    build_generator,
    channels,
    count_parameters,
    layer_plan,
)
from mammoflow.gan.sample import ID_BASE, SynthesisJob, chest_wall_left, generate, synthesize
from mammoflow.gan.stage_runtime import RunOptions
from mammoflow.gan.train import train_stage
from mammoflow.store import LESION_COLUMNS

QUIET = RunOptions(show_progress=False)


# Bit-identical CPU results need one thread count, the CLI runs' (--threads 1): conftest.one_thread.
pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_gan_store(tmp_path_factory.mktemp("gan_store"))


@pytest.fixture(scope="module")
def stem16(store, tmp_path_factory):
    """A trained 16 px stem (clean, fold 0): the previous stage of the growth tests."""
    out = tmp_path_factory.mktemp("stem16")
    torch.set_num_threads(1)
    return train_stage(positives_of(store), *quick(), out, options=QUIET).network


# ----------------------------------------------------------------------------------------- networks


def expected_generator_parameters(spec: GeneratorSpec) -> int:
    """Counted from the architecture's description, independently of the modules."""
    z, w, ch = spec.z_dim, spec.w_dim, lambda r: channels(r, spec.cbase, spec.cmax)
    total = (z * w + w) + (spec.map_layers - 1) * (w * w + w) + ch(4) * 4 * 4
    c = ch(4)
    starts = [(4, spec.stages[0], spec.syn_layers)] + [
        (a, b, spec.head_layers) for a, b in zip(spec.stages[:-1], spec.stages[1:], strict=True)
    ]
    for start, end, layers in starts:
        for _, res in layer_plan(start, end, layers):
            total += (w * c + c) + ch(res) * c * 9 + ch(res) + 1  # affine, weight, bias, noise strength
            c = ch(res)
        total += (w * c + c) + c + 1  # to_image: affine, 1x1 weight, bias
    return total


def expected_discriminator_parameters(res: int, cbase: int, cmax: int) -> int:
    ch = lambda r: channels(r, cbase, cmax)  # noqa: E731
    total = 2 * ch(res)
    r = res
    while r > 4:
        a, b = ch(r), ch(r // 2)
        total += (a * a * 9 + a) + (b * a * 9 + b) + b * a
        r //= 2
    c4 = ch(4)
    return total + (c4 * (c4 + 1) * 9 + c4) + (c4 * 16 * c4 + c4) + (c4 + 1)


@pytest.mark.parametrize("stages", [(16,), (16, 32), (16, 32, 128)])
def test_shapes_and_parameter_counts_per_stage(stages):
    spec = GeneratorSpec(stages, **SMALL)
    generator = build_generator(spec)
    images = generator(torch.randn(3, spec.z_dim))
    assert images.shape == (3, 1, stages[-1], stages[-1])
    assert count_parameters(generator) == expected_generator_parameters(spec)
    discriminator = Discriminator(stages[-1], spec.cbase, spec.cmax)
    assert discriminator(images).shape == (3,)
    assert count_parameters(discriminator) == expected_discriminator_parameters(
        stages[-1], spec.cbase, spec.cmax
    )
    # Frozen by default after the stem: only the newest head trains.
    generator.set_frozen(True)
    head = generator.heads[-1] if generator.heads else generator
    assert count_parameters(generator, trainable_only=True) == count_parameters(head)


def test_layer_plan_and_table1_widths():
    assert layer_plan(4, 16, 7) == [(2, 8), (2, 16)] + [(1, 16)] * 5  # the paper's stem: 7 layers
    assert layer_plan(32, 256, 4) == [(2, 64), (2, 128), (2, 256), (1, 256)]  # a 4-layer head, x8
    assert layer_plan(32, 256, 2) == [(4, 128), (2, 256)]  # fewer layers than doublings
    assert [channels(r, 16384, 256) for r in (16, 32, 64, 128, 256, 512)] == [256, 256, 256, 128, 64, 32]
    with pytest.raises(ValueError):
        GeneratorSpec((16, 48), **SMALL)


def test_augmentations_keep_shape_and_gradient():
    torch.manual_seed(0)
    x = torch.rand(6, 1, 16, 16, requires_grad=True)
    y = diff_augment(x, ("color", "translation", "cutout"))
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    shifted = translation(torch.ones(64, 1, 16, 16))
    assert (shifted == -1).any() and set(shifted.unique().tolist()) <= {-1.0, 1.0}  # filled with background
    cut = cutout(torch.ones(8, 1, 16, 16))
    assert ((cut == 0).float().mean(dim=[1, 2, 3]) > 0).all()


# ----------------------------------------------------------------------------------------- sampling


def test_sampling_is_deterministic_for_a_seed(stem16):
    generator, _ = load_network(stem16)
    a = generate(generator, 10, seed=3, batch=4)
    b = generate(generator, 10, seed=3, batch=10)
    c = generate(generator, 10, seed=4)
    assert a.dtype == np.uint8 and a.shape == (10, 16, 16)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize(("protocol", "part", "res"), [("clean", "fold1", 16), ("paper", "all", 8)])
def test_synthetic_store(stem16, tmp_path, protocol, part, res):
    manifest = synthesize(
        SynthesisJob(stem16, res, 10, tmp_path / "a", protocol, part, 5, seed=2, truncation=1.0)
    )
    synthesize(SynthesisJob(stem16, res, 10, tmp_path / "b", protocol, part, 5, seed=2, truncation=1.0))
    images = np.load(tmp_path / "a/images.npy", mmap_mode="r")
    assert images.shape == (10, res, res) and images.dtype == np.uint8
    assert (tmp_path / "a/images.npy").read_bytes() == (tmp_path / "b/images.npy").read_bytes()
    assert (tmp_path / "a/contact_sheet.png").stat().st_size > 500
    stored = pd.read_parquet(tmp_path / "a/manifest.parquet")
    pd.testing.assert_frame_equal(stored, manifest)
    expected = ["row", "image_id", "patient_id", "laterality", "view", "cancer", "source", *LESION_COLUMNS,
                "lesion_kind"] + (["fold"] if protocol == "paper" else [])  # fmt: skip
    assert list(stored.columns) == expected
    assert stored["row"].tolist() == list(range(10))
    assert stored["image_id"].is_unique and (stored["image_id"] >= ID_BASE).all()
    assert (stored["patient_id"] < 0).all() and stored["patient_id"].is_unique
    assert (stored["cancer"] == 1).all() and (stored["source"] == "synthetic").all()
    assert (stored["view"] == "SYN").all() and stored[LESION_COLUMNS].isna().all().all()
    left = chest_wall_left(np.asarray(images))
    assert (stored["laterality"] == np.where(left, "L", "R")).all()  # laterality is what the image shows
    if protocol == "paper":
        assert sorted(stored["fold"].value_counts().tolist()) == [2, 2, 2, 2, 2]  # balanced
    summary = json.loads((tmp_path / "a/summary.json").read_text())
    assert summary["images"] == 10 and summary["stage"] == 16


# ----------------------------------------------------------------------------------------- leakage


def test_clean_gan_never_sees_a_validation_positive(store, tmp_path):
    manifest = pd.read_parquet(store / "32/manifest.parquet")
    folds = pd.read_parquet(store / "folds.parquet")
    clean = folds[folds["protocol"] == "clean"].set_index("image_id")["fold"]
    positives = set(manifest.loc[manifest["cancer"] == 1, "image_id"])
    for k in (0, 1):
        validation = {i for i in positives if clean[i] == k}
        training = positives - validation
        assert validation and training
        ids = set(training_positive_ids(manifest, folds, "clean", f"fold{k}"))
        assert ids == training
        result = train_stage(positives_of(store, part=f"fold{k}"), *quick(kimg=0.04), tmp_path / f"fold{k}",
                             options=QUIET)  # fmt: skip
        seen = pd.read_parquet(result.network.parent / "training_images.parquet")
        shown = set(seen.loc[seen["shown"] > 0, "image_id"])
        assert shown == training and not shown & validation  # every training positive, no validation one
    assert set(training_positive_ids(manifest, folds, "paper", "all")) == positives
    with pytest.raises(ValueError, match="part must be"):
        training_positive_ids(manifest, folds, "clean", "all")


def test_positives_are_turned_chest_wall_left(store):
    loaded = positives_of(store, protocol="paper", part="all", res=32)
    assert chest_wall_left(loaded.images).all()
    assert positives_of(store, protocol="paper", part="all", res=16).images.shape[1:] == (16, 16)
