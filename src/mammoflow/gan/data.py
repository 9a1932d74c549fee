"""The real positives one GAN may see, at the resolution of one stage.

- ``paper``: one GAN per resolution on every positive (as the study did; validation positives included).
- ``clean``: one GAN per fold k, on the positives of the ``clean`` folds whose fold is not k, so that no
  validation positive of fold k ever reaches the generator that makes fold k's synthetic images.

Images are turned so that the chest wall is on the left (R images mirrored; the processed stores put the
chest wall on the side laterality implies, L = left edge). The generator so learns one orientation, and
``synthesize`` mirrors half of its output back and labels each image's laterality exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from mammoflow.store import open_store

PROTOCOLS = ("clean", "paper")


def parse_part(protocol: str, part: str) -> int | None:
    """The held-out fold of a ``clean`` part ("fold3" -> 3); None for the ``paper`` part "all"."""
    if protocol == "clean":
        match = re.fullmatch(r"fold(\d+)", part)
        if not match:
            raise ValueError(f"protocol clean trains one GAN per fold: part must be fold<k>, not {part!r}")
        return int(match.group(1))
    if protocol == "paper":
        if part != "all":
            raise ValueError(
                f"protocol paper trains one GAN on all positives: part must be 'all', not {part!r}"
            )
        return None
    raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")


def training_positive_ids(
    manifest: pd.DataFrame, folds: pd.DataFrame, protocol: str, part: str
) -> np.ndarray:
    """Sorted image ids of the positives the (protocol, part) GAN trains on."""
    held_out = parse_part(protocol, part)
    positives = manifest.loc[manifest["cancer"] == 1, "image_id"].to_numpy()
    if protocol == "paper":
        return np.sort(positives)
    table = folds[folds["protocol"] == protocol]
    fold_of = pd.Series(table["fold"].to_numpy(), index=table["image_id"].to_numpy())
    unknown = np.setdiff1d(positives, fold_of.index.to_numpy())
    if len(unknown):
        raise ValueError(
            f"{len(unknown)} positives of the store have no {protocol} fold (e.g. {unknown[:3]})"
        )
    k = int(fold_of.max()) + 1
    if held_out >= k:
        raise ValueError(f"part fold{held_out}: the folds table has only {k} folds")
    return np.sort(positives[fold_of.loc[positives].to_numpy() != held_out])


def resize(images: np.ndarray, res: int) -> np.ndarray:
    """Area averaging when shrinking (no aliasing); bicubic when a stage is larger than any store."""
    if images.shape[1] == res:
        return np.ascontiguousarray(images)
    method = cv2.INTER_AREA if images.shape[1] > res else cv2.INTER_CUBIC
    return np.stack([cv2.resize(np.asarray(im), (res, res), interpolation=method) for im in images])


@dataclass
class Positives:
    images: np.ndarray  # (N, res, res) uint8, chest wall on the left
    image_ids: np.ndarray  # int64, same order
    store_res: int
    note: str


def load_positives(
    store_dir: str | Path, folds_path: str | Path, protocol: str, part: str, res: int
) -> Positives:
    store, manifest = open_store(store_dir)
    folds = pd.read_parquet(folds_path)
    ids = training_positive_ids(manifest, folds, protocol, part)
    if len(ids) == 0:
        raise ValueError(
            f"{store_dir}: no positive images for protocol {protocol}, {part}: nothing to train on"
        )
    rows = manifest.set_index("image_id").loc[ids]
    images = np.asarray(store[np.sort(rows["row"].to_numpy())])
    order = np.argsort(np.argsort(rows["row"].to_numpy()))  # back to the order of `ids`
    images = images[order]
    right = rows["laterality"].astype(str).to_numpy() == "R"
    images[right] = images[right][:, :, ::-1]
    store_res = store.shape[1]
    note = f"{len(ids)} positives from the {store_res} px store"
    if store_res > res:
        note += f", area-downsampled to {res} px"
    elif store_res < res:
        note += f", upsampled (bicubic) to {res} px: no store is as large as this stage"
    return Positives(resize(images, res), ids.astype(np.int64), store_res, note)
