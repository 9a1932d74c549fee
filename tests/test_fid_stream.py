"""Streaming FID and KID (src/mammoflow/gan/fid.py): memory, equality with the batch computation, labels."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mammoflow.gan import fid
from mammoflow.gan.sample import generate
from mammoflow.gan.stylegan_xl import StemConfig, arch_for_stages, build_generator

# StyleGAN-XL's generator at its smallest widths (its cost per image barely depends on them on a CPU).
STEM = StemConfig.configured(resolution=16, cbase=256, cmax=4, syn_layers=3, z_dim=8, w_dim=16, map_layers=1)


def small_generator(stages: list[int]):
    torch.manual_seed(0)
    return build_generator(arch_for_stages(STEM, stages, head_layers=3)).eval()


def _peak(generator: nn.Module, n: int, mode: str, real: np.ndarray) -> float:
    """Peak memory (MiB) of the arrays a gan-fid computation on ``n`` generated images holds: streamed, or the
    old way ("array": every image generated into one array first). numpy reports its allocations to
    tracemalloc, so the peak counts exactly the images and features held; a process's peak RSS moves by
    tens of MiB from run to run with the generator's transient buffers (measured), too much noise."""
    extractor = fid.FeatureExtractor("none")
    gc.collect()
    tracemalloc.start()
    try:
        if mode == "array":
            report = extractor.report(generate(generator, n, 1), real)
        else:
            report = extractor.stream_report(fid.generated_batches(generator, n, 1, batch=8), real)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report["generated_images"] == n
    return peak / 2**20


def test_peak_memory_does_not_grow_with_the_number_of_generated_images():
    """80 more images at 128 px are 1.25 MiB of uint8 if kept: the old way's peak grows by that much, the
    streamed one's by less than a fifth of it (what grows is KID's features, under 1 KiB an image; measured
    0.6 MiB for 800 more). Few images: StyleGAN-XL's generator costs ~0.07 CPU-s an image even this small."""
    g = small_generator([16, 128])
    real = np.random.default_rng(0).integers(0, 255, (64, 128, 128), dtype=np.uint8)
    small, large = _peak(g, 20, "stream", real), _peak(g, 100, "stream", real)
    kept_mib = (100 - 20) * 128 * 128 / 2**20
    assert large - small < kept_mib / 5, (small, large)
    grown = _peak(g, 100, "array", real) - _peak(g, 20, "array", real)
    assert grown > kept_mib * 0.9, grown  # the test can tell the two apart


def test_streamed_statistics_equal_the_whole_set():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    running = fid.RunningGaussian()
    for i in range(0, 500, 64):
        running.add(features[i : i + 64])
    mu, sigma = running.mean_cov()
    mu_all, sigma_all = fid.gaussian(features)
    np.testing.assert_allclose(mu, mu_all, rtol=1e-10)
    np.testing.assert_allclose(sigma, sigma_all, rtol=1e-8, atol=1e-10)


def test_generated_batches_are_the_images_generate_draws():
    g = small_generator([16, 32])
    streamed = np.concatenate(list(fid.generated_batches(g, 70, seed=3, batch=32)))
    np.testing.assert_array_equal(streamed, generate(g, 70, 3))


def test_substitute_is_labelled_with_kid_and_counts():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 255, (40, 32, 32), np.uint8), rng.integers(0, 200, (30, 32, 32), np.uint8)
    report = fid.FeatureExtractor("none").report(a, b, batch=16)
    assert report["metric"] == "substitute-FD" and report["comparable_to_fid50k"] is False
    assert report["generated_images"] == 40 and report["real_images"] == 30 and report["streamed"]
    assert report["kid"]["metric"].startswith("substitute") and report["kid"]["subset_size"] == 30
    assert report["kid"]["mean"] > 0


@pytest.fixture(scope="module")
def fidelity_weights(tmp_path_factory) -> Path:
    """A weights file in torch-fidelity's (= pytorch-fid's) TF-Inception layout, with random weights:
    the real file cannot be downloaded here."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    original = fe.FeatureExtractorInceptionV3.load_state_dict
    fe.FeatureExtractorInceptionV3.load_state_dict = lambda self, state, *a, **k: None
    saved_url = fe.load_state_dict_from_url
    fe.load_state_dict_from_url = lambda *a, **k: None
    try:
        torch.manual_seed(0)
        module = fe.FeatureExtractorInceptionV3("x", ["2048"])
    finally:
        fe.FeatureExtractorInceptionV3.load_state_dict = original
        fe.load_state_dict_from_url = saved_url
    path = tmp_path_factory.mktemp("weights") / "inception.pth"
    torch.save(nn.Module.state_dict(module), path)
    return path


def test_local_weights_file_runs_torch_fidelity_and_says_it_is_not_the_reference(fidelity_weights):
    rng = np.random.default_rng(2)
    generated, real = rng.integers(0, 255, (6, 32, 32), np.uint8), rng.integers(0, 255, (5, 32, 32), np.uint8)
    extractor = fid.FeatureExtractor(str(fidelity_weights), batch=4)
    assert extractor.kind == "torch-fidelity" and not extractor.verified
    report = extractor.report(generated, real, batch=4)
    assert report["metric"] == "FID-unverified-weights" and report["comparable_to_fid50k"] is False
    assert "TF 1.x" in report["resize"] and "NOT the reference" in report["feature_network"]
    assert report["kid"]["metric"] == "KID" and report["kid"]["subset_size"] == 5
    assert np.isfinite(report["value"])


def test_reference_weights_are_called_fid_and_fid50k_only_at_50000(fidelity_weights, monkeypatch):
    monkeypatch.setattr(fid, "_sha256", lambda path: fid.REFERENCE_SHA256_PREFIX + "0" * 56)
    extractor = fid.FeatureExtractor(str(fidelity_weights))
    assert extractor.describe(1000, 900)["metric"] == "FID"
    assert extractor.describe(1000, 900)["comparable_to_fid50k"] is False
    assert extractor.describe(50_000, 900)["comparable_to_fid50k"] is True
    assert "900 real" in extractor.describe(50_000, 900)["note"]


def test_missing_weights_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        fid.FeatureExtractor(str(tmp_path / "nowhere.pth"))
