"""A training cell's data: which images train and validate, and batches straight from the packed stores.

No per-image Python in the hot path: a batch is one fancy-index into the memory-mapped uint8 store
(indices sorted, so the page cache reads forward), converted and augmented as one tensor. Batches are
gathered two steps ahead in background threads (into pinned memory on CUDA) while the network trains on
the current one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mammoflow.store import IMAGE_COLUMNS, open_store


@dataclass
class CellData:
    """Images of a cell (real store, plus synthetic rows appended after it) and its train/valid split."""

    real: np.ndarray  # N x res x res uint8, memory-mapped
    synthetic: np.ndarray | None  # M x res x res uint8, or None
    table: pd.DataFrame  # one row per image of both: IMAGE_COLUMNS + fold; index = position real..synthetic
    train: np.ndarray  # positions (before over-sampling)
    valid: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        return self.table["cancer"].to_numpy(np.float32)

    def gather(self, positions: np.ndarray) -> np.ndarray:
        """Images at ``positions`` (sorted ascending), as one N x res x res uint8 array."""
        n_real = len(self.real)
        if self.synthetic is None or positions[-1] < n_real:
            return self.real[positions]
        split = np.searchsorted(positions, n_real)
        return np.concatenate([self.real[positions[:split]], self.synthetic[positions[split:] - n_real]])


def load_cell_data(
    store_dir: str | Path,
    folds_path: str | Path,
    protocol: str,
    fold: int,
    synthetic_dir: str | Path | None = None,
) -> CellData:
    """Split a store by the protocol's folds. Synthetic images: training only in `clean`; in `paper` those
    whose own `fold` equals this fold are validated, as the study did."""
    images, manifest = open_store(store_dir)
    folds = pd.read_parquet(folds_path)
    folds = folds[folds["protocol"] == protocol][["image_id", "fold"]]
    if folds.empty:
        raise ValueError(f"{folds_path}: no folds for protocol {protocol!r}")
    table = manifest[IMAGE_COLUMNS].merge(folds, on="image_id", how="left")
    missing = table["fold"].isna()
    if missing.any():
        raise ValueError(
            f"{folds_path}: {int(missing.sum())} images of {store_dir} have no {protocol} fold, "
            f"e.g. image_id {table.loc[missing, 'image_id'].iloc[0]}"
        )
    k = int(folds["fold"].max()) + 1
    if not 0 <= fold < k:
        raise ValueError(f"fold {fold} is not in 0..{k - 1}")
    synthetic = None
    if synthetic_dir is not None:
        synthetic, extra = open_store(synthetic_dir)
        if synthetic.shape[1:] != images.shape[1:]:
            raise ValueError(f"{synthetic_dir}: images {synthetic.shape[1:]} do not match {images.shape[1:]}")
        extra = extra.copy()
        extra["source"] = "synthetic"
        if protocol == "clean" or "fold" not in extra.columns:
            extra["fold"] = -1  # never a validation fold
        table = pd.concat([table, extra[[*IMAGE_COLUMNS, "fold"]]], ignore_index=True)
    table["fold"] = table["fold"].astype(int)
    position = np.arange(len(table))
    valid = position[table["fold"].to_numpy() == fold]
    if protocol == "clean":
        valid = valid[(table["source"].to_numpy()[valid] == "real")]
    train = position[(table["fold"].to_numpy() != fold)]
    return CellData(images, synthetic, table, train, valid)


def oversampled(train: np.ndarray, labels: np.ndarray, factor: int) -> np.ndarray:
    """Training positions with every positive present ``factor`` times (the paper's 5x over-sampling)."""
    positives = train[labels[train] == 1]
    return np.concatenate([train, *([positives] * (factor - 1))]) if factor > 1 else train.copy()


def epoch_batches(
    positions: np.ndarray, batch_size: int, seed: int, drop_last: bool = True
) -> list[np.ndarray]:
    """A seeded shuffle cut into batches, each sorted for forward reads of the memory map.

    A last batch of one image is always dropped: batch norm cannot train on it.
    """
    order = np.random.default_rng(seed).permutation(positions)
    cuts = range(0, len(order), batch_size)
    batches = [np.sort(order[i : i + batch_size]) for i in cuts]
    if batches and (
        len(batches[-1]) < 2 or (drop_last and len(batches) > 1 and len(batches[-1]) < batch_size)
    ):
        batches.pop()
    return batches


def prefetched(
    data: CellData, batches: list[np.ndarray], pin: bool = False, depth: int = 2
) -> Iterator[tuple[np.ndarray | torch.Tensor, np.ndarray]]:
    """(images, labels) per batch, the next ``depth`` gathered in threads while the caller trains.

    ``pin``: images come as page-locked (pinned) uint8 tensors, pinned in the worker thread, so that the
    caller's ``.to("cuda", non_blocking=True)`` is a real asynchronous copy (from pageable memory CUDA
    first copies through a staging buffer, synchronously). Labels stay numpy.
    """
    labels = data.labels

    def load(batch: np.ndarray):
        images = data.gather(batch)
        return torch.from_numpy(images).pin_memory() if pin else images

    with ThreadPoolExecutor(max_workers=max(1, depth)) as pool:
        pending = deque(pool.submit(load, b) for b in batches[:depth])
        for i, batch in enumerate(batches):
            images = pending.popleft().result()
            if i + depth < len(batches):
                pending.append(pool.submit(load, batches[i + depth]))
            yield images, labels[batch]


def micro_batches(n: int, size: int) -> list[slice]:
    """Slices of ``size`` covering 0..n (size 0: one slice); a last slice of one image joins the one before,
    because batch norm cannot train on a single image."""
    if size <= 0 or size >= n:
        return [slice(0, n)]
    bounds = [*range(0, n, size), n]
    if n - bounds[-2] == 1 and len(bounds) > 2:
        bounds.pop(-2)
    return [slice(a, b) for a, b in pairwise(bounds)]


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the batch left-right (N x C x H x W), decided per image."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    flip = flip.to(x.device).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)
