"""The predict rule's policy: which trained cells `predict.data`'s folders are predicted with. The choice
among the matrix's cells is mammoflow.predict.choice's, the one `mammoflow predict` makes among the cells
it finds, so that the rule's inputs are exactly the cells the command uses."""

from __future__ import annotations

from mammoflow import paths
from mammoflow.matrix import keeps_weights
from mammoflow.predict.choice import pick


def predict_choice(config: dict) -> tuple[str, int, str, list[str]]:
    """(protocol, resolution, data set, models) of the cells to apply; ValueError naming the key when the
    config asks for something the matrix does not train."""
    section = config["predict"]
    try:
        protocol = pick("protocol", config["protocols"], section["protocol"])
        resolution = pick("resolution", config["resolutions"], section["resolution"])
        dataset = pick("dataset", config["datasets"], section["dataset"])
    except ValueError as error:
        raise ValueError(f"predict: {error} in the trained matrix") from error
    named = [m for m in section["models"] if m not in ("best", "all")]
    unknown = [m for m in named if m not in config["models"]]
    if unknown:
        raise ValueError(f"predict.models: {unknown} not in models {config['models']}")
    return protocol, resolution, dataset, named or list(config["models"])


def predict_cells(config: dict, name: str) -> dict:
    """The predict job of ``predict.data[name]``: its folder, and every file of the cells it may use (best
    and all choose among the models that kept their weights)."""
    if name not in config["predict"]["data"]:
        known = sorted(config["predict"]["data"])
        raise ValueError(f"predict.data has no folder named {name!r} (known: {known})")
    protocol, resolution, dataset, models = predict_choice(config)
    cells = [
        path
        for model in models
        if keeps_weights(config, model)
        for fold in range(config["folds"]["k"])
        for path in (
            paths.cell_artifact(protocol, resolution, dataset, model, fold),
            paths.cell_weights(protocol, resolution, dataset, model, fold),
            f"{paths.cell_dir(protocol, resolution, dataset, model, fold)}/predictions.parquet",
        )
    ]
    return {"data": config["predict"]["data"][name], "cells": cells}
