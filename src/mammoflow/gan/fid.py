"""FID and KID of generated against real positives, streamed: never all generated images in memory.

Generated images are drawn, turned into features and folded into running sums batch by batch, so the peak
memory does not depend on how many images are generated (50,000 for FID50k: 13 GB of uint8 at 512 px if
kept). FID needs only the features' running mean and covariance; KID (the unbiased kernel distance, beside
FID because FID is biased at small N and the reference set here is ~1000 positives) keeps the features of
at most ``kid_images`` generated images, a fixed bound.

Feature network (``gan.inception``; the job gets a file path or ``none``, never downloads):

- ``reference``: the rule passes the reference TF-Inception file from the weights folder
  (``weights-inception-2015-12-05-6726825d.pth``, fetched by ``snakemake weights``: the network
  StyleGAN's FID50k, clean-fid and torch-fidelity use); it runs through torch-fidelity's Inception module
  with its TF 1.x-compatible bilinear resize to 299 px, so the features are the reference's;
- a path: a weights file of the user's. torch-fidelity's/pytorch-fid's TF-Inception file (1008 classes)
  runs as above; its SHA-256 is checked against the reference's (prefix 6726825d) and the label says
  whether it matched. torchvision's ImageNet Inception-v3 (1000 classes) gives an FID of another network,
  labelled so;
- ``none``: a *substitute*, the Fréchet distance between hand-made features (intensity histogram, radial
  power spectrum, coarse layout, gradient statistics), labelled as such (``metric: "substitute-FD"``) and
  never to be read as FID.

fid.json says exactly what was computed: the metric, the network and weights, the resize, how many
generated and real images, and whether it is comparable with published FID50k values.
Grayscale images enter Inception as three equal channels.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
import scipy.linalg
import torch

from mammoflow.atomic import file_sha256
from mammoflow.gan.inception_tv import build_inception, inception_features
from mammoflow.progress import say
from mammoflow.weights.catalog import INCEPTION_SHA256_PREFIX as REFERENCE_SHA256_PREFIX

METRIC_NAMES = {  # what a value is when it is not the reference FID
    "torch-fidelity": "FID-unverified-weights",  # reference network and resize, weights of another hash
    "tf-inception": "FID-torch-resize",  # TF-Inception weights in pytorch-fid's layout, PyTorch's resize
    "torchvision": "FID-torchvision-inception",  # ImageNet Inception-v3 of torchvision: another network
}
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


# ------------------------------------------------------------------------------------------- streaming


class RunningGaussian:
    """Mean and covariance of features added batch by batch (float64 sums: D + D^2 numbers, any N)."""

    def __init__(self) -> None:
        self.count, self.total, self.outer = 0, None, None

    def add(self, features: np.ndarray) -> None:
        f = np.asarray(features, np.float64)
        if self.total is None:
            self.total, self.outer = np.zeros(f.shape[1]), np.zeros((f.shape[1], f.shape[1]))
        self.count += len(f)
        self.total += f.sum(axis=0)
        self.outer += f.T @ f

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        mu = self.total / self.count
        if self.count < 2:
            return mu, np.zeros_like(self.outer)
        return mu, (self.outer - self.count * np.outer(mu, mu)) / (self.count - 1)


def kid(generated: np.ndarray, real: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0):
    """KID as torch-fidelity computes it (cubic polynomial kernel, unbiased MMD^2 over random subsets);
    the subset size shrinks to the smaller set when either has fewer images. (mean, std, subset size)."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    size = min(subset_size, len(generated), len(real))
    if size < 2:
        return None, None, size
    out = kid_features_to_metric(
        torch.from_numpy(np.asarray(generated, np.float64)),
        torch.from_numpy(np.asarray(real, np.float64)),
        kid_subsets=subsets,
        kid_subset_size=size,
        rng_seed=seed,
        verbose=False,
    )
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD], size


# ------------------------------------------------------------------------------------------- networks


_sha256 = file_sha256  # (one implementation: mammoflow.atomic)


def find_weights(setting: str) -> tuple[Path | None, str]:
    """(weights file or None, where it came from or why there is none). ``setting``: a file, or none."""
    if setting in ("", "none"):
        return None, "gan.inception is 'none'"
    if setting in ("auto", "reference"):
        raise ValueError(
            f"--inception {setting}: give the file (the workflow passes the reference file from the weights "
            "folder; jobs never download it)"
        )
    path = Path(setting)
    if not path.is_file():
        raise FileNotFoundError(f"gan.inception: {setting}: no such file")
    return path, str(path)


def _fidelity_inception(path: Path):
    """torch-fidelity's Inception (TF 1.x resize inside) holding the file's weights, or None if they do not
    fit its layout."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    try:
        return FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path)
        )
    except (RuntimeError, KeyError) as exc:  # load_state_dict: missing/unexpected keys or other shapes
        say(f"FID: {path} does not fit torch-fidelity's Inception ({str(exc).splitlines()[0][:120]})")
        return None


class FeatureExtractor:
    """Inception-v3 pool features when weights can be had (loaded once), else the substitute's."""

    def __init__(self, setting: str, device: str | torch.device = "cpu", batch: int = 64):
        self.device, self.batch = torch.device(device), batch
        path, self.source = find_weights(setting)
        self.kind, self.model, self.verified = "substitute", None, False
        if path is not None:
            self.verified = _sha256(path).startswith(REFERENCE_SHA256_PREFIX)
            self.model = _fidelity_inception(path)
            if self.model is not None:
                self.kind = "torch-fidelity"
            else:
                self.model, self.kind = build_inception(
                    torch.load(path, map_location="cpu", weights_only=True)
                )
            self.model.to(self.device)
        if self.model is None:
            say(f"FID: no Inception-v3 weights ({self.source}); writing the substitute, which is not FID")

    @torch.no_grad()
    def features(self, images: np.ndarray) -> np.ndarray:
        """Features of uint8 N x r x r images, ``batch`` at a time."""
        if self.model is None:
            return substitute_features(images)
        if self.kind != "torch-fidelity":
            return inception_features(self.model, self.kind, images, self.device, self.batch)
        out = []
        for start in range(0, len(images), self.batch):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + self.batch])).to(self.device)
            out.append(self.model(x[:, None].expand(-1, 3, -1, -1))[0].double().cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, 2048))

    def describe(self, generated: int, real: int) -> dict:
        if self.model is None:
            return {
                "metric": "substitute-FD",
                "comparable_to_fid50k": False,
                "feature_network": "none (hand-made features)",
                "why_no_inception": self.source,
                "note": SUBSTITUTE_NOTE,
            }
        reference = self.kind == "torch-fidelity" and self.verified
        if self.kind == "torch-fidelity":
            network = f"TF-Inception-v3 pool3 (torch-fidelity's module, weights {self.source}"
            network += ", the reference file)" if self.verified else ", NOT the reference file's SHA-256)"
            resize = "bilinear to 299 px, TF 1.x-compatible (torch-fidelity), as StyleGAN and clean-fid"
        else:
            network = f"Inception-v3 pool3 in torchvision's layout ({self.kind} weights from {self.source})"
            resize = "bilinear to 299 px, PyTorch's (not the reference resize)"
        note = (
            f"{'FID' if reference else 'Not the reference FID'}: {generated} generated vs {real} real images"
        )
        if reference and generated < 50_000:
            note += " (FID50k uses 50,000 generated)"
        note += "; FID is biased at small N: compare values at equal N only, or read KID (unbiased)"
        return {
            "metric": "FID" if reference else METRIC_NAMES[self.kind],
            "comparable_to_fid50k": bool(reference and generated >= 50_000),
            "feature_network": network,
            "resize": resize,
            "note": note,
        }

    def stream_report(
        self, generated: Iterable[np.ndarray], real: np.ndarray, kid_images: int = 10_000, seed: int = 0
    ) -> dict:
        """fid.json's numbers for uint8 generated batches (an iterable, consumed once) against ``real``."""
        started = time.perf_counter()
        stats, kept, kept_count = RunningGaussian(), [], 0
        for batch in generated:
            f = self.features(batch)
            stats.add(f)
            if kept_count < kid_images:
                kept.append(f[: kid_images - kept_count].astype(np.float32))
                kept_count += len(kept[-1])
        real_features = np.concatenate([self.features(real[i : i + 1024]) for i in range(0, len(real), 1024)])
        value = frechet_distance(*stats.mean_cov(), *gaussian(real_features))
        kid_mean, kid_std, kid_size = kid(np.concatenate(kept), real_features, seed=seed)
        label = "KID" if self.model is not None else "substitute-KD (not KID)"
        return {
            "generated_images": stats.count,
            "real_images": len(real),
            **self.describe(stats.count, len(real)),
            "value": round(value, 4),
            "kid": {
                "metric": label,
                "mean": kid_mean,
                "std": kid_std,
                "subsets": 100,
                "subset_size": kid_size,
                "generated_images_used": kept_count,
                "real_images_used": len(real),
            },
            "streamed": True,
            "seconds": round(time.perf_counter() - started, 2),
        }

    def report(self, generated: np.ndarray, real: np.ndarray, batch: int = 64) -> dict:
        """The same for an array of generated images (tests, small sets)."""
        return self.stream_report((generated[i : i + batch] for i in range(0, len(generated), batch)), real)


@torch.no_grad()
def generated_batches(generator, n: int, seed: int, batch: int = 64, device="cpu") -> Iterator[np.ndarray]:
    """The images ``sample.generate`` draws (same latents, same order), one uint8 batch at a time."""
    from mammoflow.gan.network_io import draw, to_uint8, z_dim
    from mammoflow.gan.sample import latents

    z = latents(n, z_dim(generator), seed)  # n x z_dim floats: 13 MB for 50,000, the only O(n) array
    for start in range(0, n, batch):
        yield to_uint8(draw(generator, z[start : start + batch].to(device)))
