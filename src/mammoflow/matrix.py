"""The training matrix the configuration asks for: its cells, each model's training settings, the models
Grad-CAM explains. One reading of the config for the workflow's targets (workflow/rules/common.smk), its
checks (mammoflow.config) and the report (mammoflow.report). Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Matrix:
    """The cells the configuration asks for: protocol x resolution x data set x model x fold."""

    protocols: list[str]
    resolutions: list[int]
    datasets: list[str]
    models: list[str]
    k: int

    @classmethod
    def from_config(cls, config: dict) -> Matrix:
        return cls(
            list(config["protocols"]),
            [int(r) for r in config["resolutions"]],
            list(config["datasets"]),
            list(config["models"]),
            int(config["folds"]["k"]),
        )

    def cells(self) -> list[tuple]:
        """(protocol, resolution, data set, model, fold) of every cell, in the matrix's order."""
        return [
            (p, r, d, m, f)
            for p in self.protocols
            for r in self.resolutions
            for d in self.datasets
            for m in self.models
            for f in range(self.k)
        ]


# Train keys that say how a cell runs, not what it computes: left out of a cell's settings (a change re-runs
# nothing; the rule passes them outside its parameters: its threads, the environment) and set in the train
# section only, never per model.
RUN_ONLY_TRAIN_KEYS = ("threads", "checkpoint_minutes")


def model_settings(config: dict, model: str) -> dict:
    """The train section with the model's own overrides (model_settings): a model's change re-runs only
    its cells. Without the run-only keys."""
    merged = {**config.get("train", {}), **(config.get("model_settings") or {}).get(model, {})}
    return {k: v for k, v in merged.items() if k not in RUN_ONLY_TRAIN_KEYS}


def keeps_weights(config: dict, model: str) -> bool:
    """Whether the model's cells write model.safetensors (train.keep_weights, per model)."""
    return bool(model_settings(config, model).get("keep_weights", True))


def cam_models(config: dict) -> list[str]:
    """cam.models (null: every model of the matrix), in the matrix's order."""
    chosen = (config.get("cam") or {}).get("models")
    return [m for m in config.get("models", []) if chosen is None or m in chosen]
