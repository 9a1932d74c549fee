"""The report's data audit (what was decoded, class balance, folds) and leakage audit (per protocol and fold).

Everything here returns plain pandas DataFrames with readable column names, for the report to render.
Each path-taking function (``data_audit``, ``leakage_audit``) reads the results folder and calls a
frame-taking one (``data_audit_frames``, ``leakage_table``), which the tests feed directly.

The leakage audit asks three questions of every protocol × validation fold k, from what the workflow
actually wrote (not from what the code intends):

1. **patients in training and validation** (``data/folds.parquet``): patients with images in fold k
   and in another fold, i.e. in fold k's validation and training sets at once. Unit: patients.
2. **synthetic images in validation**: synthetic rows (``source == "synthetic"``) in the
   ``predictions.parquet`` of fold k's ``augmented`` cells (any resolution or model; the predictions are
   exactly what a cell validated on). Without such cells, the synthetic manifests that would feed fold k
   (``synthetic/{protocol}/{res}/{fold{k}|all}/manifest.parquet``): rows whose ``fold`` column is k (a
   manifest without that column puts nothing into validation). Unit: synthetic images, distinct per
   resolution (the ``paper`` stores reuse ids across resolutions).
3. **validated positives the GAN saw**: real images of fold k's validation set (``folds.parquet``) that
   are listed in ``training_images.parquet`` of the GAN whose synthetic images fed fold k's training
   (``gan/clean/fold{k}`` for ``clean``, ``gan/paper/all`` for ``paper``), any stage: a later stage is
   grown from the earlier ones, so the synthetic images owe something to every stage's training images.
   Unit: images.

A check's status is ``clean`` (count 0), ``LEAK`` (count > 0) or ``not run`` (its inputs are absent:
no folds for the protocol, no augmented data set, no GAN).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path

import pandas as pd

from mammoflow import paths

CHECK_PATIENTS = "patients in training and validation"
CHECK_SYNTHETIC = "synthetic images in validation"
CHECK_GAN = "validated positives the GAN saw"
CHECKS = (CHECK_PATIENTS, CHECK_SYNTHETIC, CHECK_GAN)

CLEAN, LEAK, NOT_RUN = "clean", "LEAK", "not run"

LEAKAGE_COLUMNS = ["protocol", "fold", "check", "count", "examples", "status", "evidence"]
SUMMARY_COLUMNS = [
    "protocol",
    "check",
    "folds checked",
    "folds with leak",
    "total count (sum over folds)",
    "verdict",
]
ERROR_COLUMNS = ["image_id", "patient_id", "path", "reason"]
PATIENTS_PER_CLASS = "patients (with ≥ 1 image of the class)"
CLASS_COLUMNS = ["class", "images", PATIENTS_PER_CLASS]
FOLD_COLUMNS = ["protocol", "fold", "images", "positives", "positive_rate", "patients"]
EXAMPLES = 3


class AuditError(FileNotFoundError):
    """An input the audit cannot do without is missing; the message names the file."""


# ----------------------------------------------------------------------------------------------- data audit


@dataclass
class DataAudit:
    classes: pd.DataFrame  # class, images, patients (with ≥ 1 image of the class)
    decode_errors: pd.DataFrame  # image_id, patient_id, path, reason
    reasons: pd.DataFrame  # reason, count
    fold_balance: pd.DataFrame  # protocol, fold, images, positives, positive_rate, patients
    notes: list[str] = field(default_factory=list)


def class_table(index: pd.DataFrame) -> pd.DataFrame:
    """Images and patients per class of the decoded images; a patient counts in every class it has an image
    of (RSNA labels are per breast), so the classes' patients can add up to more than the total."""
    cancer = index["cancer"].astype(int) == 1
    rows = [("cancer", index[cancer]), ("normal", index[~cancer]), ("total", index)]
    return pd.DataFrame(
        [(name, len(part), part["patient_id"].nunique()) for name, part in rows], columns=CLASS_COLUMNS
    )


def decode_error_table(errors: pd.DataFrame | None) -> pd.DataFrame:
    """The files that could not be decoded, with the columns ERROR_COLUMNS (empty frame when none)."""
    if errors is None or errors.empty:
        types = {"image_id": "int64", "patient_id": "int64", "path": "object", "reason": "object"}
        return pd.DataFrame({name: pd.Series(dtype=kind) for name, kind in types.items()})
    frame = errors.reindex(columns=ERROR_COLUMNS).copy()
    for name in ("path", "reason"):
        frame[name] = frame[name].astype("object").where(frame[name].notna(), "")
        frame[name] = frame[name].map(str)
    return frame.sort_values(["reason", "image_id"], kind="stable").reset_index(drop=True)


def reason_table(decode_errors: pd.DataFrame) -> pd.DataFrame:
    if decode_errors.empty:
        return pd.DataFrame({"reason": pd.Series(dtype="object"), "count": pd.Series(dtype="int64")})
    counts = decode_errors["reason"].value_counts(sort=False)
    frame = pd.DataFrame({"reason": counts.index.astype(object), "count": counts.to_numpy().astype("int64")})
    return frame.sort_values(["count", "reason"], ascending=[False, True], kind="stable").reset_index(
        drop=True
    )


def fold_balance_table(folds: pd.DataFrame) -> pd.DataFrame:
    """Per protocol and validation fold: images, positives, positive rate and patients of that fold."""
    if folds.empty:
        return pd.DataFrame(columns=FOLD_COLUMNS)
    grouped = folds.assign(cancer=folds["cancer"].astype(int)).groupby(["protocol", "fold"], sort=True)
    frame = grouped.agg(
        images=("image_id", "size"), positives=("cancer", "sum"), patients=("patient_id", "nunique")
    ).reset_index()
    frame["positive_rate"] = (frame["positives"] / frame["images"]).round(4)
    frame["protocol"] = frame["protocol"].astype(object)
    return frame[FOLD_COLUMNS].astype({"fold": "int64", "images": "int64", "positives": "int64"})


def data_audit_frames(
    index: pd.DataFrame, errors: pd.DataFrame | None, folds: pd.DataFrame, errors_note: str | None = None
) -> DataAudit:
    """The data audit from in-memory frames (``errors`` None: the error list was not found)."""
    classes = class_table(index)
    decode_errors = decode_error_table(errors)
    notes = [
        f"Decoded images: {len(index)} from {index['patient_id'].nunique()} patients. Patients are counted "
        "in every class they have an image of (labels are per breast), so cancer + normal patients can "
        "exceed the total."
    ]
    both = index.groupby("patient_id")["cancer"].nunique()
    if (both > 1).any():
        notes.append(f"{int((both > 1).sum())} patients have both cancer and normal images.")
    if errors is None:
        notes.append(errors_note or "The list of files that could not be decoded was not found.")
    elif decode_errors.empty:
        notes.append("Every file was decoded (no decode errors).")
    else:
        lost = decode_errors["patient_id"].nunique()
        notes.append(
            f"{len(decode_errors)} files ({lost} patients) could not be decoded and are in no fold or store; "
            "they are listed below with the reason."
        )
    protocols = sorted(folds["protocol"].unique()) if not folds.empty else []
    for protocol in protocols:
        part = folds[folds["protocol"] == protocol]
        missing = set(index["image_id"]) - set(part["image_id"])
        if missing:
            notes.append(f"{protocol}: {len(missing)} decoded images have no fold.")
    return DataAudit(classes, decode_errors, reason_table(decode_errors), fold_balance_table(folds), notes)


def _read_required(path: str, what: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise AuditError(f"{path}: not found ({what}); run the workflow's data stage first")
    return pd.read_parquet(path)


def data_audit(results: str | Path) -> DataAudit:
    """The data audit of a results folder (decoded/index.parquet, decoded/errors.parquet, data/folds.parquet).

    Raises AuditError naming the file when the index or the folds are missing; a missing error list is a
    note, not an error."""
    index = _read_required(paths.decoded_index(results), "the decoded images' index")
    folds = _read_required(paths.folds_table(results), "the fold assignment")
    errors_path = Path(paths.decoded_errors(results))
    errors = pd.read_parquet(errors_path) if errors_path.is_file() else None
    note = f"{errors_path} was not found: the decode errors cannot be listed."
    return data_audit_frames(index, errors, folds, errors_note=note)


# ------------------------------------------------------------------------------------------- leakage audit


gan_part = paths.gan_part


def _examples(ids: Iterable) -> str:
    ids = sorted(dict.fromkeys(int(i) for i in ids))
    text = ", ".join(str(i) for i in ids[:EXAMPLES])
    return text + (", …" if len(ids) > EXAMPLES else "")


def _row(protocol, fold, check, ids, evidence, count=None) -> dict:
    ids = list(ids)
    count = len(set(ids)) if count is None else int(count)
    status = LEAK if count else CLEAN
    return dict(
        zip(LEAKAGE_COLUMNS, (protocol, fold, check, count, _examples(ids), status, evidence), strict=True)
    )


def _not_run(protocol, fold, check, why) -> dict:
    return dict(zip(LEAKAGE_COLUMNS, (protocol, fold, check, pd.NA, "", NOT_RUN, why), strict=True))


def patients_check(folds: pd.DataFrame, protocol: str, fold: int) -> dict:
    part = folds[folds["protocol"] == protocol]
    if part.empty:
        return _not_run(protocol, fold, CHECK_PATIENTS, f"data/folds.parquet has no {protocol} folds")
    in_fold = part["fold"] == fold
    valid = set(part.loc[in_fold, "patient_id"])
    train = set(part.loc[~in_fold, "patient_id"])
    both = valid & train
    evidence = f"data/folds.parquet: patients with images in fold {fold} and in another fold"
    return _row(protocol, fold, CHECK_PATIENTS, both, evidence)


def _units(synthetic: pd.DataFrame) -> str:
    ids, resolutions = synthetic["image_id"].nunique(), synthetic["resolution"].nunique()
    return f"; {ids} distinct ids at {resolutions} resolutions" if resolutions > 1 else ""


def synthetic_check(
    protocol: str, fold: int, predictions: pd.DataFrame | None, manifests: pd.DataFrame | None
) -> dict:
    """``predictions``: the validation predictions of fold ``fold``'s augmented cells, with ``resolution``
    and ``cell`` columns; ``manifests``: the synthetic manifests feeding fold ``fold``, with ``resolution``
    and ``store`` columns. Either may be None (absent)."""
    if predictions is not None and not predictions.empty:
        synthetic = predictions[predictions["source"].astype(str) == "synthetic"]
        count = len(synthetic[["resolution", "image_id"]].drop_duplicates())
        cells = sorted(predictions["cell"].unique())
        evidence = (
            f"predictions of {len(cells)} augmented cells ({', '.join(cells)}): rows with source synthetic"
            + _units(synthetic)
        )
        return _row(protocol, fold, CHECK_SYNTHETIC, synthetic["image_id"], evidence, count=count)
    if manifests is not None and not manifests.empty:
        stores = sorted(manifests["store"].unique())
        if "fold" in manifests.columns:
            scored = manifests[manifests["fold"].notna() & (manifests["fold"] == fold)]
        else:
            scored = manifests.iloc[:0]
        count = len(scored[["resolution", "image_id"]].drop_duplicates())
        evidence = (
            f"no augmented cell predictions; synthetic manifests ({', '.join(stores)}): rows with fold {fold}"
            + ("" if "fold" in manifests.columns else " (no fold column: training only)")
            + _units(scored)
        )
        return _row(protocol, fold, CHECK_SYNTHETIC, scored["image_id"], evidence, count=count)
    return _not_run(
        protocol, fold, CHECK_SYNTHETIC, "no augmented cell predictions and no synthetic store for this fold"
    )


def gan_check(folds: pd.DataFrame, protocol: str, fold: int, gan_seen: pd.DataFrame | None) -> dict:
    """``gan_seen``: training_images.parquet rows (image_id, stage) of the GAN that fed fold ``fold``."""
    part = gan_part(protocol, fold)
    if gan_seen is None or gan_seen.empty:
        return _not_run(protocol, fold, CHECK_GAN, f"no training_images.parquet under gan/{protocol}/{part}")
    table = folds[folds["protocol"] == protocol]
    if table.empty:
        return _not_run(protocol, fold, CHECK_GAN, f"data/folds.parquet has no {protocol} folds")
    validated = set(table.loc[table["fold"] == fold, "image_id"])
    seen = validated & set(gan_seen["image_id"])
    stages = ", ".join(str(s) for s in sorted(gan_seen["stage"].unique())) if "stage" in gan_seen else "?"
    evidence = (
        f"training_images.parquet of gan/{protocol}/{part} (stages {stages}: "
        f"{gan_seen['image_id'].nunique()} images) ∩ fold {fold}'s validation images in data/folds.parquet"
    )
    return _row(protocol, fold, CHECK_GAN, seen, evidence)


Key = tuple[str, int]


def leakage_table(
    folds: pd.DataFrame,
    protocols: Iterable[str],
    k: int,
    predictions: Mapping[Key, pd.DataFrame] | None = None,
    manifests: Mapping[Key, pd.DataFrame] | None = None,
    gan_seen: Mapping[Key, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """The leakage audit from in-memory frames, keyed by (protocol, fold); a missing key is an absent input.

    ``predictions[(p, k)]``: validation predictions of fold k's augmented cells (columns image_id, source,
    resolution, cell); ``manifests[(p, k)]``: synthetic manifests feeding fold k (image_id, resolution,
    store, optional fold); ``gan_seen[(p, k)]``: training images (image_id, stage) of the GAN feeding fold k.
    """
    predictions, manifests, gan_seen = predictions or {}, manifests or {}, gan_seen or {}
    rows = []
    for protocol in protocols:
        for fold in range(k):
            key = (protocol, fold)
            rows.append(patients_check(folds, protocol, fold))
            rows.append(synthetic_check(protocol, fold, predictions.get(key), manifests.get(key)))
            rows.append(gan_check(folds, protocol, fold, gan_seen.get(key)))
    frame = pd.DataFrame(rows, columns=LEAKAGE_COLUMNS)
    frame["count"] = frame["count"].astype("Int64")
    frame["fold"] = frame["fold"].astype("int64")
    return frame


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame | None:
    return pd.concat(frames, ignore_index=True) if frames else None


def read_augmented_predictions(results: Path, protocol: str, fold: int) -> pd.DataFrame | None:
    """Validation predictions of every augmented cell of (protocol, fold), any resolution or model."""
    frames = []
    for name in sorted(
        glob(paths.cell_dir(protocol, "*", "augmented", "*", fold, root=results) + "/predictions.parquet")
    ):
        cell = paths.parse_cell(name)
        frame = pd.read_parquet(name)
        if "source" not in frame.columns or "image_id" not in frame.columns:
            raise ValueError(f"{name}: predictions without image_id/source columns: cannot audit them")
        frames.append(frame.assign(resolution=cell.res, cell=f"{cell.res}/{cell.model}"))
    return _concat(sorted(frames, key=lambda f: f["resolution"].iat[0]) if frames else frames)


def read_synthetic_manifests(results: Path, protocol: str, fold: int) -> pd.DataFrame | None:
    part = gan_part(protocol, fold)
    frames = []
    for name in glob(paths.synthetic_dir(protocol, "*", part, root=results) + "/manifest.parquet"):
        res = Path(name).parent.parent.name
        if res.isdigit():
            store = Path(name).parent.relative_to(results).as_posix()  # synthetic/{protocol}/{res}/{part}
            frames.append((int(res), pd.read_parquet(name).assign(resolution=int(res), store=store)))
    return _concat([frame for _, frame in sorted(frames, key=lambda pair: pair[0])])


def read_gan_seen(results: Path, protocol: str, fold: int) -> pd.DataFrame | None:
    frames = []
    for name in sorted(
        glob(
            paths.gan_stage_dir(protocol, gan_part(protocol, fold), "*", results) + "/training_images.parquet"
        )
    ):
        match = re.fullmatch(r"stage(\d+)", Path(name).parent.name)
        if match:
            frames.append(pd.read_parquet(name, columns=["image_id"]).assign(stage=int(match.group(1))))
    return _concat(frames)


def leakage_audit(results: str | Path, protocols: list[str], k: int) -> pd.DataFrame:
    """The leakage audit of a results folder: columns protocol, fold, check, count, examples, status, evidence
    (one row per protocol × fold × check; count is <NA> where the check was not run)."""
    folds = _read_required(paths.folds_table(results), "the fold assignment")
    predictions, manifests, gan_seen = {}, {}, {}
    for protocol in protocols:
        for fold in range(k):
            key = (protocol, fold)
            for store, reader in (
                (predictions, read_augmented_predictions),
                (manifests, read_synthetic_manifests),
                (gan_seen, read_gan_seen),
            ):
                frame = reader(results, protocol, fold)
                if frame is not None:
                    store[key] = frame
    return leakage_table(folds, protocols, k, predictions, manifests, gan_seen)


def leakage_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per protocol and check: folds checked, folds with a leak, the counts summed over folds (a patient
    spanning several folds counts once per fold) and a verdict: LEAK if any fold leaks, clean if every fold
    was checked and is clean, not run if none was, else "clean where run (n of k folds)"."""
    rows = []
    for protocol in dict.fromkeys(frame["protocol"]):
        part = frame[frame["protocol"] == protocol]
        for check in dict.fromkeys(part["check"]):
            rows_ = part[part["check"] == check]
            run = rows_[rows_["status"] != NOT_RUN]
            leaks = int((rows_["status"] == LEAK).sum())
            if leaks:
                verdict = LEAK
            elif run.empty:
                verdict = NOT_RUN
            elif len(run) == len(rows_):
                verdict = CLEAN
            else:
                verdict = f"clean where run ({len(run)} of {len(rows_)} folds)"
            total = int(run["count"].sum()) if not run.empty else pd.NA
            rows.append((protocol, check, len(run), leaks, total, verdict))
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    summary[SUMMARY_COLUMNS[4]] = summary[SUMMARY_COLUMNS[4]].astype("Int64")
    return summary
