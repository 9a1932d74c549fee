"""`mammoflow report`: results/report/{index.html, table2.md, table2.csv, cells.csv, protocols.csv,
shapes.json} from whatever of the matrix exists (missing and failed cells are marked, never dropped).

This module gathers the numbers (table2.py, compare.py, audit.py, provenance.py) and the figures, and
fills templates/report.html.j2: one self-contained page, images embedded as data URIs.
"""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from glob import glob
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
import yaml
from markupsafe import Markup

from mammoflow import paths
from mammoflow.atomic import write_text
from mammoflow.config import load_yaml, merge
from mammoflow.matrix import Matrix
from mammoflow.progress import say
from mammoflow.report import compare, shapes, table2
from mammoflow.report.table2 import DATASET_LABELS, PAPER_METRICS
from mammoflow.report.weights_check import weight_mismatches

TEMPLATES = Path(__file__).resolve().parent / "templates"
NAV = [
    ("table2", "Table 2"),
    ("protocols", "Protocols compared"),
    ("external", "External test"),
    ("figures", "Figures"),
    ("shapes", "Shapes that ran"),
    ("dag", "Workflow"),
    ("audit", "Data audit"),
    ("provenance", "Provenance"),
]


@dataclass
class Inputs:
    results: Path
    workdir: Path
    config: dict
    snakefile: Path | None
    out: Path


def _finite(value) -> bool:
    return isinstance(value, int | float | np.number) and bool(np.isfinite(value))


def _cell(value) -> str:
    """A table cell: numbers right-aligned (3 significant digits), blanks as a dash, text escaped."""
    if value is None or value is pd.NA or (isinstance(value, float) and not np.isfinite(value)):
        return Markup('<td class="num">—</td>')
    if isinstance(value, bool | np.bool_):
        text, cls = ("yes" if value else "no"), ""
    elif isinstance(value, int | np.integer):
        text, cls = str(int(value)), "num"
    elif isinstance(value, float | np.floating):
        text, cls = (f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"), "num"
    else:
        text, cls = str(value), ""
    return Markup('<td class="{}">{}</td>').format(cls, text)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )
    env.filters.update(
        num=lambda v, digits=2: table2.fmt(float(v) if _finite(v) else None, digits),
        mean_sd=table2.mean_sd,
        status=table2.status_text,
        label=lambda row: table2.row_label({"scored": "all", **row}),
        dataset=lambda d: DATASET_LABELS.get(d, d),
        cell=_cell,
    )
    env.tests["finite"] = _finite
    return env


def blocks(table: pd.DataFrame) -> list:
    """The table's rows as records, one list per (protocol, resolution), for the templates."""
    return [
        (key, part.to_dict("records")) for key, part in table.groupby(["protocol", "resolution"], sort=False)
    ]


def table_markdown(table: pd.DataFrame) -> str:
    """table2.md: one block per protocol and resolution, each paper metric as 'mean ± sd (paper, diff)'."""
    return (
        environment().get_template("table2.md.j2").render(blocks=blocks(table), paper_metrics=PAPER_METRICS)
    )


def figure(data: bytes, caption: str, mime: str = "image/png") -> dict:
    return {"uri": f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}", "caption": caption}


# ------------------------------------------------------------------------------------------------ figures
def figures_context(results: Path, cells: pd.DataFrame, pooled: dict, matrix: Matrix) -> list[dict]:
    """Figure 1 (GAN snapshots), per protocol and resolution Figures 4 and 5 of the reference model and
    ROC curves of every model, Figure 6 (CAM): headings, notes and PNGs for the template."""
    from mammoflow.report import figures

    model = "resnet18" if "resnet18" in matrix.models else matrix.models[0]
    parts = []
    snapshots = sorted(map(Path, glob(paths.gan_stage_dir("*", "*", "*", results) + "/snapshots.png")))
    first = snapshots[0].parent.parent if snapshots else None
    chosen = sorted(first.glob("stage*/snapshots.png"), key=lambda p: int(p.parent.name[5:])) if first else []
    parts.append(
        {
            "heading": "Figure 1: synthetic positives over the GAN's training",
            "note": "Rows are snapshots from the start to the end of each stage, for the same latents; "
            f"{len(snapshots)} sheets exist, shown: {first.parent.name}/{first.name}."
            if first
            else "no GAN stage has run (no augmented data set)",
            "figures": [
                figure(
                    p.read_bytes(), f"stage {p.parent.name[5:]} px; {shapes.discriminator_label(p.parent)}"
                )
                for p in chosen
            ],
        }
    )
    ok = cells[(cells["status"] == "ok") & (cells["scored"] == "all")]
    for protocol in matrix.protocols:
        for resolution in matrix.resolutions:
            heading = f"{protocol} protocol, {resolution} px"
            mine = ok[
                (ok["protocol"] == protocol) & (ok["resolution"] == resolution) & (ok["model"] == model)
            ]
            histories, confusions = {}, {}
            for dataset, group in mine.groupby("dataset", sort=False):
                label = DATASET_LABELS.get(dataset, dataset)
                where = (protocol, resolution, dataset, model)
                found = [Path(paths.cell_dir(*where, k, root=results), "history.csv") for k in group["fold"]]
                histories[label] = [pd.read_csv(path) for path in found if path.is_file()]
                tn, fp, fn, tp = (int(group[c].sum()) for c in ("tn", "fp", "fn", "tp"))
                confusions[label] = np.array([[tn, fp], [fn, tp]])
            if histories:
                png = figures.epoch_curves(histories, f"{model}, {heading}")
                parts.append(
                    {
                        "heading": f"Figure 4: {model} per epoch ({heading})",
                        "note": "",
                        "figures": [figure(png, "one thin line per fold, the thick line their mean")],
                    }
                )
            if confusions:
                png = figures.confusion_matrices(confusions, f"{model}, {heading}")
                parts.append(
                    {
                        "heading": f"Figure 5: {model} confusion matrices ({heading})",
                        "note": "",
                        "figures": [figure(png, "validation images of all folds, threshold 0.5")],
                    }
                )
            rocs = []
            for dataset in matrix.datasets:
                # Under paper, each model's curve on real images only joins its as-published curve.
                curves = {
                    m + ("" if scored == "all" else ", real images only"): (f["cancer"], f["probability"])
                    for m in matrix.models
                    for scored in ("all", "real")
                    if (f := pooled.get((protocol, resolution, dataset, m, scored))) is not None
                }
                if curves:
                    label = DATASET_LABELS.get(dataset, dataset)
                    png = figures.roc_curves(curves, f"{label}, {heading}")
                    rocs.append(figure(png, f"{label}: out-of-fold predictions of all folds"))
            if rocs:
                parts.append({"heading": f"ROC curves ({heading})", "note": "", "figures": rocs})
    cams = []
    for protocol in matrix.protocols:
        resolution = max(matrix.resolutions)
        for dataset in matrix.datasets:
            pattern = paths.cam_dir(protocol, resolution, dataset, model, "*", results) + "/figure6.png"
            found = sorted(map(Path, glob(pattern)))
            if found:
                label = DATASET_LABELS.get(dataset, dataset)
                caption = f"{protocol}, {resolution} px, {label}, {found[0].parent.name}"
                cams.append(figure(found[0].read_bytes(), caption))
    parts.append(
        {
            "heading": f"Figure 6: class activation maps of {model}, its highest-scoring validation images",
            "note": "original · CAM overlay · box centred on the map's maximum (the phantom's lesion box "
            "where known)"
            if cams
            else "no CAM output yet (the cam stage has not run)",
            "figures": cams,
            "wide": True,  # triptychs of six images: one to a row, readable
        }
    )
    return parts


# ---------------------------------------------------------------------------------------- audit, provenance
def audit_context(results: Path, matrix: Matrix) -> dict:
    from mammoflow.report import audit

    try:
        data = audit.data_audit(results)
    except (FileNotFoundError, ValueError) as error:
        return {"error": str(error)}
    leakage = audit.leakage_audit(results, matrix.protocols, matrix.k)
    sheets = []
    for dataset in ("original", "processed"):
        found = {int(p.parent.parent.name): p for p in map(Path, glob(paths.store_dir("*", dataset, results)
                 + "/contact_sheet.png")) if p.parent.parent.name.isdigit()}  # fmt: skip
        if found:
            sheets.append(figure(found[max(found)].read_bytes(), f"{dataset} images, {max(found)} px"))
    return {
        "error": None,
        "data": data,
        "leakage": leakage,
        "summary": audit.leakage_summary(leakage),
        "sheets": sheets,
    }


def provenance_context(inputs: Inputs, cells: pd.DataFrame) -> dict:
    from mammoflow.report import provenance

    ok = cells[(cells["status"] == "ok") & (cells["scored"] == "all")]
    used = (
        ok.groupby(["device", "weights"], dropna=False).size().rename("cells").reset_index()
        if len(ok)
        else None
    )
    repo = inputs.snakefile.parent if inputs.snakefile else Path.cwd()
    return {
        "git": pd.DataFrame([provenance.git_state(repo)]),
        "used": used,
        "machine": pd.DataFrame([provenance.machine()]),
        "timings": provenance.stage_timings(inputs.workdir),
        "packages": pd.DataFrame(provenance.package_versions().items(), columns=["package", "version"]),
        "config": yaml.safe_dump(inputs.config, sort_keys=False, default_flow_style=None),
    }


# shapes.py's GAN fields shown in the FID table rather than the stage table (one wide table is unreadable).
GAN_FID = (
    "fid_metric",
    "fid_value",
    "generated_images",
    "real_images",
    "streamed",
    "comparable_to_fid50k",
    "fid_seconds",
    "feature_network",
)


def shapes_context(section: dict) -> dict:
    """shapes.py's section as frames for the page, and one line per row whose jobs disagree."""
    problems = [
        f"{kind} {row['model']} {row['resolution']} px: its jobs ran with different "
        f"{', '.join(row['disagree'])}"
        for kind, rows in (("training", section["training"]), ("Grad-CAM", section["cam"]))
        for row in rows
        if row["disagree"]
    ]

    def table(rows: list[dict]) -> pd.DataFrame | None:
        if not rows:
            return None
        frame = pd.DataFrame(rows)
        if "disagree" in frame:
            frame["disagree"] = frame["disagree"].map(lambda d: ", ".join(d) if d else "none")
        return frame

    return {
        **section,
        "problems": problems,
        "training_frame": table(section["training"]),
        "gan_frame": table([{k: v for k, v in row.items() if k not in GAN_FID} for row in section["gan"]]),
        "fid_frame": table(
            [{"gan": r["gan"], "stage": r["stage"], **{k: r[k] for k in GAN_FID}} for r in section["gan"]]
        ),
        "synthetic_frame": table(section.get("synthetic", [])),
        "cam_frame": table(section["cam"]),
    }


def dag_context(inputs: Inputs) -> dict:
    from mammoflow.report import dag, provenance

    if inputs.snakefile is None:
        return {"svg": None, "edges": None, "note": "no Snakefile given: the workflow was not drawn"}
    timings = provenance.stage_timings(inputs.workdir)
    counts = dict(zip(timings["rule"], timings["jobs"].astype(int), strict=True))
    return dag.workflow_picture(inputs.snakefile, inputs.workdir, inputs.config, counts)


# ------------------------------------------------------------------------------------------------- page
def build_report(inputs: Inputs) -> dict:
    from mammoflow.report.provenance import now

    config, results, out = inputs.config, Path(inputs.results), Path(inputs.out)
    # The workflow's picture runs Snakemake on the whole DAG (seconds to a minute): in a thread, beside the
    # tables and figures, instead of after them.
    drawing = ThreadPoolExecutor(max_workers=1)
    picture = drawing.submit(dag_context, inputs)
    drawing.shutdown(wait=False)
    matrix = Matrix.from_config(config)
    options = config.get("report", {})
    resamples, seed = options.get("bootstrap", 1000), options.get("seed", 0)
    cells, table, pooled = table2.build_table(results, matrix, resamples, seed, inputs.workdir)
    comparison = compare.protocol_comparison(pooled, resamples, seed)
    out.mkdir(parents=True, exist_ok=True)
    write_text(table2.table_csv(table).to_csv(index=False, float_format="%.6g"), out / "table2.csv")
    write_text(table_markdown(table), out / "table2.md")
    write_text(cells.to_csv(index=False, float_format="%.6g"), out / "cells.csv")
    write_text(comparison.to_csv(index=False, float_format="%.6g"), out / "protocols.csv")
    ran = shapes.shapes(results, matrix)
    write_text(json.dumps(ran, indent=2, default=str) + "\n", out / "shapes.json")

    first = cells[cells["scored"] == "all"]
    counts = first["status"].value_counts().to_dict()
    status = (
        f"{counts.get('ok', 0)} of {len(first)} cells finished"
        + "".join(f", {counts[s]} {s}" for s in ("failed", "missing") if counts.get(s))
        + f". Made {now()}."
    )
    matched = bool(table[[f"{m}_paper" for m in PAPER_METRICS]].notna().any().any())
    weights = weight_mismatches(results, config, matrix.cells())
    external = [{**t, "table": compare.external_table(t)} for t in compare.external_tests(results)]
    rsna_dir = config.get("rsna_dir")
    html = (
        environment()
        .get_template("report.html.j2")
        .render(
            title="mammoflow report: Table 2 replica",
            nav=NAV,
            phantom=not rsna_dir,
            rsna_dir=rsna_dir,
            status=status,
            resamples=resamples,
            paper_metrics=PAPER_METRICS,
            blocks=blocks(table),
            matched=matched,
            weights=weights,
            paper_table=table2.paper_table(),
            comparison=comparison,
            comparison_reading=compare.reading(comparison),
            external=external,
            figures=figures_context(results, cells, pooled, matrix),
            dag=picture.result(),
            audit=audit_context(results, matrix),
            provenance=provenance_context(inputs, cells),
            shapes=shapes_context(ran),
        )
    )
    write_text(html, out / "index.html")
    say(f"report: {status} -> {out / 'index.html'} ({len(html) / 1e6:.1f} MB)")
    flagged = sum(bool(row["disagree"]) for row in ran["training"] + ran["cam"])
    say(
        f"shapes that ran: {len(ran['training'])} model x resolution rows of training cells, "
        f"{len(ran['gan'])} GAN stages, {len(ran['cam'])} Grad-CAM rows; {flagged} with disagreeing jobs "
        f"-> {out / 'shapes.json'}"
    )
    return {"cells": counts, "table_rows": len(table), "comparisons": len(comparison)}


def load_config(*texts_or_paths: str) -> dict:
    """JSON text or YAML/JSON files, laid over each other left to right as Snakemake lays config files
    (mammoflow.config.merge: mappings merge, everything else replaces)."""
    merged: dict = {}
    for item in texts_or_paths:
        if item.lstrip().startswith("{"):
            merged = merge(merged, json.loads(item))
        elif Path(item).is_file():
            merged = merge(merged, load_yaml(item))
        else:
            raise FileNotFoundError(f"--config {item}: no such file")
    return merged
