"""Numeric precision and backend settings of a training cell.

``train.precision``:

- ``auto``: on CUDA bf16 autocast where the GPU computes bf16 natively (Ampere and later), else fp16
  autocast with dynamic loss scaling (V100, T4: bf16 would be emulated, slowly, or fail); on a CPU bf16
  autocast where it has native bf16 (AVX512-BF16/AMX), else fp32;
- ``bf16``, ``fp16`` (CUDA only, with loss scaling), ``fp32``: as asked.

Whatever the autocast precision, the classifier head (fastai's: pooling, batch norms and the two linear
layers) runs in fp32: a bf16 logit has 8 significant bits, so 10,000 validation images would get a few
hundred distinct probabilities and ties all over the ROC curve.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Precision:
    name: str  # bf16 | fp16 | fp32
    reason: str

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    def autocast(self, device: torch.device):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    def scaler(self, device: torch.device) -> torch.amp.GradScaler:
        """Dynamic loss scaling for fp16 (its 5 exponent bits underflow small gradients); a no-op else."""
        return torch.amp.GradScaler(device.type, enabled=self.name == "fp16")


def cuda_bf16_native(device: torch.device) -> bool:
    # including_emulation=True (torch's default) says yes on V100/T4, where bf16 runs emulated and slowly.
    return torch.cuda.is_bf16_supported(including_emulation=False)


def cpu_bf16_native() -> bool:
    # On CPUs with native bf16 (AVX512-BF16/AMX) autocast doubles training speed; elsewhere it emulates.
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())


def resolve_precision(device: torch.device, requested: str = "auto") -> Precision:
    if requested not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    cuda = device.type == "cuda"
    if requested == "fp32":
        return Precision("fp32", "asked for")
    if requested == "fp16":
        if not cuda:
            raise ValueError("train.precision fp16 needs a CUDA device (CPU autocast has no loss scaling)")
        return Precision("fp16", "asked for (with dynamic loss scaling)")
    if requested == "bf16":
        if cuda and not cuda_bf16_native(device):
            raise ValueError(
                f"train.precision bf16: {torch.cuda.get_device_name(device)} has no native bf16; "
                "use auto (fp16 with loss scaling) or fp32"
            )
        return Precision("bf16", "asked for")
    if cuda:
        if cuda_bf16_native(device):
            return Precision("bf16", "auto: the GPU has native bf16")
        return Precision("fp16", "auto: the GPU has no native bf16, so fp16 with dynamic loss scaling")
    if cpu_bf16_native():
        return Precision("bf16", "auto: the CPU has native bf16")
    return Precision("fp32", "auto: the CPU has no native bf16")


def logits_fp32(model: nn.Module, x: torch.Tensor, precision: Precision) -> torch.Tensor:
    """The logits, N x classes floats: the trunk under autocast, the head in fp32."""
    device = x.device
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        with precision.autocast(device):
            features = model.forward_features(x)
        with torch.autocast(device.type, enabled=False):
            return model.forward_head(features.float()).float()
    with precision.autocast(device):
        return model(x).float()


def configure_backends(device: torch.device, deterministic: bool) -> dict:
    """cuDNN autotuning unless deterministic results are asked for; returns what was set, for metrics.json.

    On a CPU the cell is always deterministic (the tests compare a resumed run with an uninterrupted one);
    on CUDA ``deterministic`` costs speed: no cuDNN autotuning, deterministic kernels only.
    """
    deterministic = deterministic or device.type != "cuda"
    if device.type == "cuda":
        # Not on a CPU: its kernels are deterministic at a fixed thread count already (the resume test
        # checks it), and setting the flag imports torch._inductor, a second of every job.
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
    benchmark = device.type == "cuda" and not deterministic
    torch.backends.cudnn.benchmark = benchmark
    torch.backends.cudnn.deterministic = deterministic
    if device.type == "cuda":
        # TF32 matmuls/convolutions for whatever stays fp32 (Ampere and later; ignored before).
        torch.backends.cuda.matmul.allow_tf32 = not deterministic
        torch.backends.cudnn.allow_tf32 = True
    return {"deterministic": deterministic, "cudnn_benchmark": benchmark}
