"""Inception-v3 in torchvision's layout: the fallback network for FID when torch-fidelity cannot take the
weights (torchvision's ImageNet Inception-v3, 1000 classes, or a TF-Inception file in pytorch-fid's layout
that torch-fidelity's module does not load). Resized with PyTorch's bilinear interpolation, which is *not*
the reference (TF 1.x) resize: fid.py labels values computed here accordingly.
"""

from __future__ import annotations

import types

import numpy as np
import torch
import torch.nn.functional as F


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
