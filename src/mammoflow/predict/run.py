"""`mammoflow predict`: trained models applied to a folder of mammograms they never saw.

Steps: read the folder (inputs.py); choose the models (ensemble.py); decode and preprocess every image as
the models' training images were (prepare.py); average each model's folds, then the models; aggregate
each breast's views (mean, or max); choose thresholds on the out-of-fold predictions; write the
predictions, the Kaggle submission, Grad-CAM panels of the flagged breasts (explain.py) and, when the
folder has labels, the external validation (external.json).

Written to ``--out``:
- ``images.parquet`` / ``images.csv``: one row per image, decoded or not (``decoded``, ``reason``), its
  probability (NaN when it could not be decoded) and each model's;
- ``breasts.parquet`` / ``breasts.csv``: one row per breast (prediction_id = patient_laterality): the
  aggregate of the views that were decoded, ``views``/``views_decoded``, ``status`` ok | partial | missing,
  and the flags at both thresholds;
- ``submission.csv``: Kaggle's ``prediction_id,cancer``, one row per breast;
- ``failed.csv``: every file that could not be used, with the reason;
- ``summary.json``: models, thresholds and where they came from, counts, throughput;
- ``external.json`` (labelled input only), ``cam/<prediction_id>.png`` + ``cam/boxes.parquet``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mammoflow.atomic import atomic_path, write_json, write_parquet
from mammoflow.classify.artifact import load_artifact
from mammoflow.decode import decoder_chain
from mammoflow.devices import pick_device
from mammoflow.predict.ensemble import (
    cells_of,
    checked_artifacts,
    choose_models,
    ensemble_out_of_fold,
    find_cells,
    probabilities,
)
from mammoflow.predict.explain import explain_breasts
from mammoflow.predict.inputs import read_inputs
from mammoflow.predict.options import PredictOptions
from mammoflow.predict.prepare import Preparation, prepare_images
from mammoflow.progress import say
from mammoflow.stats import bootstrap_metrics, choose_thresholds

BREAST_KEYS = ["prediction_id", "patient_id", "laterality"]


def _decode_settings(metadatas: list[dict], override: int | None) -> tuple[int, tuple[str, ...]]:
    """Working size and decoder chain the chosen models' images were decoded with (one for all)."""
    recorded = {json.dumps(m.get("decode"), sort_keys=True) for m in metadatas}
    if len(recorded) > 1:
        raise ValueError(
            f"the chosen models were decoded differently ({sorted(recorded)}): choose models of one run"
        )
    decode = metadatas[0].get("decode") or {}
    working_size = override or decode.get("working_size")
    if not working_size:
        raise ValueError(
            f"{metadatas[0]['_dir']}: the artifact does not record its decode working size; "
            "give --working-size"
        )
    decoders = tuple(decode.get("decoders") or ("dicomsdl", "pydicom"))
    return int(working_size), decoder_chain(decoders, bool(decode.get("reduce", False)))


def aggregate_breasts(images: pd.DataFrame, how: str, labelled: bool) -> pd.DataFrame:
    """One row per breast: ``how`` (mean|max) of its decoded views' probabilities."""
    if how not in ("mean", "max"):
        raise ValueError(f"aggregation must be mean or max, not {how!r}")
    grouped = images.groupby(BREAST_KEYS, sort=True, dropna=False)
    breasts = grouped.agg(
        probability=("probability", how),  # pandas skips NaN: the views that remain
        views=("image_id", "size"),
        views_decoded=("decoded", "sum"),
    ).reset_index()
    if labelled:
        breasts["cancer"] = grouped["cancer"].max().to_numpy()
    breasts["status"] = np.where(
        breasts["views_decoded"] == 0,
        "missing",
        np.where(breasts["views_decoded"] < breasts["views"], "partial", "ok"),
    )
    return breasts


def _thresholds(choices, how: str, metadatas: list[dict]) -> dict:
    """pF1-optimal and 90 %-specificity thresholds on the out-of-fold predictions, image and breast level."""
    oof = ensemble_out_of_fold(choices)
    if len(oof):
        oof = oof.assign(decoded=True, prediction_id=oof["patient_id"].astype(str) + "_" + oof["laterality"])
        breasts = aggregate_breasts(oof, how, labelled=True)
        return {
            "source": f"out-of-fold predictions of the chosen cells ({len(oof)} images, "
            f"{len(breasts)} breasts)",
            "image": choose_thresholds(oof["cancer"].to_numpy(), oof["probability"].to_numpy()),
            "breast": choose_thresholds(breasts["cancer"].to_numpy(), breasts["probability"].to_numpy()),
        }

    # Artifacts without their cells' predictions: the mean of the thresholds each recorded on its own fold.
    def mean_of(level: str, name: str):
        values = [
            m["thresholds"][level][name]
            for m in metadatas
            if m.get("thresholds", {}).get(level, {}).get(name) is not None
        ]
        return float(np.mean(values)) if values else None

    return {
        "source": "mean of the artifacts' own validation-fold thresholds "
        "(no predictions.parquet beside them)",
        "image": {n: mean_of("image", n) for n in ("pf1", "spec90")},
        "breast": {n: mean_of("breast_mean", n) for n in ("pf1", "spec90")},
    }


def _flag(values: pd.Series, threshold: float | None) -> pd.Series:
    return (
        (values >= threshold).astype("boolean").where(values.notna())
        if threshold is not None
        else pd.Series(pd.NA, index=values.index, dtype="boolean")
    )


def _write_table(frame: pd.DataFrame, stem: Path) -> None:
    write_parquet(frame, stem.with_suffix(".parquet"))
    with atomic_path(stem.with_suffix(".csv")) as tmp:
        frame.to_csv(tmp, index=False)


# Everything a prediction writes into --out. A second prediction into the same folder removes the first's
# before it starts: an unlabelled folder writes no external.json and may flag other breasts, and the report
# reads every results/predict/*/external.json it finds.
OUTPUTS = ("images.parquet", "images.csv", "breasts.parquet", "breasts.csv", "submission.csv", "failed.csv",
           "summary.json", "external.json")  # fmt: skip


def _clear_previous(out_dir: Path) -> None:
    removed = [name for name in OUTPUTS if (out_dir / name).is_file()]
    for name in removed:
        (out_dir / name).unlink()
    if (out_dir / "cam").is_dir():
        shutil.rmtree(out_dir / "cam")
        removed.append("cam/")
    if removed:
        say(f"{out_dir}: removed the previous prediction's {', '.join(removed)}")


@dataclass
class _Plan:
    """The cells to apply, each checked in full, and how their images are decoded and prepared."""

    choices: list
    metadatas: list[dict]
    working_size: int
    decoders: tuple[str, ...]
    preparations: list

    @classmethod
    def of(cls, options: PredictOptions) -> _Plan:
        cells = cells_of(options.artifacts) if options.artifacts else find_cells(Path(options.results))
        choices = choose_models(cells, options.protocol, options.resolution, options.dataset, options.models)
        # Every artifact checked in full first: seconds, where decoding a large folder takes hours.
        metadatas = checked_artifacts(choices)
        working_size, decoders = _decode_settings(metadatas, options.working_size)
        preparations = list(dict.fromkeys(Preparation.of(m) for m in metadatas))
        return cls(choices, metadatas, working_size, decoders, preparations)


def _score(table: pd.DataFrame, arrays: dict, plan: _Plan, device, batch_size: int) -> None:
    """Each model's probability (its folds averaged) and their mean, into ``table`` (NaN where an image
    could not be decoded)."""
    rows = np.flatnonzero(table["decoded"].to_numpy())
    columns = []
    for choice in plan.choices:
        fold_probabilities = []
        for cell in choice.cells:
            model, metadata = load_artifact(cell, device)
            prepared = arrays[Preparation.of(metadata)]
            fold_probabilities.append(probabilities(model, prepared, rows, device, batch_size))
            del model
        column = f"p:{choice.label}"
        table[column] = np.nan
        table.loc[rows, column] = np.mean(fold_probabilities, axis=0) if len(rows) else []
        columns.append(column)
    table["probability"] = table[columns].mean(axis=1, skipna=False)


def _write_predictions(table, plan: _Plan, options: PredictOptions, labelled: bool, out_dir: Path):
    """Thresholds, breasts and flags; images, breasts, failed.csv and submission.csv written."""
    thresholds = _thresholds(plan.choices, options.aggregation, plan.metadatas)
    breasts = aggregate_breasts(table, options.aggregation, labelled)
    for name in ("pf1", "spec90"):
        table[f"flag_{name}"] = _flag(table["probability"], thresholds["image"][name])
        breasts[f"flag_{name}"] = _flag(breasts["probability"], thresholds["breast"][name])
    _write_table(table, out_dir / "images")
    _write_table(breasts, out_dir / "breasts")
    failed = table.loc[
        ~table["decoded"], ["image_id", "patient_id", "laterality", "view", "prediction_id", "path", "reason"]
    ]
    with atomic_path(out_dir / "failed.csv") as tmp:
        failed.to_csv(tmp, index=False)
    _write_submission(breasts, out_dir / "submission.csv", options.submission, thresholds["breast"]["pf1"])
    return thresholds, breasts, failed


def _describe(data_dir: Path, out_dir: Path, layout: str, plan: _Plan, options: PredictOptions) -> dict:
    """summary.json's account of what was applied, how, to what."""
    return {
        "name": options.name or out_dir.name,
        "data_dir": str(data_dir),
        "layout": layout,
        "models": [{"model": c.label, "folds": [str(p) for p in c.cells]} for c in plan.choices],
        "aggregation": options.aggregation,
        "decode": {"working_size": plan.working_size, "decoders": list(plan.decoders)},
    }


def _counts(table: pd.DataFrame, breasts: pd.DataFrame) -> dict:
    return {
        "n_images": len(table),
        "n_decoded": int(table["decoded"].sum()),
        "n_failed": int((~table["decoded"]).sum()),
        "n_breasts": len(breasts),
        "breasts_missing": int((breasts["status"] == "missing").sum()),
        "breasts_flagged_pf1": int(breasts["flag_pf1"].fillna(False).sum()),
    }


def _throughput(n_images: int, seconds: dict) -> dict:
    """Throughput of prediction proper: decode, preprocess and the models (with loading them); the Grad-CAM
    panels and the bootstrap depend on how many breasts are flagged and on --bootstrap."""
    decoding = seconds["decode_preprocess"]
    return {
        "decode_preprocess": n_images / decoding if decoding else None,
        "prediction": n_images / (seconds["decode_preprocess"] + seconds["models"]),
        "end_to_end": n_images / seconds["total"],
    }


def run_predict(data_dir: str | Path, out_dir: str | Path, options: PredictOptions) -> dict:
    started = time.perf_counter()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if options.threads:
        torch.set_num_threads(options.threads)
    device = pick_device(options.device)
    plan = _Plan.of(options)
    images, layout = read_inputs(data_dir)
    labelled = layout == "rsna-train"
    _clear_previous(out_dir)
    say(
        f"predict {data_dir} ({layout}, {len(images)} images): "
        + "; ".join(f"{c.label} ({len(c.cells)} folds)" for c in plan.choices)
        + f"; decode at {plan.working_size} px with {'/'.join(plan.decoders)}; {device}"
    )
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".work-") as work:
        step = time.perf_counter()
        arrays, status = prepare_images(
            images, plan.preparations, Path(work), plan.working_size, plan.decoders, options.workers,
            options.decode_limits,
        )  # fmt: skip
        seconds["decode_preprocess"], step = time.perf_counter() - step, time.perf_counter()
        table = pd.concat([images.drop(columns=["header_error"]), status], axis=1)
        _score(table, arrays, plan, device, options.batch_size)
        seconds["models"], step = time.perf_counter() - step, time.perf_counter()
        thresholds, breasts, failed = _write_predictions(table, plan, options, labelled, out_dir)
        pf1 = thresholds["breast"]["pf1"]
        cam = _explain(out_dir / "cam", table, breasts, arrays, plan.choices[0], pf1, device, options)
        seconds["cam_panels"], step = time.perf_counter() - step, time.perf_counter()

    summary = {**_describe(data_dir, out_dir, layout, plan, options), "thresholds": thresholds}
    summary.update(_counts(table, breasts), cam_panels=cam, device=str(device))
    if labelled:
        external = external_validation(table, breasts, plan.choices, thresholds, summary, options)
        write_json(external, out_dir / "external.json")
    seconds["external_validation"] = time.perf_counter() - step
    seconds["total"] = time.perf_counter() - started
    summary["seconds"] = seconds
    summary["images_per_second"] = _throughput(len(table), seconds)
    write_json(summary, out_dir / "summary.json")
    for row in failed.itertuples(index=False):
        say(f"  cannot use {row.path}: {row.reason}")
    say(
        f"predicted {summary['n_decoded']} of {len(table)} images ({summary['n_failed']} failed), "
        f"{len(breasts)} breasts ({summary['breasts_missing']} missing, {summary['breasts_flagged_pf1']} "
        f"flagged) in {seconds['total']:.1f} s -> {out_dir}"
    )
    return summary


def _write_submission(breasts: pd.DataFrame, path: Path, kind: str, threshold: float | None) -> None:
    """Kaggle's format. A breast none of whose views could be decoded gets 0 (it is listed in failed.csv
    and marked missing in breasts.csv): the submission must have a row for every prediction_id."""
    probability = breasts["probability"].fillna(0.0).clip(0.0, 1.0)
    if kind == "binary":
        if threshold is None:
            raise ValueError(
                "--submission binary needs a pF1 threshold, and the out-of-fold predictions have no positives"
            )
        probability = (probability >= threshold).astype(float)
    elif kind != "probability":
        raise ValueError(f"submission must be probability or binary, not {kind!r}")
    with atomic_path(path) as tmp:
        pd.DataFrame({"prediction_id": breasts["prediction_id"], "cancer": probability}).to_csv(
            tmp, index=False
        )


def _explain(out, table, breasts, arrays, choice, threshold, device, options) -> dict:
    """Grad-CAM panels of the flagged breasts (highest first, at most cam_max), with the first model."""
    flagged = breasts[breasts["flag_pf1"].fillna(False).astype(bool)].sort_values(
        "probability", ascending=False
    )
    chosen = flagged.head(options.cam_max)
    if chosen.empty:
        return {"breasts": 0, "flagged": len(flagged), "note": "no breast flagged at the pF1 threshold"}
    views = table[table["decoded"] & table["prediction_id"].isin(chosen["prediction_id"])].copy()
    views["row"] = views.index
    views = views.merge(
        chosen[["prediction_id", "probability"]].rename(columns={"probability": "breast_probability"}),
        on="prediction_id",
    )
    views["threshold"] = threshold
    views = views.sort_values(
        ["breast_probability", "prediction_id", "image_id"], ascending=[False, True, True]
    )
    models = [load_artifact(cell, device) for cell in choice.cells]
    explain_breasts(out, views, arrays[Preparation.of(models[0][1])], models, device)
    return {"breasts": len(chosen), "flagged": len(flagged), "model": choice.label, "folder": str(out)}


def external_validation(table, breasts, choices, thresholds, summary, options) -> dict:
    """Image- and breast-level metrics with patient-bootstrap intervals, at the out-of-fold thresholds."""
    first = choices[0]
    out = {
        "name": summary["name"],
        "data_dir": summary["data_dir"],
        "models": [c.label for c in choices],
        "protocol": first.protocol,
        "resolution": first.resolution,
        "dataset": first.dataset,
        "aggregation": options.aggregation,
        "n_images": summary["n_images"],
        "n_breasts": summary["n_breasts"],
        "n_failed": summary["n_failed"],
        "bootstrap": {"resamples": options.bootstrap, "seed": options.seed, "level": 0.95, "unit": "patient"},
        "thresholds": {
            "pf1_oof": thresholds["breast"]["pf1"],
            "spec90_oof": thresholds["breast"]["spec90"],
            "image_pf1_oof": thresholds["image"]["pf1"],
            "source": thresholds["source"],
        },
        "note": "sensitivity and specificity at the out-of-fold pF1-optimal threshold of each level; "
        "images that could not be decoded and breasts without a decoded view are left out",
    }
    for level, frame, key in (("image", table, "image"), ("breast", breasts, "breast")):
        scored = frame[frame["probability"].notna()]
        threshold = thresholds[key]["pf1"]
        out[level] = bootstrap_metrics(
            scored, threshold if threshold is not None else 0.5, options.bootstrap, options.seed
        )
        out[f"{level}_threshold"] = threshold
    return out
