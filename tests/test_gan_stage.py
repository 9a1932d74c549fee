"""The stage loop: what trains, exact resume (in-process and after a real SIGKILL) with both discriminators,
the projected discriminator's weight files, what a stage records, and learning."""

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
from gan_factory import (
    SMALL,
    SMALL_FEATURES,
    breast_like,
    positives_of,
    quick,
    stage,
    write_gan_store,
    write_timm_weights,
)

from mammoflow.gan.data import Positives
from mammoflow.gan.fid import FeatureExtractor, frechet_distance, gaussian
from mammoflow.gan.network_io import load_network
from mammoflow.gan.sample import chest_wall_left, generate
from mammoflow.gan.stage_runtime import Interrupted, RunOptions
from mammoflow.gan.stage_state import stage_generator
from mammoflow.gan.stylegan_xl import build_generator
from mammoflow.gan.train import train_stage

QUIET = RunOptions(show_progress=False)
# A projected stage small enough for a test: one small feature network, batch 2, path lengths regularised
# from the first step (so that the loss's own state, the running mean path length, is resumed too).
PROJECTED = dict(discriminator="projected", feature_networks=SMALL_FEATURES, batch=2, snapshots=3, grid=2,
                 pl_start_kimg=0, checkpoint_kimg=0.004)  # fmt: skip


# Bit-identical CPU results need one thread count, the CLI runs' (--threads 1): conftest.one_thread.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_gan_store(tmp_path_factory.mktemp("gan_store"))


@pytest.fixture(scope="module")
def stem16(store, tmp_path_factory):
    torch.set_num_threads(1)
    return train_stage(
        positives_of(store), *quick(), tmp_path_factory.mktemp("stem16"), options=QUIET
    ).network


@pytest.fixture(scope="module")
def lite0_file(tmp_path_factory):
    return write_timm_weights("tf_efficientnet_lite0", tmp_path_factory.mktemp("weights"))


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


# ----------------------------------------------------------------------------------------- what trains


def test_a_grown_stage_starts_from_the_previous_network(stem16):
    """The previous stage's EMA generator, grown by one head as StyleGAN-XL's SuperresGenerator grows it:
    what carries over is the previous network's; head-only training leaves the mapping and stem frozen."""
    spec, _ = quick((16, 32))
    before, _ = load_network(stem16)
    grown = stage_generator(spec, stem16, head_only=True)
    previous, after = before.state_dict(), grown.state_dict()
    carried = [k for k in after if k in previous and previous[k].shape == after[k].shape]
    assert carried and all(torch.equal(previous[k], after[k]) for k in carried)
    assert {k.split(".")[1] for k in after if k not in previous} <= set(grown.head_layer_names)
    trainable = {n.split(".")[1] for n, p in grown.named_parameters() if p.requires_grad}
    assert trainable == {*grown.head_layer_names, "input"}  # StyleGAN-XL leaves the Fourier input trainable
    with pytest.raises(ValueError, match="does not grow into"):  # a stem of other settings
        stage_generator(quick((16, 32), syn_layers=4)[0], stem16, head_only=True)


@pytest.mark.parametrize("freeze", [True, False])
def test_frozen_layers_stay_frozen(store, stem16, tmp_path, freeze):
    spec, settings = quick((16, 32), kimg=0.032, freeze=freeze)
    result = train_stage(positives_of(store, res=32), spec, settings, tmp_path, stem16, options=QUIET)
    grown = stage_generator(spec, stem16, head_only=freeze).state_dict()  # as the stage began
    after = torch.load(result.network, weights_only=True)["state"]
    heads = tuple(f"synthesis.{name}." for name in spec.head_layer_names)
    stem_weights = [
        k for k in grown if k.startswith(("mapping.fc", "synthesis.L")) and not k.startswith(heads)
    ]
    unchanged = [k for k in stem_weights if torch.equal(grown[k], after[k])]
    if freeze:
        assert unchanged == stem_weights  # mapping and the stem's kept layers exactly as loaded
    else:
        assert len(unchanged) < len(stem_weights) / 2  # fine-tuning moves the earlier layers too
    head = [k for k in after if k.startswith(heads) and k.endswith("weight")]
    assert head and all(not torch.equal(after[k], grown[k]) for k in head)  # the head learned


def test_projected_stage_records_what_ran(store, tmp_path):
    spec, settings = quick(kimg=0.006, **PROJECTED, feature_weights="random")  # 3 steps of 2
    result = train_stage(positives_of(store), spec, settings, tmp_path, options=QUIET)
    payload = torch.load(result.network, weights_only=True)
    ran = payload["discriminator"]
    assert ran["kind"] == "projected" and ran["random_features"] is True and "RANDOM" in ran["label"]
    assert [n["name"] for n in ran["feature_networks"]] == SMALL_FEATURES
    assert all(n["weights"] is None for n in ran["feature_networks"])
    ticks = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert all(t["discriminator"] == ran["label"] for t in ticks)
    # Hinge loss, blur fading from sigma 2 over 300 kimg, path lengths regularised on the stem (every 4th
    # step from step 0: steps 0 only here), logits of both kinds logged.
    assert ticks[0]["blur_sigma"] == pytest.approx(2.0, abs=1e-4) and "pl_penalty" in ticks[0]
    assert {"loss_g", "loss_d", "d_real", "d_fake", "ema_beta"} <= set(ticks[-1])
    assert "r1" not in {k for t in ticks for k in t}
    torch.manual_seed(settings.seed)
    untrained = build_generator(spec).state_dict()  # the stem as the stage built it
    moved = [
        k for k, v in payload["state"].items() if k.endswith("weight") and not torch.equal(v, untrained[k])
    ]
    assert moved, "the generator did not train"


@pytest.mark.parametrize(
    "given, asked, match",
    [
        ({}, "pretrained", "gan.feature_weights: random"),
        ({"tf_efficientnet_lite0": "w.safetensors"}, "random", "weights files were given"),
        ({"deit_base_distilled_patch16_224": "w.safetensors"}, "pretrained", "not in gan.feature_networks"),
    ],
)
def test_projected_refuses_to_start_without_its_weights(store, tmp_path, given, asked, match):
    spec, settings = quick(kimg=0.002, **PROJECTED, feature_weights=asked)
    with pytest.raises(ValueError, match=match):
        train_stage(positives_of(store), spec, settings, tmp_path, feature_weights=given, options=QUIET)
    assert not (tmp_path / "network.pt").exists() and not (tmp_path / "resume.pt").exists()


def test_a_weights_file_that_is_not_the_network_is_refused(store, tmp_path, lite0_file):
    deit = "deit_tiny_distilled_patch16_224"
    spec, settings = quick(kimg=0.002, **{**PROJECTED, "feature_networks": [deit]})
    with pytest.raises(ValueError, match=f"{lite0_file}: not {deit} weights"):
        train_stage(
            positives_of(store), spec, settings, tmp_path, feature_weights={deit: lite0_file}, options=QUIET
        )


# ----------------------------------------------------------------------------------------- resume


def test_resume_equals_uninterrupted(store, stem16, tmp_path):
    """In-process (residual, a grown stage; the projected discriminator resumes after a real kill below)."""
    positives = positives_of(store, res=32)
    spec, settings = quick((16, 32), kimg=0.048)  # 6 steps of 8 (the stem's batch), a checkpoint every 2
    train_stage(positives, spec, settings, tmp_path / "straight", stem16, options=QUIET)
    with pytest.raises(Interrupted):  # stopped after step 5: the checkpoint is at step 4, step 5 is redone
        options = RunOptions(show_progress=False, stop_after_step=5)
        train_stage(positives, spec, settings, tmp_path / "killed", stem16, options=options)
    assert (tmp_path / "killed/resume.pt").exists() and not (tmp_path / "killed/network.pt").exists()
    result = train_stage(positives, spec, settings, tmp_path / "killed", stem16, options=QUIET)
    assert result.resumed_from_step == 4
    assert not (tmp_path / "killed/resume.pt").exists()
    _same(_outputs(tmp_path / "straight"), _outputs(tmp_path / "killed"))


def test_killed_projected_stage_resumes_to_the_same_result(store, tmp_path, lite0_file):
    """A real SIGKILL of `mammoflow gan-stage` (projected, its feature network from a weights file), then a
    second run: the same files, byte for byte on the networks' tensors, as one uninterrupted run. The
    checkpoint holds the heads (with their spectral-norm vectors and batch statistics), both optimisers,
    the running mean path length; the feature network is rebuilt from its file."""
    _, _, settings = stage([16], 0.006, **{**SMALL, **PROJECTED, "checkpoint_kimg": 0.002})  # 3 steps
    command = [sys.executable, "-m", "mammoflow", "gan-stage", "--store", str(store / "32"),
               "--folds", str(store / "folds.parquet"), "--protocol", "clean", "--part", "fold0",
               "--stage", "16", "--out", str(tmp_path / "killed"), "--settings", json.dumps(settings),
               "--feature-weights", f"tf_efficientnet_lite0={lite0_file}", "--threads", "1"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resume = tmp_path / "killed/resume.pt"
    deadline = time.monotonic() + 120
    while not resume.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert resume.exists() and not (tmp_path / "killed/network.pt").exists()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in done.stderr

    from mammoflow.gan.cli import specs_from_settings

    spec, stage_settings = specs_from_settings(settings)
    options = RunOptions(show_progress=False, meta={"label": "clean fold0"})  # the CLI's snapshot title
    train_stage(positives_of(store), spec, stage_settings, tmp_path / "straight",
                feature_weights={"tf_efficientnet_lite0": lite0_file}, options=options)  # fmt: skip
    _same(_outputs(tmp_path / "straight"), _outputs(tmp_path / "killed"))
    ran = torch.load(tmp_path / "killed/network.pt", weights_only=True)["discriminator"]
    assert ran["random_features"] is False and ran["feature_networks"][0]["weights"] == str(lite0_file)


def test_a_checkpoint_of_other_settings_is_not_resumed(store, tmp_path):
    with pytest.raises(Interrupted):
        options = RunOptions(show_progress=False, stop_after_step=3)
        train_stage(positives_of(store), *quick(), tmp_path, options=options)
    result = train_stage(positives_of(store), *quick(seed=5), tmp_path, options=QUIET)
    assert result.resumed_from_step == 0


# ----------------------------------------------------------------------------------------- learning


def test_short_training_moves_generated_statistics_toward_the_real_ones(tmp_path):
    real = breast_like(96, 16, seed=7)
    positives = Positives(real, np.arange(len(real), dtype=np.int64), 16, "half-discs")
    spec, settings = quick(
        kimg=0.4, batch=8, snapshots=2, grid=2, checkpoint_kimg=100, ema_kimg=0.2
    )  # 50 steps
    extractor = FeatureExtractor("none")

    def distance(generator):
        drawn = generate(generator, 96, seed=11)
        return frechet_distance(
            *gaussian(extractor.features(drawn)), *gaussian(extractor.features(real))
        ), drawn

    torch.manual_seed(0)
    before, drawn_before = distance(build_generator(spec).eval())
    result = train_stage(positives, spec, settings, tmp_path, options=QUIET)
    generator, _ = load_network(result.network)
    after, drawn_after = distance(generator)
    print(f"substitute FD before {before:.2f}, after {after:.2f}")
    assert after < 0.5 * before, (before, after)
    # Simple statistics, not only the distance: brightness and the breast on the left edge.
    real_mean = real.mean()
    assert abs(drawn_after.mean() - real_mean) < abs(drawn_before.mean() - real_mean)
    assert chest_wall_left(drawn_after).mean() > 0.8
