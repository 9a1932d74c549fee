"""The progressive GAN: networks per stage, growth and freezing, exact resume, learning, sampling, leakage."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from mammoflow.folds import make_folds
from mammoflow.gan import settings as gan_settings
from mammoflow.gan.augment import cutout, diff_augment, translation
from mammoflow.gan.data import Positives, load_positives, training_positive_ids
from mammoflow.gan.fid import (
    FeatureExtractor,
    frechet_distance,
    gaussian,
)
from mammoflow.gan.network_io import load_network
from mammoflow.gan.networks import (
    Discriminator,
    GeneratorSpec,
    build_generator,
    channels,
    count_parameters,
    grow_generator,
    layer_plan,
)
from mammoflow.gan.sample import ID_BASE, chest_wall_left, generate, synthesize
from mammoflow.gan.train import Interrupted, TrainSettings, train_stage
from mammoflow.store import LESION_COLUMNS
from mammoflow.store_integrity import write_manifest

SMALL = dict(cbase=256, cmax=32, syn_layers=3, head_layers=2, z_dim=16, w_dim=32, map_layers=2)


@pytest.fixture(autouse=True)
def _one_thread():
    # Same arithmetic in every test and in the CLI subprocesses (--threads 1): CPU results are only
    # bit-identical for the same thread count.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------- fixtures


def breast_like(n: int, res: int, seed: int) -> np.ndarray:
    """A simple distribution: a bright half-disc against the left edge, its radius and brightness vary."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:res, :res] / res
    out = np.zeros((n, res, res), np.uint8)
    for i in range(n):
        radius, cy, level = rng.uniform(0.45, 0.8), rng.uniform(0.4, 0.6), rng.uniform(150, 230)
        inside = (xx**2 + (yy - cy) ** 2) < radius**2
        out[i] = np.where(inside, level * (1 - 0.5 * xx / radius), 0).clip(0, 255).astype(np.uint8)
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A 32 px store: 12 patients x 2 images (a third positive), folds (k=2), a manifest without lesions."""
    root = tmp_path_factory.mktemp("gan_store")
    n = 24
    images = breast_like(n, 32, seed=1)
    laterality = np.array(["L", "R"] * (n // 2))
    images[laterality == "R"] = images[laterality == "R"][:, :, ::-1]  # chest wall on the right for R
    manifest = pd.DataFrame(
        {
            "row": np.arange(n),
            "image_id": 1000 + np.arange(n) * 7,
            "patient_id": 500 + np.arange(n) // 2,
            "laterality": laterality,
            "view": "CC",
            "cancer": np.isin(np.arange(n) // 2, [0, 2, 4, 6]).astype(np.int8),
            "source": "real",
        }
    )
    (root / "32").mkdir()
    np.save(root / "32/images.npy", images)
    write_manifest(manifest, root / "32")
    make_folds(manifest, k=2, seed=3).to_parquet(root / "folds.parquet")
    return root


def positives_of(store, protocol="clean", part="fold0", res=16):
    return load_positives(store / "32", store / "folds.parquet", protocol, part, res)


def quick(kimg=0.064, **kw):
    return TrainSettings(kimg=kimg, batch=8, snapshots=3, grid=4, checkpoint_kimg=0.016, **kw)


@pytest.fixture(scope="module")
def stem16(store, tmp_path_factory):
    """A trained 16 px stem (clean, fold 0): the previous stage of the growth tests."""
    out = tmp_path_factory.mktemp("stem16")
    spec = GeneratorSpec((16,), **SMALL)
    torch.set_num_threads(1)
    return train_stage(positives_of(store), spec, quick(), out, show_progress=False).network


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
        GeneratorSpec((16, 48))


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


# ----------------------------------------------------------------------------------------- growth


def test_growth_loads_previous_weights_and_starts_where_it_left_off(stem16):
    small, payload = load_network(stem16)
    grown = grow_generator(payload["state"], small.spec, 32)
    grown_state = grown.state_dict()
    for key, value in payload["state"].items():
        assert torch.equal(grown_state[key], value), key
    assert {k for k in grown_state if k not in payload["state"]} == {
        k for k in grown_state if k.startswith("heads.0.")
    }
    # A new head's image layer starts at zero: the grown generator draws the previous images, larger.
    z = torch.randn(4, small.spec.z_dim)
    with torch.no_grad():
        before = torch.nn.functional.interpolate(
            small(z, noise_mode="const"), scale_factor=2, mode="bilinear"
        )
        after = grown(z, noise_mode="const")
    assert torch.allclose(before, after, atol=1e-5)


@pytest.mark.parametrize("freeze", [True, False])
def test_frozen_layers_stay_frozen(store, stem16, tmp_path, freeze):
    spec = GeneratorSpec((16, 32), **SMALL)
    result = train_stage(positives_of(store, res=32), spec, quick(kimg=0.032, freeze=freeze), tmp_path,
                         previous=stem16, show_progress=False)  # fmt: skip
    before = torch.load(stem16, weights_only=True)["state"]
    after = torch.load(result.network, weights_only=True)["state"]
    earlier = [k for k in before if not k.endswith("noise_const")]
    unchanged = [k for k in earlier if torch.equal(before[k], after[k])]
    if freeze:
        assert unchanged == earlier  # mapping, stem (and its w_avg) exactly as loaded
    else:
        assert len(unchanged) < len(earlier) / 2  # fine-tuning moves the earlier layers too
    new = [k for k in after if k.startswith("heads.0.") and k.endswith("weight")]
    assert all(not torch.equal(after[k], torch.zeros_like(after[k])) for k in new)  # the head learned


# ----------------------------------------------------------------------------------------- resume


def _outputs(folder):
    state = torch.load(folder / "network.pt", weights_only=True)["state"]
    lines = (folder / "stats.jsonl").read_text().splitlines()
    stats = [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]
    return (
        state,
        stats,
        (folder / "snapshots.png").read_bytes(),
        pd.read_parquet(folder / "training_images.parquet"),
    )


def _same(a, b):
    assert a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])
    assert a[1] == b[1] and a[2] == b[2]
    pd.testing.assert_frame_equal(a[3], b[3])


def test_resume_equals_uninterrupted(store, stem16, tmp_path):
    spec = GeneratorSpec((16, 32), **SMALL)
    positives = positives_of(store, res=32)
    settings = quick(kimg=0.096)  # 12 steps, a checkpoint every 2
    train_stage(positives, spec, settings, tmp_path / "straight", previous=stem16, show_progress=False)
    with pytest.raises(Interrupted):  # stopped after step 7: the checkpoint is at step 6, step 7 is redone
        train_stage(positives, spec, settings, tmp_path / "killed", previous=stem16, show_progress=False,
                    stop_after_step=7)  # fmt: skip
    assert (tmp_path / "killed/resume.pt").exists() and not (tmp_path / "killed/network.pt").exists()
    result = train_stage(positives, spec, settings, tmp_path / "killed", previous=stem16, show_progress=False)
    assert result.resumed_from_step == 6
    assert not (tmp_path / "killed/resume.pt").exists()
    _same(_outputs(tmp_path / "straight"), _outputs(tmp_path / "killed"))


def test_killed_process_resumes_to_the_same_result(store, stem16, tmp_path):
    """A real SIGKILL of `mammoflow gan-stage`, then a second run: the same files as one uninterrupted run."""
    gan = {"stages": [16, 32], "kimg": [0.064, 0.12], **SMALL, "batch": 8, "snapshots": 3, "grid": 4,
           "checkpoint_kimg": 0.016, "seed": 0}  # fmt: skip
    stage = gan_settings.stage_settings(gan, 32)
    command = [sys.executable, "-m", "mammoflow", "gan-stage", "--store", str(store / "32"),
               "--folds", str(store / "folds.parquet"), "--protocol", "clean", "--part", "fold0",
               "--stage", "32", "--previous", str(stem16), "--out", str(tmp_path / "killed"),
               "--settings", json.dumps(stage), "--threads", "1"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resume = tmp_path / "killed/resume.pt"
    deadline = time.monotonic() + 60
    while not resume.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert resume.exists() and not (tmp_path / "killed/network.pt").exists()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in done.stderr

    from mammoflow.gan.cli import specs_from_settings

    spec, settings = specs_from_settings(stage)
    meta = {"label": "clean fold0"}  # the CLI's label: it is in the snapshot figure's title
    train_stage(positives_of(store, res=32), spec, settings, tmp_path / "straight", previous=stem16,
                show_progress=False, meta=meta)  # fmt: skip
    _same(_outputs(tmp_path / "straight"), _outputs(tmp_path / "killed"))


def test_a_checkpoint_of_other_settings_is_not_resumed(store, tmp_path):
    spec = GeneratorSpec((16,), **SMALL)
    with pytest.raises(Interrupted):
        train_stage(positives_of(store), spec, quick(), tmp_path, show_progress=False, stop_after_step=3)
    result = train_stage(positives_of(store), spec, quick(seed=5), tmp_path, show_progress=False)
    assert result.resumed_from_step == 0


# ----------------------------------------------------------------------------------------- learning


def test_short_training_moves_generated_statistics_toward_the_real_ones(tmp_path):
    real = breast_like(96, 16, seed=7)
    positives = Positives(real, np.arange(len(real), dtype=np.int64), 16, "half-discs")
    spec = GeneratorSpec((16,), **SMALL)
    extractor = FeatureExtractor("none")

    def distance(generator):
        drawn = generate(generator, 96, seed=11)
        return frechet_distance(
            *gaussian(extractor.features(drawn)), *gaussian(extractor.features(real))
        ), drawn

    torch.manual_seed(0)
    before, drawn_before = distance(build_generator(spec).eval())
    settings = TrainSettings(kimg=2.4, batch=16, snapshots=2, grid=2, checkpoint_kimg=100, ema_kimg=0.5)
    result = train_stage(positives, spec, settings, tmp_path, show_progress=False)
    generator, _ = load_network(result.network)
    after, drawn_after = distance(generator)
    print(f"substitute FD before {before:.2f}, after {after:.2f}")
    assert after < 0.5 * before, (before, after)
    # Simple statistics, not only the distance: brightness and the breast on the left edge.
    real_mean = real.mean()
    assert abs(drawn_after.mean() - real_mean) < abs(drawn_before.mean() - real_mean)
    assert chest_wall_left(drawn_after).mean() > 0.8


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
    manifest = synthesize(stem16, res, 10, tmp_path / "a", protocol, part, folds=5, seed=2)
    synthesize(stem16, res, 10, tmp_path / "b", protocol, part, folds=5, seed=2)
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
        result = train_stage(positives_of(store, part=f"fold{k}"), GeneratorSpec((16,), **SMALL),
                             quick(kimg=0.04), tmp_path / f"fold{k}", show_progress=False)  # fmt: skip
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
