"""New images made exactly as a model's training images were: the decode stage, then its preprocessing.

Each DICOM is decoded once by the decode stage's own worker (``decode_to_working_size``: dicomsdl, pydicom as
fallback, resize to the working size) in the stage's supervised processes (``imap_isolated``), with its
rule for a crashed decoder: the file is retried with the next decoder, and a file no decoder can read is
listed with every reason. The decoded image then goes through ``prepare_original`` / ``prepare_processed``
with the settings recorded in the model artifact, for every (data set, resolution) the chosen models need.
Only the small uint8 images cross the process boundary. They are kept in memory-mapped arrays under a
temporary folder, so a data set of any size needs no more memory than a batch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from mammoflow.atomic import allocate_npy
from mammoflow.decode import DecodeTask, child_limits, decode_to_working_size
from mammoflow.isolated import imap_with_fallback
from mammoflow.limits import DEFAULT_LIMITS, DecodeLimits
from mammoflow.preprocess import ProcessOptions, prepare_original, prepare_processed


@dataclass(frozen=True)
class Preparation:
    """One input kind a model needs: the store's data set (original|processed) at a resolution."""

    dataset: str
    resolution: int
    options: tuple = ()  # ProcessOptions as sorted (key, value) pairs: hashable, picklable

    @classmethod
    def of(cls, metadata: dict) -> Preparation:
        preprocess = metadata.get("preprocess") or {}
        dataset = preprocess.get("dataset")
        if dataset not in ("original", "processed"):
            raise ValueError(
                f"{metadata.get('_dir')}: artifact does not say how its images were preprocessed"
            )
        options = (
            ProcessOptions.from_config(preprocess.get("options") or {}) if dataset == "processed" else None
        )
        pairs = tuple(sorted(vars(options).items())) if options else ()
        return cls(dataset, int(metadata["resolution"]), pairs)

    def process(self, pixels: np.ndarray, meta: dict, mask_source: np.ndarray | None = None) -> np.ndarray:
        if self.dataset == "original":
            return prepare_original(pixels, self.resolution).image
        options = ProcessOptions(**dict(self.options))
        return prepare_processed(pixels, meta, self.resolution, options, mask_source).image


@dataclass(frozen=True)
class PrepareTask:
    decode: DecodeTask
    laterality: str
    preparations: tuple[Preparation, ...]


def prepare_one(task: PrepareTask) -> tuple[list[np.ndarray], dict] | str:
    """Worker body: every preparation of one file and its decode facts, or the reason it failed."""
    result = decode_to_working_size(task.decode)
    if isinstance(result, str):
        return result
    pixels, meta, mask_source = result
    # The header facts as the decode stage's index gives them to preprocessing (plus the laterality,
    # which decides on which side the chest wall is kept when padding).
    meta = {**meta, "laterality": task.laterality}
    try:
        return [p.process(pixels, meta, mask_source) for p in task.preparations], meta
    except Exception as exc:  # e.g. a constant or degenerate image: this file's failure, not the run's
        return f"preprocessing failed: {type(exc).__name__}: {exc}"


def prepare_images(
    images: pd.DataFrame,
    preparations: list[Preparation],
    work_dir: Path,
    working_size: int,
    decoders: tuple[str, ...],
    workers: int = 1,
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> tuple[dict[Preparation, np.ndarray], pd.DataFrame]:
    """Arrays (N x res x res uint8 per preparation, row i = images row i) and a per-image status table:
    ``decoded`` (bool), ``reason`` (why not), ``decoder``, ``decode_seconds``. A file over the decode
    ``limits`` (declared size, decoder memory or time) is not decoded, with its reason."""
    n = len(images)
    # Reserved on disk up front (a full disk fails here, by name), not filled through a sparse map.
    arrays = {
        prep: allocate_npy(
            work_dir / f"{prep.dataset}_{prep.resolution}_{k}.npy", (n, *[prep.resolution] * 2), np.uint8
        )
        for k, prep in enumerate(preparations)
    }
    status = pd.DataFrame({"decoded": np.zeros(n, bool), "reason": [""] * n, "decoder": [""] * n,
                           "decode_seconds": np.full(n, np.nan)})  # fmt: skip
    tasks: dict[int, PrepareTask] = {}
    for i, row in enumerate(images.itertuples(index=False)):
        if row.header_error:
            status.loc[i, "reason"] = row.header_error
            continue
        if not Path(row.path).is_file():
            status.loc[i, "reason"] = f"file not found: {row.path}"
            continue
        decode = DecodeTask(str(row.path), working_size, tuple(decoders), limits)
        tasks[i] = PrepareTask(decode, str(row.laterality), tuple(preparations))
    # The decode stage's rule: a decoder that crashes on a file hands it to the next one.
    results = imap_with_fallback(
        prepare_one,
        tasks,
        workers,
        lambda task: task.decode.decoders,
        lambda task, left: replace(task, decode=replace(task.decode, decoders=left, mask_source=False)),
        "decode + preprocess",
        child_limits(limits),
    )
    for i, result in results:
        if isinstance(result, str):
            status.loc[i, "reason"] = result
            continue
        prepared, meta = result
        for prep, image in zip(preparations, prepared, strict=True):
            arrays[prep][i] = image
        status.loc[i, ["decoded", "decoder", "decode_seconds"]] = [
            True,
            meta["decoder"],
            meta["decode_seconds"],
        ]
    for array in arrays.values():
        array.flush()
    return arrays, status
