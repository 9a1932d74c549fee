"""The report's "Shapes that ran": what each job recorded about how it ran, never what the config asked.

A rehearsal (presets/rehearsal.yaml) exists to run every shape and memory path of the real run once; this
section is how a reader checks that it did. Read from the jobs' own outputs:

- training cells: each cell's ``metrics.json`` (classify/train.py ``run_record``: device, precision and
  why, effective and micro batch, steps per epoch and whether capped, peak memory) and ``history.csv``
  (the epochs that ran);
- GAN stages: ``network.pt``'s metadata (stage, batch, kimg, Table 1 widths, precision; read with torch
  where the report's environment has it), ``stats.jsonl`` (steps) and ``fid.json`` (metric, generated and
  real images, feature network, streamed, comparable_to_fid50k);
- Grad-CAM: each ``summary.json`` (batch, target layer, method and feature map where recorded).

Cells of one model and resolution are grouped into one row (ranges where values differ); a row whose cells
ran at different precision, batch, device or step count is flagged, since a rehearsal that ran one cell
another way than the rest did not rehearse that cell's shape.
"""

from __future__ import annotations

import json
from glob import glob
from pathlib import Path

import pandas as pd

from mammoflow import paths
from mammoflow.matrix import Matrix

# Fields of metrics.json whose disagreement inside one model x resolution row is flagged. Steps per epoch
# are not among them: they follow the training set (augmented cells have more images), shown as a range.
MUST_AGREE = ("device", "precision", "effective_batch", "micro_batch", "steps_capped")
NOT_RECORDED = "not recorded"


def _epochs_run(cell: Path, summary: dict) -> int | None:
    """Rows of history.csv (one per epoch that ran); the settings' epochs only if there is no history."""
    history = cell / "history.csv"
    if history.is_file():
        return len(pd.read_csv(history))
    return (summary.get("settings") or {}).get("epochs")


def training_cells(results: Path, matrix: Matrix) -> pd.DataFrame:
    """One row per finished cell of the matrix: how it ran, as its metrics.json says."""
    rows = []
    for protocol, res, dataset, model, fold in matrix.cells():
        cell = Path(paths.cell_dir(protocol, res, dataset, model, fold, root=results))
        path = cell / "metrics.json"
        if not path.is_file():
            continue  # missing and failed cells are counted by the Table 2 section
        try:
            summary = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
        rows.append(
            {
                "protocol": protocol,
                "resolution": int(res),
                "dataset": dataset,
                "model": model,
                "fold": fold,
                **{k: summary.get(k) for k in (*MUST_AGREE, "steps_per_epoch")},
                "precision_reason": summary.get("precision_reason"),
                "epochs": _epochs_run(cell, summary),
                "train_images": summary.get("train_images"),
                "train_images_oversampled": summary.get("train_images_oversampled"),
                "peak_host_memory_mib": summary.get("peak_host_memory_mib"),
                "peak_cuda_memory_mib": summary.get("peak_cuda_memory_mib"),
                "seconds": summary.get("seconds"),
            }
        )
    return pd.DataFrame(rows)


def _span(values: pd.Series) -> str:
    """'4' for one value, '4–8' for a numeric range, 'bf16, fp32' for several labels, 'not recorded'
    for none."""
    known = [v for v in values.tolist() if v is not None and not (isinstance(v, float) and pd.isna(v))]
    if not known:
        return NOT_RECORDED
    distinct = sorted(set(known), key=str)
    if len(distinct) == 1:
        return _text(distinct[0])
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in distinct):
        return f"{_text(min(distinct))}–{_text(max(distinct))}"
    return ", ".join(_text(v) for v in distinct)


def _text(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def training_rows(cells: pd.DataFrame) -> list[dict]:
    """One row per resolution x model: counts, ranges, and the fields its cells disagree on."""
    if cells.empty:
        return []
    spans = {"protocols": "protocol", "datasets": "dataset"} | {
        k: k
        for k in (
            "device", "precision", "precision_reason", "effective_batch", "micro_batch", "steps_per_epoch",
            "steps_capped", "epochs", "train_images", "train_images_oversampled", "peak_host_memory_mib",
            "peak_cuda_memory_mib", "seconds",
        )
    }  # fmt: skip
    return _grouped_rows(cells, "cells", spans, MUST_AGREE)


def _grouped_rows(frame: pd.DataFrame, count: str, spans: dict[str, str], must_agree) -> list[dict]:
    """One row per resolution x model: how many jobs (``count``), each column's values as a span (``spans``:
    row key -> column), and the ``must_agree`` columns its jobs disagree on."""
    rows = []
    for (res, model), group in frame.groupby(["resolution", "model"], sort=True):
        rows.append(
            {
                "resolution": int(res),
                "model": model,
                count: len(group),
                **{key: _span(group[column]) for key, column in spans.items()},
                "disagree": [k for k in must_agree if group[k].astype(str).nunique() > 1],
            }
        )
    return rows


# ------------------------------------------------------------------------------------------------- GAN
def _network_metadata(path: Path) -> tuple[dict, str]:
    """network.pt's plain fields (not its tensors); ({}, why) where torch is not in this environment."""
    try:
        import torch
    except ImportError:
        return {}, "torch is not installed where the report ran: network.pt not read"
    # mmap: the metadata without reading the weights (up to ~45 MB a stage at Table 1's widths).
    payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return {k: v for k, v in payload.items() if k != "state"}, ""


def _widths(arch: dict) -> tuple[int, str]:
    """(channels of the stage's last synthesis layer, the width settings) from network.pt's layer table."""
    base, cap = arch["channel_base"], arch["channel_max"]
    settings = (
        f"cbase {base // 2}, cmax {cap // 2} (network {base} / {cap}, doubled as StyleGAN-XL does), "
        f"{len(arch['layers'])} synthesis layers, w_dim {arch['w_dim']}"
    )
    return arch["layers"][-2]["out_channels"], settings


def discriminator_label(stage_dir: Path, meta: dict | None = None) -> str:
    """Which discriminator a stage trained against (projected, on which feature networks, RANDOM ones
    said so; or residual), from network.pt's metadata or else stats.jsonl's last tick."""
    recorded = (meta or {}).get("discriminator") or {}
    if recorded.get("label"):
        return recorded["label"]
    stats = Path(stage_dir) / "stats.jsonl"
    lines = stats.read_text().splitlines() if stats.is_file() else []
    return (json.loads(lines[-1]).get("discriminator") if lines else None) or NOT_RECORDED


def _batch_from_ticks(ticks: list[dict]):
    """The batch from stats.jsonl where network.pt could not be read: its last tick's kimg (images shown,
    to the image) over its steps."""
    if not ticks or not ticks[-1].get("step"):
        return NOT_RECORDED
    return round(ticks[-1]["kimg"] * 1000 / ticks[-1]["step"])


def gan_rows(results: Path) -> list[dict]:
    """One row per GAN stage that wrote a network: its shape as the stage recorded it, and its FID."""
    rows = []
    pattern = paths.gan_stage_dir("*", "*", "*", results) + "/network.pt"
    for network in sorted(
        map(Path, glob(pattern)), key=lambda p: (str(p.parents[1]), int(p.parent.name[5:]))
    ):
        stage_dir = network.parent
        meta, why = _network_metadata(network)
        arch, settings = meta.get("arch") or {}, meta.get("settings") or {}
        stats = stage_dir / "stats.jsonl"
        ticks = (
            [json.loads(line) for line in stats.read_text().splitlines() if line.strip()]
            if stats.is_file()
            else []
        )
        fid_path = stage_dir / "fid.json"
        fid = json.loads(fid_path.read_text()) if fid_path.is_file() else {}
        stage = int(meta.get("stage") or stage_dir.name[5:])
        width, widths = _widths(arch) if arch else (NOT_RECORDED, NOT_RECORDED)
        rows.append(
            {
                "gan": f"{stage_dir.parents[1].name} {stage_dir.parent.name}",
                "stage": stage,
                "discriminator": discriminator_label(stage_dir, meta),
                "batch": settings.get("batch") or _batch_from_ticks(ticks),
                "kimg": meta.get("kimg", ticks[-1]["kimg"] if ticks else NOT_RECORDED),
                "steps": ticks[-1]["step"] if ticks else NOT_RECORDED,
                "training_images": meta.get("training_images", NOT_RECORDED),
                "precision": meta.get("precision") or NOT_RECORDED,
                "channels": width,
                "widths": widths,
                "seconds": ticks[-1].get("seconds") if ticks else None,
                "fid_metric": fid.get("metric", "no fid.json"),
                "fid_value": fid.get("value"),
                "generated_images": fid.get("generated_images"),
                "real_images": fid.get("real_images"),
                "feature_network": fid.get("feature_network"),
                "streamed": fid.get("streamed"),
                "comparable_to_fid50k": fid.get("comparable_to_fid50k"),
                "fid_seconds": fid.get("seconds"),
                "note": why,
            }
        )
    return rows


def synthetic_rows(results: Path) -> list[dict]:
    """One row per synthetic store: which network made it (file, kind, SHA-256), from its summary.json;
    for a published network, its FID at the store's resolution (gan/published/{res}px/fid.json)."""
    rows = []
    for path in sorted(glob(paths.synthetic_dir("*", "*", "*", results) + "/summary.json")):
        summary = json.loads(Path(path).read_text())
        network = summary.get("network")
        network = network if isinstance(network, dict) else {"file": network}  # earlier summaries: a path
        fid_path = Path(paths.gan_dir("published", f"{summary.get('resolution')}px", results)) / "fid.json"
        published = summary.get("published") is not None
        fid = json.loads(fid_path.read_text()) if published and fid_path.is_file() else {}
        rows.append(
            {
                "store": f"{summary.get('protocol')} {summary.get('resolution')} px {summary.get('part')}",
                "images": summary.get("images"),
                "network": Path(str(network.get("file"))).name,
                "kind": network.get("kind", NOT_RECORDED),
                "sha256": network.get("sha256", NOT_RECORDED),
                "network_px": summary.get("stage"),
                "truncation": summary.get("truncation"),
                "published_fid": f"{fid['metric']} {fid['value']}" if fid else None,
            }
        )
    return rows


# -------------------------------------------------------------------------------------------- Grad-CAM
def cam_rows(results: Path) -> list[dict]:
    """One row per model x resolution of the CAM jobs that finished: batch and target layer as recorded."""
    found = []
    for path in sorted(glob(paths.cam_dir("*", "*", "*", "*", "*", results) + "/summary.json")):
        summary = json.loads(Path(path).read_text())
        settings = summary.get("settings") or {}
        found.append(
            {
                "resolution": summary.get("resolution"),
                "model": summary.get("model"),
                "dataset": summary.get("dataset"),
                "device": summary.get("device"),
                "batch": settings.get("batch_size"),
                "target_layer": summary.get("target_layer") or NOT_RECORDED,
                "method": summary.get("method") or NOT_RECORDED,
                "feature_map": "×".join(map(str, summary["feature_map"]))
                if summary.get("feature_map")
                else NOT_RECORDED,
                "images": summary.get("images"),
                "seconds": summary.get("seconds"),
            }
        )
    if not found:
        return []
    frame = pd.DataFrame(found)
    spans = {k: k for k in ("device", "batch", "target_layer", "method", "feature_map", "images", "seconds")}
    spans = {"datasets": "dataset"} | spans
    return _grouped_rows(frame, "jobs", spans, ("device", "batch", "target_layer", "method", "feature_map"))


def shapes(results: Path, matrix: Matrix) -> dict:
    """The whole section, as written to shapes.json and shown on the page."""
    cells = training_cells(Path(results), matrix)
    return {
        "source": "what the jobs wrote (metrics.json, history.csv, network.pt, stats.jsonl, fid.json, "
        "cam summary.json), not the configuration",
        "training": training_rows(cells),
        "training_cells_found": len(cells),
        "training_cells_expected": len(matrix.cells()),
        "gan": gan_rows(Path(results)),
        "synthetic": synthetic_rows(Path(results)),
        "cam": cam_rows(Path(results)),
    }
