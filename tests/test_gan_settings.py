"""GAN settings, batch order and the FID code paths (no training)."""

import dataclasses

import numpy as np
import pytest
import torch
from gan_factory import breast_like, gan_section

from mammoflow.gan import settings as gan_settings
from mammoflow.gan.cli import specs_from_settings
from mammoflow.gan.fid import FeatureExtractor, build_inception, frechet_distance, inception_features
from mammoflow.gan.settings import StageSettings
from mammoflow.gan.train import batch_indices


def test_batches_are_slices_of_one_seeded_permutation_per_epoch():
    steps = [batch_indices(10, 4, step, seed=0) for step in range(5)]  # 20 rows: two epochs
    rows = np.concatenate(steps)
    # Independently: epoch e is the permutation seeded by (seed, e), cut into consecutive batches; a batch
    # that crosses an epoch's end takes the rest of it and the start of the next.
    epochs = [np.random.default_rng([0, e]).permutation(10) for e in (0, 1)]
    assert np.array_equal(rows, np.concatenate(epochs))
    assert np.array_equal(steps[2], np.concatenate([epochs[0][8:], epochs[1][:2]]))
    assert not np.array_equal(epochs[0], epochs[1])  # each epoch is shuffled anew
    assert not np.array_equal(batch_indices(10, 4, 0, seed=1), steps[0])  # and the seed matters
    # A step is a function of (seed, step) alone: resuming at step 3 needs nothing from steps 0-2.
    assert np.array_equal(batch_indices(10, 4, 3, seed=0), epochs[1][2:6])


def test_stage_settings_come_whole_from_the_config():
    gan = gan_section(stages=[16, 32], kimg=[5, 7])
    spec, settings = specs_from_settings(gan_settings.stage_settings(gan, 32))
    assert [s.resolution for s in spec.stages] == [16, 32] and settings.kimg == 7
    assert settings.discriminator == "projected" and settings.feature_weights == "pretrained"
    assert settings.feature_networks == ("deit_base_distilled_patch16_224", "tf_efficientnet_lite0")
    # Every field from config.yaml: the type holds no defaults of its own.
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(StageSettings))
    partial = {k: v for k, v in gan_settings.stage_settings(gan, 16).items() if k != "pl_weight"}
    with pytest.raises(ValueError, match="lack \\['pl_weight'\\]"):
        StageSettings.from_stage(partial)
    with pytest.raises(ValueError, match="discriminator 'patchgan'"):
        StageSettings.from_stage({**gan_settings.stage_settings(gan, 16), "discriminator": "patchgan"})
    assert settings.steps() == -(-7000 // settings.batch)


def test_fid_substitute_is_labelled_and_inception_path_runs():
    images = breast_like(12, 32, seed=2)
    report = FeatureExtractor("none").report(images, images)
    assert report["metric"] == "substitute-FD" and report["comparable_to_fid50k"] is False
    assert "NOT FID" in report["note"] and abs(report["value"]) < 1e-6
    mu, sigma = np.zeros(3), np.eye(3)
    assert frechet_distance(mu, sigma, mu + 1, sigma) == pytest.approx(3.0)
    # The TF-Inception code path, with random weights in the reference file's layout (1008 classes).
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    state = inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008).state_dict()
    model, kind = build_inception(state)
    assert kind == "tf-inception"
    assert inception_features(model, kind, images[:2], "cpu").shape == (2, 2048)


def test_stage_settings_and_resolutions():
    gan = {"stages": [16, 32, 256, 512], "kimg": [1, 2, 3, 4], "cbase": 16384, "synthetic_images": 5}
    assert gan_settings.stage_settings(gan, 32) == {"stages": [16, 32], "kimg": 2, "cbase": 16384}
    assert gan_settings.source_resolution(16, [256, 512]) == 256
    assert gan_settings.source_resolution(512, [256, 512]) == 512
    assert gan_settings.source_resolution(64, [32, 48]) == 48  # none as large: the largest, upsampled
    assert gan_settings.synthesis_stage(48, [16, 32, 64]) == 64
    assert gan_settings.needed_stages([256], [16, 32, 256, 512]) == [16, 32, 256]
    with pytest.raises(ValueError, match="never reach"):
        gan_settings.synthesis_stage(1024, [16, 32, 256, 512])
