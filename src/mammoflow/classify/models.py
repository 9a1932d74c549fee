"""The study's classifiers as fastai's ``vision_learner`` builds them from a timm name.

fastai (``create_timm_model``) asks timm for the network without its classifier (``num_classes=0``), with
the input channels it is given (here ``in_chans=1``: with pretrained weights timm sums the first
convolution's RGB kernels into one, which is what fastai's own first-layer change does for one channel),
and puts its head on top: concat pooling (max, then average), then BatchNorm, Dropout(0.25), a Linear layer
to 512 features and ReLU, then BatchNorm, Dropout(0.5) and a Linear layer to the two classes; the linear
layers have no bias (batch norm before them), start from Kaiming-normal weights, and the head's batch norms
from weight 1, bias 0.001. A timm network whose pretrained config names no pooling size (a ViT) gives
pooled features itself, and the head then has no pooling layer (fastai's ``TimmBody.needs_pool``).
tests/test_fastai_recipe.py builds fastai's own model for the same name and checks module for module.

Two outputs and cross-entropy, as fastai trains a two-class problem; the probability of cancer is the
softmax's second output. Grayscale input normalised with the mean of ImageNet's channel means and standard
deviations (``GRAY_MEAN``/``GRAY_STD``), which is what three equal channels normalised per channel give to
the summed kernels, up to the channels' small differences.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

PAPER_MODELS = ("resnet18", "resnet34", "resnet152", "efficientnet_b0", "maxvit_nano_rw_256")
GRAY_MEAN = (0.485 + 0.456 + 0.406) / 3
GRAY_STD = (0.229 + 0.224 + 0.225) / 3
# fastai's create_head defaults (vision_learner's): what model.json records as the head.
FASTAI_HEAD = {
    "kind": "fastai",
    "n_out": 2,
    "lin_ftrs": [512],
    "ps": [0.25, 0.5],
    "concat_pool": True,
    "first_bn": True,
    "bn_final": False,
}
# Artifacts of format version 1 (before the fastai head): timm's own classifier with one logit.
LEGACY_HEAD = {"kind": "timm-linear", "n_out": 1}


@dataclass(frozen=True)
class Weights:
    """Where a model's starting weights came from (metrics.json and model.json record this)."""

    pretrained: bool
    tag: str = ""  # timm's <name>.<tag>
    file: str = ""
    sha256: str = ""
    bytes: int = 0

    @property
    def label(self) -> str:
        return f"imagenet:{self.tag}" if self.pretrained else "random"

    def as_dict(self) -> dict:
        return {
            "pretrained": self.pretrained,
            "tag": self.tag or None,
            "file": self.file or None,
            "sha256": self.sha256 or None,
            "bytes": self.bytes or None,
        }


class ConcatPool2d(nn.Module):
    """Adaptive max and average pooling to 1 x 1, concatenated so (fastai: AdaptiveConcatPool2d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [nn.functional.adaptive_max_pool2d(x, 1), nn.functional.adaptive_avg_pool2d(x, 1)], 1
        )


def fastai_head(features: int, n_out: int = 2, pool: bool = True) -> nn.Sequential:
    """fastai's create_head(features, n_out) with its defaults, initialised as vision_learner does."""
    width = features * 2 if pool else features  # concat pooling doubles the features
    layers: list[nn.Module] = [ConcatPool2d(), nn.Flatten()] if pool else []
    widths, dropouts = [width, *FASTAI_HEAD["lin_ftrs"], n_out], FASTAI_HEAD["ps"]
    for i, (n_in, n_next) in enumerate(itertools.pairwise(widths)):
        norm = nn.BatchNorm1d(n_in)
        with torch.no_grad():
            norm.weight.fill_(1.0)
            norm.bias.fill_(1e-3)
        layers += [norm, nn.Dropout(dropouts[i]), nn.Linear(n_in, n_next, bias=False)]
        if i < len(widths) - 2:
            layers.append(nn.ReLU(inplace=True))
    # Initialised after all layers exist, in order, as fastai's apply_init does: with the same seed the
    # random draws are fastai's, draw for draw.
    for layer in layers:
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight)
    return nn.Sequential(*layers)


class Classifier(nn.Module):
    """A timm body and a head: fastai's ``nn.Sequential(TimmBody, head)``, with the two halves named.

    ``forward_features``/``forward_head`` split it where the cell's precision rule does (the body under
    autocast, the head in fp32) and where fastai's splitter cuts its two parameter groups."""

    def __init__(self, body: nn.Module, head: nn.Module, needs_pool: bool) -> None:
        super().__init__()
        self.body, self.head, self.needs_pool = body, head, needs_pool

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body.forward_features(x) if self.needs_pool else self.body(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def size_kwargs(name: str, res: int) -> dict:
    # MaxViT's window and grid partitions are fixed by img_size: without it only multiples of 256 work.
    return {"img_size": res} if name.startswith(("maxvit", "maxxvit", "coatnet")) else {}


def timm_body(name: str, res: int, weights_file: str | Path | None = None, tag: str = "") -> nn.Module:
    """timm's network without classifier for 1-channel res x res input, its weights from ``weights_file``
    (timm's format: safetensors, or a weights-only torch file) under the pretrained config of ``tag``.
    Never touches the network: timm loads the file it is given."""
    import timm

    architecture = name.split(".", 1)[0]
    if not timm.is_model(architecture):
        raise ValueError(f"unknown timm model {architecture!r}")
    kwargs = dict(num_classes=0, in_chans=1, **size_kwargs(architecture, res))
    if weights_file is None:
        return timm.create_model(architecture, pretrained=False, **kwargs)
    path = Path(weights_file)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights {path}: no such file")
    if tag and tag.split(".", 1)[0] != architecture:
        raise ValueError(f"pretrained weights {tag!r} are not {architecture}'s")
    try:
        return timm.create_model(
            tag or architecture, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs
        )
    except (RuntimeError, KeyError, ValueError) as exc:  # wrong keys or shapes, unreadable file
        reason = " ".join(str(exc).split())[:300]
        raise ValueError(
            f"pretrained weights {path}: cannot be loaded into {architecture}: {reason}"
        ) from exc


def build_model(
    name: str,
    res: int,
    weights_file: str | Path | None = None,
    tag: str = "",
    head: dict | None = None,
) -> tuple[nn.Module, Weights]:
    """The classifier for res x res grayscale input and where its weights came from.

    ``weights_file`` (timm's format, found by the workflow in the weights folder) makes it pretrained;
    without it the body starts from timm's random initialisation. ``head``: FASTAI_HEAD (default) or
    LEGACY_HEAD (one logit, timm's classifier: artifacts written before the fastai head)."""
    from mammoflow.atomic import file_sha256

    head = head or FASTAI_HEAD
    body = timm_body(name, res, weights_file, tag)
    if weights_file is None:
        weights = Weights(False)
    else:
        path = Path(weights_file)
        weights = Weights(True, tag or name, str(path), file_sha256(path), path.stat().st_size)
    if head.get("kind") == LEGACY_HEAD["kind"]:
        body.reset_classifier(int(head.get("n_out", 1)))
        return body, weights
    if head.get("kind") != "fastai" or int(head.get("n_out", 2)) != 2:
        raise ValueError(f"unknown classifier head {head!r}")
    needs_pool = body.pretrained_cfg.get("pool_size") is not None
    return Classifier(body, fastai_head(body.num_features, 2, pool=needs_pool), needs_pool), weights


def trunk(model: nn.Module) -> nn.Module:
    """The timm network inside a classifier (a legacy one-logit model is its own)."""
    return model.body if isinstance(model, Classifier) else model


def positive_probability(logits: torch.Tensor) -> torch.Tensor:
    """P(cancer) per image: the softmax's second output (two classes), or the sigmoid of a single logit."""
    logits = logits.float()
    if logits.dim() == 2 and logits.shape[1] == 2:
        return torch.softmax(logits, dim=1)[:, 1]
    return torch.sigmoid(logits.reshape(len(logits)))


def positive_score(logits: torch.Tensor) -> torch.Tensor:
    """The score whose sigmoid is P(cancer): the log-odds l1 - l0 of two outputs, or the single logit."""
    if logits.dim() == 2 and logits.shape[1] == 2:
        return logits[:, 1] - logits[:, 0]
    return logits.reshape(len(logits))


def normalize_batch(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 N x H x W (any device) -> float N x 1 x H x W normalised as the network expects."""
    x = images_uint8.unsqueeze(1).float()
    return x.mul_(1.0 / (255.0 * GRAY_STD)).sub_(GRAY_MEAN / GRAY_STD)
