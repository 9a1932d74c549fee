"""Grad-CAM without input gradients (explain/gradcam.py): the same maps, no graph before the target layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM
from test_cam import positive_head

from mammoflow.classify.models import PAPER_MODELS, build_model, normalize_batch
from mammoflow.explain import gradcam
from mammoflow.explain.gradcam import grad_cam_maps, target_layer

torch.set_num_threads(2)


def _images(n=3, res=64):
    rng = np.random.default_rng(0)
    images = rng.integers(40, 120, (n, res, res)).astype(np.uint8)
    images[0, 4:20, 6:22] = 230
    images[-1, 40:58, 38:60] = 230
    return images


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_maps_equal_grad_cam_with_input_gradients(name):
    """The way it was (input requiring grad, the whole graph kept) and the way it is give the same maps."""
    torch.manual_seed(0)
    model = positive_head(build_model(name, 64)[0])
    model.eval()
    layer, _ = target_layer(model, name)
    images = _images()
    x = normalize_batch(torch.from_numpy(images)).requires_grad_(True)
    with GradCAM(model, [layer]) as reference_cam:
        reference = reference_cam(x, targets=[gradcam.PositiveScore()] * len(images))
    model.zero_grad(set_to_none=True)
    got = grad_cam_maps(model, layer, images, batch_size=3, show_progress=False)
    np.testing.assert_allclose(got.maps, reference, atol=1e-4)
    # Nothing before the target layer took part in a backward pass; the weights are trainable again after.
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_graph_starts_at_the_target_layer():
    torch.manual_seed(0)
    model, _ = build_model("resnet18", 64)
    model.eval().requires_grad_(False)
    seen = {}

    def note(_module, _inputs, output):
        seen["layer3"] = output.requires_grad

    handle = model.body.layer4.register_forward_hook(gradcam._graph_from_here)
    probe = model.body.layer3.register_forward_hook(note)
    with torch.enable_grad():
        logits = model(torch.zeros(2, 1, 64, 64))
    handle.remove(), probe.remove()
    assert seen["layer3"] is False and logits.requires_grad  # graph from layer4 on only


def test_a_batch_that_does_not_fit_is_split(monkeypatch):
    """CUDA out of memory on batches above 2 images: the batch is halved until it fits, same maps."""
    torch.manual_seed(0)
    model = positive_head(build_model("resnet18", 64)[0])
    layer, _ = target_layer(model, "resnet18")
    images = _images(5)
    whole = grad_cam_maps(model, layer, images, batch_size=5, show_progress=False)
    original = gradcam.RawPeakGradCAM.__call__

    def small_card(self, x, *args, **kwargs):
        if len(x) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated card)")
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(gradcam.RawPeakGradCAM, "__call__", small_card)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    split = grad_cam_maps(model, layer, images, batch_size=5, show_progress=False)
    np.testing.assert_allclose(split.maps, whole.maps, atol=1e-4)
    np.testing.assert_allclose(split.probabilities, whole.probabilities, rtol=1e-5)
