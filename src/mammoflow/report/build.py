"""`mammoflow report`: results/report/{index.html, table2.md, table2.csv, cells.csv} from whatever of the
matrix exists (missing and failed cells are marked, never dropped)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from mammoflow.atomic import write_text
from mammoflow.progress import say
from mammoflow.report import page
from mammoflow.report.table2 import (
    DATASET_LABELS,
    EXTRA_METRICS,
    KEYS,
    PAPER_METRICS,
    Matrix,
    build_table,
    cell_dir,
    fmt,
    mean_sd,
    paper_table,
    status_text,
    table_csv,
    table_markdown,
)

PAPER = "Prodan, Paraschiv &amp; Stanciu, <i>Applied Sciences</i> 13, 4272 (2023)"
METRIC_LABELS = {
    "accuracy": "accuracy",
    "auc": "AUC",
    "precision": "precision",
    "recall": "recall",
    "f1": "F1",
}


@dataclass
class Inputs:
    results: Path
    workdir: Path
    config: dict
    snakefile: Path | None
    out: Path


# --------------------------------------------------------------------------------------------- Table 2
def _metric_cell(row, name: str) -> str:
    text = page.esc(mean_sd(row, name))
    paper = row.get(f"{name}_paper")
    if paper is not None and np.isfinite(paper):
        text += f'<span class="paper">paper {paper:.2f} · {row[f"{name}_diff"]:+.2f}</span>'
    return f'<td class="num">{text}</td>'


def table2_html(table: pd.DataFrame, models: list[str]) -> str:
    blocks = []
    for (protocol, resolution), block in table.groupby(["protocol", "resolution"], sort=False):
        head = (
            "<tr><th>data set</th><th>model</th>"
            + "".join(f"<th>{METRIC_LABELS[m]}</th>" for m in PAPER_METRICS)
            + "<th>pooled AUC (95% CI)</th><th>pF1</th><th>breast AUC</th><th>sens. @ 90% spec.</th>"
            + "<th>CAM hit (chance) · IoU</th><th>folds</th></tr>"
        )
        rows = []
        for dataset, group in block.groupby("dataset", sort=False):
            first = True
            for _, row in group.iterrows():
                cls = ' class="missing"' if row["folds_ok"] == 0 else ""
                label = DATASET_LABELS.get(dataset, dataset)
                cells = f'<td rowspan="{len(group)}">{page.esc(label)}</td>' if first else ""
                first = False
                cells += f"<td>{page.esc(row['model'])}</td>"
                if row["folds_ok"] == 0:
                    cells += f'<td colspan="10">no fold finished ({page.esc(status_text(row))})</td>'
                else:
                    cells += "".join(_metric_cell(row, m) for m in PAPER_METRICS)
                    auc = row["pooled_auc"]
                    ci = (
                        f"{fmt(auc)} ({fmt(row['pooled_auc_low'])}–{fmt(row['pooled_auc_high'])})"
                        if np.isfinite(auc)
                        else "—"
                    )
                    cells += f'<td class="num">{ci}</td>'
                    cells += "".join(
                        f'<td class="num">{page.esc(mean_sd(row, m))}</td>' for m in EXTRA_METRICS
                    )
                    hit = row.get("cam_hit_rate")
                    cam = (
                        f"{fmt(hit)} ({fmt(row['cam_chance'])}) · {fmt(row['cam_iou'])}"
                        if hit is not None and np.isfinite(hit)
                        else "—"
                    )
                    cells += f'<td class="num">{cam}</td><td>{page.esc(status_text(row))}</td>'
                rows.append(f"<tr{cls}>{cells}</tr>")
        blocks.append(
            f"<h3>{page.esc(protocol)} protocol, {resolution} px</h3>"
            f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
        )
    return "\n".join(blocks)


def paper_html(matched: bool) -> str:
    paper = paper_table()
    note = (
        "The paper's values appear beside ours above where the resolution matches."
        if matched
        else "None of the resolutions run here is one of the paper's (256, 512 px), so no value above is "
        "compared with the paper; its table is shown as published."
    )
    return (
        page.paragraph(note, "muted")
        + "<details><summary>The paper's Table 2 as published</summary>"
        + (page.frame_table(paper) + "</details>")
    )


# ------------------------------------------------------------------------------------------------ figures
def _reference_model(models: list[str]) -> str:
    return "resnet18" if "resnet18" in models else models[0]


def _ok_folds(cells: pd.DataFrame, protocol, resolution, dataset, model) -> list[int]:
    mask = (
        (cells["protocol"] == protocol)
        & (cells["resolution"] == resolution)
        & (cells["dataset"] == dataset)
        & (cells["model"] == model)
        & (cells["status"] == "ok")
    )
    return cells.loc[mask, "fold"].tolist()


def figures_html(inputs: Inputs, cells: pd.DataFrame, pooled: dict, matrix: Matrix) -> str:
    from mammoflow.report import figures

    results = inputs.results
    model = _reference_model(matrix.models)
    parts = []
    # Figure 1: the GAN's fixed-latent snapshots over training, per stage.
    snapshots = sorted((results / "gan").glob("*/*/stage*/snapshots.png"))
    if snapshots:
        protocol, part = snapshots[0].parent.parent.parent.name, snapshots[0].parent.parent.name
        chosen = [
            p for p in snapshots if p.parent.parent.name == part and p.parent.parent.parent.name == protocol
        ]
        chosen.sort(key=lambda p: int(p.parent.name.removeprefix("stage")))
        grid = "".join(
            page.figure(
                p.read_bytes(), f"stage {p.parent.name.removeprefix('stage')} px ({protocol}, {part})"
            )
            for p in chosen
        )
        parts.append(
            "<h3>Figure 1: synthetic positives over the GAN's training</h3>"
            + page.paragraph(
                "Rows are snapshots from the start to the end of each stage, for the same latent vectors. "
                f"{len(snapshots)} snapshot sheets exist; shown: {page.esc(protocol)}/{page.esc(part)}.",
                "muted",
            )
            + f'<div class="grid">{grid}</div>'
        )
    else:
        parts.append(
            "<h3>Figure 1</h3>" + page.paragraph("no GAN stage has run (no augmented data set)", "muted")
        )

    for protocol in matrix.protocols:
        for resolution in matrix.resolutions:
            # Figure 4: per-epoch curves of the reference model.
            histories = {}
            confusions = {}
            for dataset in matrix.datasets:
                for fold in _ok_folds(cells, protocol, resolution, dataset, model):
                    path = cell_dir(results, protocol, resolution, dataset, model, fold) / "history.csv"
                    if path.is_file():
                        histories[f"{DATASET_LABELS.get(dataset, dataset)}, fold {fold}"] = pd.read_csv(path)
                ok = cells[
                    (cells["protocol"] == protocol)
                    & (cells["resolution"] == resolution)
                    & (cells["dataset"] == dataset)
                    & (cells["model"] == model)
                    & (cells["status"] == "ok")
                ]
                if len(ok):
                    tn, fp, fn, tp = (ok[c].sum() for c in ("tn", "fp", "fn", "tp"))
                    confusions[DATASET_LABELS.get(dataset, dataset)] = np.array(
                        [[tn, fp], [fn, tp]], dtype=int
                    )
            heading = f"{protocol} protocol, {resolution} px"
            if histories:
                parts.append(
                    f"<h3>Figure 4: {page.esc(model)} per epoch ({page.esc(heading)})</h3>"
                    + page.figure(figures.epoch_curves(histories, f"{model}, {heading}"), "one line per fold")
                )
            if confusions:
                parts.append(
                    f"<h3>Figure 5: {page.esc(model)} confusion matrices ({page.esc(heading)})</h3>"
                    + page.figure(
                        figures.confusion_matrices(confusions, f"{model}, {heading}"),
                        "validation images of all folds, threshold 0.5",
                    )
                )
            # ROC per data set, every model pooled over folds.
            rocs = []
            for dataset in matrix.datasets:
                curves = {}
                for m in matrix.models:
                    frame = pooled.get((protocol, resolution, dataset, m))
                    if frame is not None:
                        curves[m] = (frame["cancer"].to_numpy(), frame["probability"].to_numpy())
                if curves:
                    label = DATASET_LABELS.get(dataset, dataset)
                    rocs.append(
                        page.figure(
                            figures.roc_curves(curves, f"{label}, {heading}"),
                            f"{page.esc(label)}: out-of-fold predictions of all folds",
                        )
                    )
            if rocs:
                parts.append(
                    f'<h3>ROC curves ({page.esc(heading)})</h3><div class="grid">{"".join(rocs)}</div>'
                )

    # Figure 6: CAM triptychs of the reference model, largest resolution, first fold with a figure.
    cams = []
    for protocol in matrix.protocols:
        resolution = max(matrix.resolutions)
        for dataset in matrix.datasets:
            for fold in range(matrix.k):
                path = (
                    results
                    / "cam"
                    / protocol
                    / str(resolution)
                    / dataset
                    / model
                    / f"fold{fold}"
                    / "figure6.png"
                )
                if path.is_file():
                    label = DATASET_LABELS.get(dataset, dataset)
                    cams.append(
                        page.figure(path.read_bytes(), f"{protocol}, {resolution} px, {label}, fold {fold}")
                    )
                    break
    parts.append(
        f"<h3>Figure 6: Grad-CAM of {page.esc(model)}, its highest-scoring validation images</h3>"
        + (
            page.paragraph(
                "original · CAM overlay · box centred on the map's maximum (the lesion box in the phantom's "
                "ground truth where known)",
                "muted",
            )
            + "".join(cams)
            if cams
            else page.paragraph("no CAM output yet (the cam stage has not run)", "muted")
        )
    )
    return "\n".join(parts)


def dag_html(inputs: Inputs) -> str:
    from mammoflow.report import dag

    if inputs.snakefile is None:
        return page.paragraph("no Snakefile given: the DAG was not drawn", "muted")
    try:
        dot = dag.rulegraph_dot(inputs.snakefile, inputs.workdir, inputs.config)
        counts = _job_counts(inputs.workdir)
        data, mime = dag.render_dag(dot, counts)
    except Exception as error:  # the report is still useful without the picture; say why it is missing
        return page.paragraph(f"the DAG could not be drawn: {page.esc(error)}", "banner bad")
    return page.figure(data, "the workflow's rules (snakemake --rulegraph); × n = jobs that ran", mime, "DAG")


def _job_counts(workdir: Path) -> dict[str, int]:
    from mammoflow.report.provenance import stage_timings

    timings = stage_timings(workdir)
    return dict(zip(timings["rule"], timings["jobs"].astype(int), strict=True)) if len(timings) else {}


# --------------------------------------------------------------------------------------------- data audit
def audit_html(inputs: Inputs, matrix: Matrix) -> str:
    from mammoflow.report import audit

    parts = []
    try:
        data = audit.data_audit(inputs.results)
    except (FileNotFoundError, ValueError) as error:
        return page.paragraph(f"data audit not possible: {page.esc(error)}", "banner bad")
    parts.append("<h3>Images and patients per class</h3>" + page.frame_table(data.classes))
    errors = data.decode_errors
    parts.append(
        f"<h3>Files that could not be decoded ({len(errors)})</h3>"
        + page.frame_table(data.reasons, "every file was decoded")
        + (
            "<details><summary>the files</summary>" + page.frame_table(errors) + "</details>"
            if len(errors)
            else ""
        )
    )
    parts.append("<h3>Fold balance</h3>" + page.frame_table(data.fold_balance))
    for note in data.notes:
        parts.append(page.paragraph(page.esc(note), "muted"))
    leakage = audit.leakage_audit(inputs.results, matrix.protocols, matrix.k)
    parts.append(
        "<h3>Leakage audit</h3>"
        + page.paragraph(
            "Per protocol: patients with images in both training and validation of a fold, synthetic images "
            "scored in validation, and validation positives that the GAN behind the fold's synthetic images "
            "was trained on. The paper protocol has all three by design (it reproduces the published "
            "method); the clean protocol must have none.",
            "muted",
        )
        + page.frame_table(audit.leakage_summary(leakage), status_column="verdict")
        + "<details><summary>per fold</summary>"
        + page.frame_table(leakage, status_column="status")
        + "</details>"
    )
    for dataset in ("original", "processed"):
        sheets = sorted(
            (inputs.results / "data").glob(f"*/{dataset}/contact_sheet.png"),
            key=lambda p: int(p.parent.parent.name),
        )
        if sheets:
            parts.append(
                page.figure(sheets[-1].read_bytes(), f"{dataset} images, {sheets[-1].parent.parent.name} px")
            )
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------- provenance
def provenance_html(inputs: Inputs, cells: pd.DataFrame) -> str:
    from mammoflow.report import provenance

    repo = inputs.snakefile.parent if inputs.snakefile else Path.cwd()
    ok = cells[cells["status"] == "ok"]
    used = (
        ok.groupby(["device", "weights"], dropna=False).size().rename("cells").reset_index()
        if len(ok)
        else pd.DataFrame()
    )
    timings = provenance.stage_timings(inputs.workdir)
    config = yaml.safe_dump(inputs.config, sort_keys=False, default_flow_style=None)
    return "\n".join(
        [
            "<h3>Code</h3>" + page.frame_table(pd.DataFrame([provenance.git_state(repo)])),
            "<h3>Where the cells ran</h3>"
            + page.frame_table(used, "no cell finished")
            + page.paragraph("Report made on:", "muted")
            + page.frame_table(pd.DataFrame([provenance.machine()])),
            "<h3>Stages: when they finished and how long they took</h3>"
            + page.paragraph("From Snakemake's benchmark files (wall-clock seconds per job).", "muted")
            + page.frame_table(timings, "no benchmark files found"),
            "<h3>Packages</h3>"
            + page.frame_table(
                pd.DataFrame(provenance.package_versions().items(), columns=["package", "version"])
            ),
            f"<h3>Configuration</h3><pre>{page.esc(config)}</pre>",
        ]
    )


# ------------------------------------------------------------------------------------------------- page
def build_report(inputs: Inputs) -> dict:
    from mammoflow.report.provenance import now

    config = inputs.config
    matrix = Matrix.from_config(config)
    report = config.get("report", {})
    cells, table, pooled = build_table(
        inputs.results, matrix, report.get("bootstrap", 1000), report.get("seed", 0), inputs.workdir
    )
    out = inputs.out
    out.mkdir(parents=True, exist_ok=True)
    csv = table_csv(table)
    write_text(csv.to_csv(index=False, float_format="%.6g"), out / "table2.csv")
    write_text(table_markdown(table) + "\n", out / "table2.md")
    write_text(cells.to_csv(index=False, float_format="%.6g"), out / "cells.csv")

    phantom = not config.get("rsna_dir")
    counts = cells["status"].value_counts().to_dict()
    banner = (
        '<div class="banner bad"><b>Made on the built-in phantom data.</b> These numbers show that the '
        "workflow runs; they say nothing about the paper's numbers or about real mammograms.</div>"
        if phantom
        else f'<div class="banner">RSNA data from <code>{page.esc(config["rsna_dir"])}</code>.</div>'
    )
    status = (
        f"{counts.get('ok', 0)} of {len(cells)} cells finished"
        + (f", {counts['failed']} failed" if counts.get("failed") else "")
        + (f", {counts['missing']} missing" if counts.get("missing") else "")
        + f". Made {now()}."
    )
    matched = bool(table[[f"{m}_paper" for m in PAPER_METRICS]].notna().any().any())
    intro = page.paragraph(
        f"A replication of {PAPER}, Table 2: five classifiers on original, processed and processed + "
        "synthetic images. Protocols: <b>clean</b> = folds grouped by patient, a GAN per fold trained on "
        "its training positives only, synthetic images only in training; <b>paper</b> = as published "
        "(image-level folds, synthetic images added before the split, so they are validated too)."
    )
    body = [
        banner,
        intro + page.paragraph(page.esc(status), "muted"),
        page.section(
            "table2",
            "Table 2 replica",
            page.paragraph(
                "Mean ± sd over folds at threshold 0.5; beneath each, the paper's value and ours − paper. "
                "Beyond the paper: pooled AUC = all folds' out-of-fold predictions together, with a 95% "
                "interval from resampling patients; pF1 = probabilistic F1 (the RSNA metric); breast AUC = "
                "mean probability per breast; CAM hit = share of lesion images whose Grad-CAM maximum lies "
                "in the lesion box (chance = mean box area share), IoU of the CAM box with the lesion box.",
                "muted",
            )
            + table2_html(table, matrix.models)
            + paper_html(matched),
        ),
        page.section("figures", "Figures", figures_html(inputs, cells, pooled, matrix)),
        page.section("dag", "The workflow", dag_html(inputs)),
        page.section("audit", "Data audit", audit_html(inputs, matrix)),
        page.section("provenance", "Provenance", provenance_html(inputs, cells)),
    ]
    nav = [("table2", "Table 2"), ("figures", "Figures"), ("dag", "Workflow"), ("audit", "Data audit"),
           ("provenance", "Provenance")]  # fmt: skip
    html = page.document("mammoflow report: Table 2 replica", nav, "\n".join(body))
    write_text(html, out / "index.html")
    say(f"report: {status} -> {out / 'index.html'} ({len(html) / 1e6:.1f} MB)")
    return {"cells": counts, "table_rows": len(table)}


def load_config(*texts_or_paths: str) -> dict:
    """JSON text or YAML/JSON files, merged left to right as Snakemake merges config files (mappings
    merge, everything else replaces)."""
    merged: dict = {}
    for item in texts_or_paths:
        path = Path(item)
        if not item.lstrip().startswith("{"):
            if not path.is_file():
                raise FileNotFoundError(f"--config {item}: no such file")
            _merge(merged, yaml.safe_load(path.read_text()) or {})
        else:
            _merge(merged, json.loads(item))
    return merged


def _merge(into: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


__all__ = ["KEYS", "Inputs", "build_report", "load_config"]
