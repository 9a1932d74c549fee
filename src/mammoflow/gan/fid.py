"""Fréchet distance between generated and real positives: FID when Inception-v3 weights can be had.

Weights (``gan.inception``):

- a path: a local Inception-v3 state dict. Either the TF-Inception weights FID is defined with (the file
  pytorch-fid distributes, 1008 classes: its pool features are those of the reference implementation,
  so with 50,000 generated images the value is FID50k), or torchvision's ImageNet Inception-v3 (1000
  classes: an FID, but not the reference network, so not comparable with published FID50k values);
- ``auto``: that TF-Inception file from torch's hub cache, downloaded there when the network allows;
- ``none``, or no weights found: a *substitute*, the Fréchet distance between hand-made image features
  (intensity histogram, radial power spectrum, coarse layout, gradient statistics). It is labelled as such
  in fid.json (``metric: "substitute-FD"``, ``comparable_to_fid50k: false``) and must not be read as FID.

Images are compared as the generator was trained (chest wall on the left); grayscale images enter
Inception as three equal channels, resized to 299 px.
"""

from __future__ import annotations

import socket
import time
import types
import warnings
from pathlib import Path

import cv2
import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from mammoflow.progress import say

TF_INCEPTION_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
SUBSTITUTE_NOTE = (
    "NOT FID: Inception-v3 weights were not available, so this is the Fréchet distance between hand-made "
    "features (intensity histogram, radial power spectrum, 4x4 layout, gradient statistics). It tracks "
    "progress within this project only and cannot be compared with FID or FID50k values anywhere."
)


# ------------------------------------------------------------------------------------------- statistics


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2) between two Gaussians."""
    diff = mu1 - mu2
    with warnings.catch_warnings():
        # Few images (tests, tiny presets) give singular covariances; the offset below handles them.
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(len(sigma1)) * 1e-6
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, np.float64)
    sigma = np.cov(features, rowvar=False) if len(features) > 1 else np.zeros((features.shape[1],) * 2)
    return features.mean(axis=0), np.atleast_2d(sigma)


# ------------------------------------------------------------------------------------------- substitute


def substitute_features(images: np.ndarray, size: int = 64) -> np.ndarray:
    """48 numbers per image (uint8 N x r x r): histogram, spectrum, layout, gradients."""
    out = []
    yy, xx = np.mgrid[:size, :size]
    radius = np.hypot(yy - size // 2, xx - size // 2)
    edges = np.geomspace(1, size // 2, 13)
    band = np.digitize(radius, edges) - 1  # -1 (DC) .. 12 (corners)
    for image in images:
        method = cv2.INTER_AREA if image.shape[-1] > size else cv2.INTER_LINEAR
        x = cv2.resize(np.asarray(image), (size, size), interpolation=method).astype(np.float64) / 255.0
        histogram = np.histogram(x, bins=16, range=(0, 1))[0] / x.size
        power = np.abs(np.fft.fftshift(np.fft.fft2(x - x.mean()))) ** 2
        spectrum = [np.log10(power[band == b].mean() + 1e-10) for b in range(12)]
        layout = x.reshape(4, size // 4, 4, size // 4).mean(axis=(1, 3)).ravel()
        gy, gx = np.gradient(x)
        gradient = np.hypot(gx, gy)
        out.append(
            np.concatenate(
                [histogram, spectrum, layout, [x.mean(), x.std(), gradient.mean(), gradient.std()]]
            )
        )
    return np.asarray(out)


# ------------------------------------------------------------------------------------------- inception


def _pool_avg(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _tf_inception_a(self, x):
    b5 = self.branch5x5_2(self.branch5x5_1(x))
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_pool_avg(x))], 1)


def _tf_inception_c(self, x):
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    d = self.branch7x7dbl_1(x)
    for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
        d = layer(d)
    return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_pool_avg(x))], 1)


def _tf_inception_e(self, x, pool):
    b3 = self.branch3x3_1(x)
    b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
    d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
    return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pool(x))], 1)


def build_inception(state: dict) -> tuple[torch.nn.Module, str]:
    """torchvision's Inception-v3 holding ``state``; for the TF weights, with the reference's pooling."""
    from torchvision.models import inception_v3

    classes = int(state["fc.weight"].shape[0])
    model = inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=classes)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or [k for k in unexpected if not k.startswith("AuxLogits.")]:
        raise ValueError(
            f"not an Inception-v3 state dict (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    kind = "torchvision"
    if classes == 1008:
        # The TF graph FID is defined on pools without padding in the average (A, C, first E blocks) and
        # a max pool in the last E block; torchvision's blocks differ there.
        kind = "tf-inception"
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
            block = getattr(model, name)
            block.forward = types.MethodType(_tf_inception_a, block)
        for name in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
            block = getattr(model, name)
            block.forward = types.MethodType(_tf_inception_c, block)
        model.Mixed_7b.forward = types.MethodType(
            lambda self, x: _tf_inception_e(self, x, _pool_avg), model.Mixed_7b
        )
        model.Mixed_7c.forward = types.MethodType(
            lambda self, x: _tf_inception_e(self, x, lambda y: F.max_pool2d(y, 3, 1, 1)), model.Mixed_7c
        )
    return model.eval().requires_grad_(False), kind


_TRUNK = (
    "Conv2d_1a_3x3",
    "Conv2d_2a_3x3",
    "Conv2d_2b_3x3",
    "maxpool1",
    "Conv2d_3b_1x1",
    "Conv2d_4a_3x3",
    "maxpool2",
    "Mixed_5b",
    "Mixed_5c",
    "Mixed_5d",
    "Mixed_6a",
    "Mixed_6b",
    "Mixed_6c",
    "Mixed_6d",
    "Mixed_6e",
    "Mixed_7a",
    "Mixed_7b",
    "Mixed_7c",
    "avgpool",
)


@torch.no_grad()
def inception_features(model, kind: str, images: np.ndarray, device, batch: int = 50) -> np.ndarray:
    """2048 pool features per image (uint8 N x r x r)."""
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(np.asarray(images[start : start + batch])).to(device).float()[:, None] / 255.0
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
        if kind == "tf-inception":
            x = x * 2 - 1
        else:
            mean = torch.tensor([0.485, 0.456, 0.406], device=device)[None, :, None, None]
            std = torch.tensor([0.229, 0.224, 0.225], device=device)[None, :, None, None]
            x = (x - mean) / std
        for name in _TRUNK:
            x = getattr(model, name)(x)
        out.append(x.flatten(1).double().cpu().numpy())
    return np.concatenate(out)


def inception_weights(setting: str) -> tuple[dict | None, str]:
    """(state dict or None, where it came from or why there is none)."""
    if setting in ("", "none"):
        return None, "gan.inception is 'none'"
    if setting != "auto":
        path = Path(setting)
        if not path.is_file():
            raise FileNotFoundError(f"gan.inception: {setting}: no such file")
        return torch.load(path, map_location="cpu", weights_only=True), str(path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(TF_INCEPTION_URL).name
    if not cached.is_file():
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(20)
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(TF_INCEPTION_URL, str(cached), progress=False)
        except Exception as exc:  # no network, proxy, HTTP error: all mean "no weights"
            return None, f"download of {TF_INCEPTION_URL} failed ({type(exc).__name__}: {exc})"
        finally:
            socket.setdefaulttimeout(previous)
    return torch.load(cached, map_location="cpu", weights_only=True), str(cached)


class FeatureExtractor:
    """Inception-v3 pool features when weights can be had (loaded once), else the substitute's."""

    def __init__(self, setting: str, device: str | torch.device = "cpu"):
        self.device = device
        state, self.source = inception_weights(setting)
        self.model, self.kind = (None, None) if state is None else build_inception(state)
        if self.model is None:
            say(f"FID: no Inception-v3 weights ({self.source}); writing the substitute, which is not FID")
        else:
            self.model.to(device)

    def features(self, images: np.ndarray) -> np.ndarray:
        if self.model is None:
            return substitute_features(images)
        return inception_features(self.model, self.kind, images, self.device)

    def describe(self, generated: int) -> dict:
        if self.model is None:
            return {
                "metric": "substitute-FD",
                "comparable_to_fid50k": False,
                "feature_network": "none (hand-made features)",
                "why_no_inception": self.source,
                "note": SUBSTITUTE_NOTE,
            }
        if self.kind == "tf-inception":
            note = "FID with the reference TF-Inception weights"
            if generated < 50_000:
                note += f", on {generated} generated images (FID50k uses 50,000)"
            metric = "FID"
        else:
            note = "torchvision's ImageNet Inception-v3, not the reference TF-Inception: not FID50k"
            metric = "FID-torchvision-inception"
        return {
            "metric": metric,
            "comparable_to_fid50k": bool(self.kind == "tf-inception" and generated >= 50_000),
            "feature_network": f"Inception-v3 pool3 ({self.kind} weights from {self.source})",
            "note": note,
        }

    def report(self, generated: np.ndarray, real: np.ndarray) -> dict:
        """A dict for fid.json: the distance between two uint8 image sets, and what it is."""
        started = time.perf_counter()
        g, r = self.features(generated), self.features(real)
        return {
            "generated_images": len(generated),
            "real_images": len(real),
            **self.describe(len(generated)),
            "value": round(frechet_distance(*gaussian(g), *gaussian(r)), 4),
            "seconds": round(time.perf_counter() - started, 2),
        }


def fid_report(
    generated: np.ndarray, real: np.ndarray, setting: str, device: str | torch.device = "cpu"
) -> dict:
    return FeatureExtractor(setting, device).report(generated, real)
