"""What `mammoflow predict` is asked to do (mammoflow.predict.run applies it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from mammoflow.limits import DEFAULT_LIMITS, DecodeLimits
from mammoflow.sections import defaults


@dataclass
class PredictOptions:
    """What `mammoflow predict` does. The choices config.yaml's ``predict:`` section holds have no value
    here (``configured`` takes them from there); the rest are the command's own (folders, devices)."""

    aggregation: str  # mean | max over a breast's views
    submission: str  # probability | binary (0/1 at the pF1-optimal threshold)
    bootstrap: int  # patient resamples for the external intervals
    cam_max: int  # Grad-CAM panels for at most this many flagged breasts (highest first)
    batch_size: int  # images per forward pass of a model
    models: list[str] | None  # None / ["best"]: the best by out-of-fold AUC; ["all"]; or names
    protocol: str | None
    resolution: int | None
    dataset: str | None
    results: str = "results"
    artifacts: list[str] = field(default_factory=list)
    name: str | None = None
    workers: int = 1
    device: str = "auto"
    threads: int = 0
    seed: int = 0
    working_size: int | None = None  # only for artifacts that do not record their decode settings
    decode_limits: DecodeLimits = DEFAULT_LIMITS  # size, memory and time bounds on decoding one file

    CONFIGURED: ClassVar[tuple[str, ...]] = (
        "aggregation", "submission", "bootstrap", "cam_max", "batch_size",
        "models", "protocol", "resolution", "dataset",
    )  # fmt: skip

    @classmethod
    def configured(cls, **options) -> PredictOptions:
        """config.yaml's ``predict:`` choices, with ``options`` laid over them."""
        shipped = defaults("predict")
        return cls(**{**{k: shipped[k] for k in cls.CONFIGURED}, **options})
