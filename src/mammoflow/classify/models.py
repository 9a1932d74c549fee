"""The five timm classifiers of the study, one logit out, grayscale input.

Grayscale: ``in_chans=1``. With pretrained weights timm sums the first convolution's RGB kernels into one,
so the network sees what it saw on ImageNet for a gray image; the matching input normalisation is the
mean of ImageNet's channel means and standard deviations (``GRAY_MEAN``/``GRAY_STD``).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mammoflow.progress import say

PAPER_MODELS = ("resnet18", "resnet34", "resnet152", "efficientnet_b0", "maxvit_nano_rw_256")
GRAY_MEAN = (0.485 + 0.456 + 0.406) / 3
GRAY_STD = (0.229 + 0.224 + 0.225) / 3


@dataclass(frozen=True)
class Weights:
    source: str  # "imagenet (timm hub)", "imagenet (file ...)", "random"
    notice: str = ""


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether the model hub answers a TCP connection (assumed yes behind a configured proxy)."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _size_kwargs(name: str, res: int) -> dict:
    # MaxViT's window and grid partitions are fixed by img_size: without it only multiples of 256 work.
    return {"img_size": res} if name.startswith(("maxvit", "maxxvit", "coatnet")) else {}


def build_model(
    name: str, res: int, pretrained: bool = False, weights_file: str = ""
) -> tuple[nn.Module, Weights]:
    """A timm model with one output logit for res x res grayscale input, and where its weights came from."""
    import timm

    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r}")
    kwargs = dict(num_classes=1, in_chans=1, **_size_kwargs(name, res))
    if weights_file:
        path = Path(weights_file)
        if not path.is_file():
            raise FileNotFoundError(f"weights_file {path}: not found")
        model = _quiet_head(
            timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs)
        )
        return model, Weights(f"imagenet (file {path})")
    if pretrained:
        unreachable = not os.environ.get("HF_HUB_OFFLINE") and not hub_reachable()
        if unreachable:
            # Without this, each cell spends ~46 s in the hub client's retries before failing. Offline
            # mode still finds weights already in the local Hugging Face cache. huggingface_hub reads the
            # variable once, at import (timm imports it): set its constant too.
            os.environ["HF_HUB_OFFLINE"] = "1"
            import huggingface_hub.constants

            huggingface_hub.constants.HF_HUB_OFFLINE = True
        try:
            model = _quiet_head(timm.create_model(name, pretrained=True, **kwargs))
            return model, Weights("imagenet (timm hub)")
        except Exception as exc:  # offline, hub down, no weights for this name: say so, go on
            reason = " ".join(str(exc).split())[:200]
            offline = " (huggingface.co unreachable)" if unreachable else ""
            offline = offline or (" (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else "")
            notice = (
                f"NOTICE: ImageNet weights for {name} could not be loaded{offline}: {reason}. "
                "Training from random initialisation; results are not comparable with the paper's "
                "fine-tuned models. Set train.weights_file (or model_settings.<model>.weights_file) to a "
                "local timm weights file to fix this."
            )
            say(notice)
            return _quiet_head(timm.create_model(name, pretrained=False, **kwargs)), Weights("random", notice)
    return _quiet_head(timm.create_model(name, pretrained=False, **kwargs)), Weights("random")


def _quiet_head(model: nn.Module) -> nn.Module:
    """Calm the new one-logit head. timm initialises EfficientNet's classifier U(-1/sqrt(fan_out), ...),
    which for one output is U(-1, 1) over 1280 features: first logits of +-10, a BCE of 5-8, and a random
    start that diverges (measured on the phantom). A head of N(0, 0.01) starts every model near p = 0.5
    (not exactly zero, so that the bias moves on a balanced first batch too)."""
    head = model.get_classifier()
    if isinstance(head, nn.Linear):
        nn.init.normal_(head.weight, std=0.01)
        if head.bias is not None:
            nn.init.zeros_(head.bias)
    return model


def normalize_batch(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 N x H x W (any device) -> float N x 1 x H x W normalised as the network expects."""
    x = images_uint8.unsqueeze(1).float()
    return x.mul_(1.0 / (255.0 * GRAY_STD)).sub_(GRAY_MEAN / GRAY_STD)
