"""The decode stage's results read as one: the shards joined into an index and an error list
(``index_shards``, the ``decode_index`` rule), and the decoded images read back (``DecodedImages``).

Shard folders are recorded relative to the index's own folder, so a copied or moved run reads its own
shards; the failure list survives a failed run (see ``index_shards``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from mammoflow.atomic import write_csv, write_parquet, write_text
from mammoflow.errors import DataError
from mammoflow.progress import say

# Above this share of undecodable files the index step fails the run (decode.max_failed_fraction).
MAX_FAILED_FRACTION = 0.01


def index_shards(
    shard_dirs: list[str | Path],
    index_path: str | Path,
    errors_path: str | Path,
    max_failed_fraction: float = MAX_FAILED_FRACTION,
    failure_list: str | Path | None = None,
) -> pd.DataFrame:
    """Join the shards' meta and errors into one index (with a ``shard_dir`` column) and one error list.

    ``shard_dir`` is recorded relative to the index's own folder (``shard000`` beside ``index.parquet``), so
    a run that is copied, moved or run with ``--directory`` reads its own shards and never another run's.
    The error list and a summary (``summary.json`` beside the index) are written first; then, when more than
    ``max_failed_fraction`` of the files could not be decoded, the run fails naming the count and the list.
    Snakemake deletes a failed job's outputs, ``errors_path`` among them: the list the message names is
    ``failure_list`` (a CSV the rule declares as a log, which survives), and every failure is in the log too.
    """
    metas, errors = [], []
    index_dir = Path(index_path).parent
    for shard_dir in shard_dirs:
        meta = pd.read_parquet(Path(shard_dir) / "meta.parquet")
        meta["shard_dir"] = Path(os.path.relpath(Path(shard_dir).absolute(), index_dir.absolute())).as_posix()
        metas.append(meta)
        errors.append(pd.read_parquet(Path(shard_dir) / "errors.parquet"))
    index = pd.concat(metas, ignore_index=True).sort_values(["patient_id", "image_id"], kind="stable")
    index = index.reset_index(drop=True)
    all_errors = pd.concat(errors, ignore_index=True).sort_values("image_id").reset_index(drop=True)
    total = len(index) + len(all_errors)
    failing = index.empty or len(all_errors) > max_failed_fraction * total
    write_parquet(all_errors, errors_path)
    if failure_list is not None:
        write_csv(all_errors, failure_list)
    kept = failure_list if failing and failure_list is not None else errors_path
    summary = decode_summary(index, all_errors, kept)
    summary["line"] = summary_line(summary)
    write_text(json.dumps(summary, indent=2) + "\n", Path(index_path).with_name("summary.json"))
    say(summary["line"])
    for entry in all_errors.itertuples():
        say(f"  cannot decode {entry.path}: {entry.reason}")
    if index.empty:
        raise DataError(f"no image could be decoded ({summary['failed']} failed); the reasons: {kept}")
    if failing:
        raise DataError(
            f"{summary['failed']} of {total} files ({summary['failed'] / total:.1%}) could not be decoded, "
            f"more than decode.max_failed_fraction={max_failed_fraction:g}; the list: {kept}"
        )
    write_parquet(index, index_path)
    return index


def decode_summary(index: pd.DataFrame, errors: pd.DataFrame, errors_path: str | Path) -> dict:
    """What a run decoded, in numbers, for the console and the report."""
    lossy = int(index["lossy"].astype(bool).sum()) if "lossy" in index.columns else 0
    return {
        "decoded": len(index),
        "failed": len(errors),
        "lossy": lossy,
        "errors": str(errors_path),
    }


def summary_line(summary: dict) -> str:
    line = f"decode: {summary['decoded']} images decoded, {summary['failed']} could not be decoded"
    line += f", {summary['lossy']} lossy-compressed"
    return line + (f"; the list with reasons: {summary['errors']}" if summary["failed"] else "")


class DecodedImages:
    """Zero-copy access to the decoded images listed in an index (memory-mapped shards).

    The index's ``shard_dir`` values are relative to ``index_dir``, the folder that holds the index file.
    """

    def __init__(self, index: pd.DataFrame, index_dir: str | Path) -> None:
        self.index = index.reset_index(drop=True)
        self.index_dir = Path(index_dir)
        self._maps: dict[str, np.memmap] = {}
        absolute = sorted({d for d in self.index["shard_dir"].unique() if Path(d).is_absolute()})
        if absolute:
            # An index from before relocatable runs: it may point into another run's folder.
            raise DataError(
                f"{self.index_dir}: the decoded index names shard folders by absolute path ({absolute[0]}), "
                "which may be another run's; rebuild it: snakemake --forcerun decode_index"
            )

    @classmethod
    def open(cls, index_path: str | Path) -> DecodedImages:
        return cls(pd.read_parquet(index_path), Path(index_path).parent)

    def __len__(self) -> int:
        return len(self.index)

    def pixels(self, row: int) -> np.ndarray:
        entry = self.index.iloc[row]
        shard_dir = entry["shard_dir"]
        if shard_dir not in self._maps:
            shard_pixels = self.index_dir / shard_dir / "pixels.u16"
            self._maps[shard_dir] = np.memmap(shard_pixels, dtype="<u2", mode="r")
        start, height, width = int(entry["offset"]), int(entry["height"]), int(entry["width"])
        return self._maps[shard_dir][start : start + height * width].reshape(height, width)

    def mask_source(self, row: int) -> np.ndarray | None:
        """The copy the image's breast is found on (``decode.mask_source``), None where there is none."""
        entry = self.index.iloc[row]
        height = int(entry.get("mask_source_height", 0) or 0)
        if not height:
            return None
        self.pixels(row)  # maps the shard
        start, width = int(entry["mask_source_offset"]), int(entry["mask_source_width"])
        return self._maps[entry["shard_dir"]][start : start + height * width].reshape(height, width)
