"""GAN settings helpers, batch order and the FID code paths (no training)."""

import numpy as np
import pytest
import torch
from test_gan import breast_like

from mammoflow.gan import settings as gan_settings
from mammoflow.gan.fid import FeatureExtractor, build_inception, frechet_distance, inception_features
from mammoflow.gan.train import batch_indices


def test_batches_cover_the_data_evenly():
    rows = np.concatenate([batch_indices(10, 4, step, seed=0) for step in range(5)])  # 2 epochs
    assert sorted(rows[:10]) == list(range(10)) and sorted(rows[10:]) == list(range(10))
    assert np.array_equal(batch_indices(10, 4, 3, 0), batch_indices(10, 4, 3, 0))


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
