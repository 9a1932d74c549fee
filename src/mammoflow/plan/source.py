"""Where the images come from: the built-in phantom, or an RSNA folder checked before the DAG is built."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from mammoflow import paths
from mammoflow.samplesheet import sheet_problems


@dataclass(frozen=True)
class DataSource:
    phantom: bool  # no rsna_dir: the phantom stage makes the data set
    folder: str  # the RSNA-layout folder (train.csv, train_images/)

    @classmethod
    def from_config(cls, config: dict) -> DataSource:
        rsna = config.get("rsna_dir") or ""
        return cls(phantom=not rsna, folder=rsna or paths.phantom_dir())

    @property
    def sheet(self) -> str:
        return f"{self.folder}/train.csv"

    @property
    def lesions(self) -> str:
        """The phantom's lesion boxes (its stores carry them); empty for RSNA data, which has none."""
        return f"{paths.phantom_dir()}/lesions.csv" if self.phantom else ""

    def problems(self) -> list[str]:
        """What stops a run on this folder, one line each (`snakemake -n` too): the sample sheet decides
        every path and label, so it is checked before the DAG is built. None for the phantom."""
        if self.phantom:
            return []
        if not Path(self.folder).is_dir():
            return [f"config: rsna_dir={self.folder!r}: no such folder (expected a Kaggle RSNA folder)"]
        if not Path(self.sheet).is_file():
            return [f"config: rsna_dir={self.folder!r}: no train.csv there (expected a Kaggle RSNA folder)"]
        return [f"{self.sheet}: {problem}" for problem in sheet_problems(self.sheet, labels=True)]


def print_decode_summary(started: float) -> None:
    """The index step's one-line summary (decoded, failed, lossy, where the list is) on the console, if a
    job of this run wrote it (Snakemake's onsuccess and onerror)."""
    summary = Path(paths.decoded_index()).with_name("summary.json")
    if summary.is_file() and summary.stat().st_mtime >= started:
        print(json.loads(summary.read_text())["line"], file=sys.stderr)
