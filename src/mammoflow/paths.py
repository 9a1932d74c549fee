"""The one map of the results tree: every output's path, and parsing a cell's path back.

Each function gives one folder or file. Its arguments may be values (``res=256``) or Snakemake wildcards
(``res="{res}"``), so the rules build their output patterns from the same functions the report, the audit,
explain and predict use to find those outputs. Paths are relative to the workflow's working directory
unless ``root`` says otherwise; logs and benchmarks sit beside ``results/`` in that directory.

    results/
      phantom/                                      train.csv, train_images/, lesions.csv
      decoded/shard{NNN}/                           pixels.u16, meta.parquet, errors.parquet
      decoded/index.parquet, decoded/errors.parquet
      data/folds.parquet
      data/{res}/{dataset}/                   images.npy, manifest.parquet, contact_sheet.png, summary.json
      gan/{protocol}/{part}/stage{stage}/           network.pt, stats.jsonl, snapshots.png, fid.json, ...
      synthetic/{protocol}/{res}/{part}/      images.npy, manifest.parquet, contact_sheet.png, summary.json
      train/{protocol}/{res}/{dataset}/{model}/fold{k}/   metrics.json, predictions.parquet, history.csv, ...
      cam/{protocol}/{res}/{dataset}/{model}/fold{k}/     boxes.parquet, maps.npy, summary.json, figure6.png
      report/                                       index.html, table2.md, table2.csv, cells.csv
      predict/{name}/                               predictions, submission.csv, external.json

``part`` is ``fold{k}`` for a `clean` GAN (trained without fold k's positives) and ``all`` for `paper`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RESULTS = "results"
LOGS = "logs"
BENCHMARKS = "benchmarks"


def _join(root: str | Path, *parts: object) -> str:
    return "/".join([str(root), *(str(p) for p in parts)])


# ----------------------------------------------------------------------------------------------- data
def phantom_dir(root: str | Path = RESULTS) -> str:
    return _join(root, "phantom")


def decoded_dir(root: str | Path = RESULTS) -> str:
    return _join(root, "decoded")


def shard_name(shard: int | str) -> str:
    """``shard007`` for 7; a wildcard such as ``{shard}`` stays as it is (``shard{shard}``)."""
    return f"shard{shard:03d}" if isinstance(shard, int) else f"shard{shard}"


def shard_dir(shard: int | str, root: str | Path = RESULTS) -> str:
    return _join(decoded_dir(root), shard_name(shard))


def decoded_index(root: str | Path = RESULTS) -> str:
    return _join(decoded_dir(root), "index.parquet")


def decoded_errors(root: str | Path = RESULTS) -> str:
    return _join(decoded_dir(root), "errors.parquet")


def folds_table(root: str | Path = RESULTS) -> str:
    return _join(root, "data", "folds.parquet")


def store_dir(res: int | str, dataset: str, root: str | Path = RESULTS) -> str:
    """A packed image store (`original` or `processed`)."""
    return _join(root, "data", res, dataset)


# ------------------------------------------------------------------------------------------------ GAN
def gan_part(protocol: str, fold: int | str | None) -> str:
    """Which GAN serves a fold: one per fold under `clean`, one for all folds under `paper`."""
    return f"fold{fold}" if protocol == "clean" else "all"


def gan_dir(protocol: str, part: str, root: str | Path = RESULTS) -> str:
    return _join(root, "gan", protocol, part)


def gan_stage_dir(protocol: str, part: str, stage: int | str, root: str | Path = RESULTS) -> str:
    return _join(gan_dir(protocol, part, root), f"stage{stage}")


def synthetic_dir(protocol: str, res: int | str, part: str, root: str | Path = RESULTS) -> str:
    """The synthetic positives a GAN made for one resolution."""
    return _join(root, "synthetic", protocol, res, part)


# ------------------------------------------------------------------------------------ training, CAM
@dataclass(frozen=True)
class CellKey:
    """Which cell of the training matrix a path belongs to (a cell's job, its inputs: classify.train.Cell)."""

    protocol: str
    res: int
    dataset: str
    model: str
    fold: int

    @property
    def key(self) -> str:
        return f"{self.protocol}/{self.res}/{self.dataset}/{self.model}/fold{self.fold}"


def _cell_parts(protocol, res, dataset, model, fold) -> tuple[str, ...]:
    return (str(protocol), str(res), str(dataset), str(model), f"fold{fold}")


def cell_dir(protocol, res, dataset, model, fold, root: str | Path = RESULTS) -> str:
    """A training cell's folder: metrics.json, predictions.parquet, history.csv and the model."""
    return _join(root, "train", *_cell_parts(protocol, res, dataset, model, fold))


# The model artifact a cell leaves (src/mammoflow/classify/artifact.py): metadata and fp16 weights.
ARTIFACT_METADATA = "model.json"
ARTIFACT_WEIGHTS = "model.safetensors"


def cell_artifact(protocol, res, dataset, model, fold, root: str | Path = RESULTS) -> str:
    """A cell's model artifact (its metadata; the weights file sits beside it, ``cell_weights``)."""
    return _join(cell_dir(protocol, res, dataset, model, fold, root), ARTIFACT_METADATA)


def cell_weights(protocol, res, dataset, model, fold, root: str | Path = RESULTS) -> str:
    return _join(cell_dir(protocol, res, dataset, model, fold, root), ARTIFACT_WEIGHTS)


def cam_dir(protocol, res, dataset, model, fold, root: str | Path = RESULTS) -> str:
    """A cell's Grad-CAM outputs."""
    return _join(root, "cam", *_cell_parts(protocol, res, dataset, model, fold))


def cell_log(stage: str, protocol, res, dataset, model, fold, logs: str | Path = LOGS) -> str:
    """The log of a cell's job of ``stage`` (train or cam)."""
    return _join(logs, stage, *_cell_parts(protocol, res, dataset, model, fold)[:-1], f"fold{fold}.log")


_CELL = re.compile(
    r"(?:^|/)(?:train|cam)/(?P<protocol>[^/]+)/(?P<res>\d+)/(?P<dataset>[^/]+)/(?P<model>[^/]+)/fold(?P<fold>\d+)"
    r"(?:/|$)"
)


def parse_cell(path: str | Path) -> CellKey:
    """The cell a path under ``train/`` or ``cam/`` belongs to; ValueError for any other path."""
    match = _CELL.search(Path(path).as_posix())
    if not match:
        raise ValueError(
            f"{path}: not under train/ or cam/{{protocol}}/{{res}}/{{dataset}}/{{model}}/fold{{k}}"
        )
    g = match.groupdict()
    return CellKey(g["protocol"], int(g["res"]), g["dataset"], g["model"], int(g["fold"]))


# ------------------------------------------------------------------------------------ report, predict
def report_dir(root: str | Path = RESULTS) -> str:
    return _join(root, "report")


def predict_dir(name: str, root: str | Path = RESULTS) -> str:
    """One prediction run on new exams (``mammoflow predict``)."""
    return _join(root, "predict", name)


def predict_submission(name: str, root: str | Path = RESULTS) -> str:
    """Kaggle's prediction_id,cancer of a prediction run."""
    return _join(predict_dir(name, root), "submission.csv")


def predict_external(name: str, root: str | Path = RESULTS) -> str:
    """External-validation metrics of a prediction run on a labelled folder (absent without labels)."""
    return _join(predict_dir(name, root), "external.json")
