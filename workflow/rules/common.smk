# Shared by every stage's rules: the data source, the results tree (src/mammoflow/paths.py), each stage's
# parameters and targets. The rule files hold rules only.
import hashlib
import json
import re
import shlex
import sys
import time
from pathlib import Path

from mammoflow import paths
from mammoflow.gan.settings import needed_stages, source_resolution, stage_settings, synthesis_stage
from mammoflow.samplesheet import sheet_problems
from mammoflow.weights import catalog as weights_catalog

# Rules run `python -m mammoflow ...` with this checkout's src/ on PYTHONPATH: without conda, the Python
# that runs Snakemake (a venv works without being activated); with --software-deployment-method conda, the
# stage's environment (envs/*.yaml), which Snakemake activates inside the job.
SRC = str(Path(workflow.basedir) / "src")
_CONDA = "conda" in {str(m).lower().rsplit(".", 1)[-1] for m in workflow.deployment_settings.deployment_method}
_PATH = "" if _CONDA else f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:\"$PATH\"; "
# (Snakemake formats the prefix like a command: doubled braces stay shell braces.)
shell.prefix(f"set -euo pipefail; {_PATH}export PYTHONPATH={shlex.quote(SRC)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")

RESULTS = paths.RESULTS
USE_PHANTOM = not config["rsna_dir"]
DATA_DIR = paths.phantom_dir() if USE_PHANTOM else config["rsna_dir"]
SHEET = f"{DATA_DIR}/train.csv"
LESIONS = f"{paths.phantom_dir()}/lesions.csv" if USE_PHANTOM else ""
SHARDS = range(config["decode"]["shards"])
STORE_DATASETS = [d for d in config["datasets"] if d in ("original", "processed")]
GAN = config["gan"]
GAN_ON = "augmented" in config["datasets"]


def config_error(message):
    raise WorkflowError(f"config: {message}")


if not USE_PHANTOM:
    if not Path(DATA_DIR).is_dir():
        config_error(f"rsna_dir={DATA_DIR!r}: no such folder (expected a Kaggle RSNA folder)")
    if not Path(SHEET).is_file():
        config_error(f"rsna_dir={DATA_DIR!r}: no train.csv there (expected a Kaggle RSNA folder)")
    # The sample sheet decides every path and label: check it before the DAG is built (`snakemake -n` too).
    _sheet_problems = sheet_problems(SHEET, labels=True)
    if _sheet_problems:
        raise WorkflowError("\n".join(f"{SHEET}: {p}" for p in _sheet_problems))


def as_json(section, drop=("threads",)):
    """A config section as a JSON argument; changing it re-runs the rule (Snakemake's params trigger)."""
    return json.dumps({k: v for k, v in section.items() if k not in drop}, sort_keys=True)


def package_digest(package):
    """Hash of a stage package's sources: a parameter of its jobs, so editing the code re-runs them
    (Snakemake's own code trigger only sees the rule's shell command). Read as files: nothing is imported."""
    digest = hashlib.sha256()
    for path in sorted((Path(SRC) / "mammoflow" / package).rglob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def report_code():
    """Hash of what makes the page: the report package with its templates, and the metrics and paths it
    reads (package_digest sees only one package's .py files)."""
    src = Path(SRC) / "mammoflow"
    files = [*sorted((src / "report").rglob("*.*")), src / "classify" / "metrics.py", src / "paths.py"]
    digest = hashlib.sha256()
    for path in files:
        if path.suffix in (".py", ".j2", ".css", ".js", ".csv"):
            digest.update(path.relative_to(src).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def parent(name):
    """A params function: the folder of one of the rule's outputs (or inputs), as its command wants it."""
    return lambda w, input, output: str(Path(output[name] if name in output.keys() else input[name]).parent)


# ------------------------------------------------------------------------------------------------ data
def data_targets():
    return [
        paths.decoded_index(),
        paths.folds_table(),
        *[
            f"{paths.store_dir(res, dataset)}/{name}"
            for res in config["resolutions"]
            for dataset in STORE_DATASETS
            for name in ("images.npy", "manifest.parquet", "contact_sheet.png")
        ],
    ]


STARTED = time.time()


def print_decode_summary():
    """The index step's one-line summary (decoded, failed, lossy, where the list is), if this run wrote it."""
    summary = Path(paths.decoded_index()).with_name("summary.json")
    if summary.is_file() and summary.stat().st_mtime >= STARTED:
        print(json.loads(summary.read_text())["line"], file=sys.stderr)


def shard_outputs(name):
    return [f"{paths.shard_dir(s)}/{name}" for s in SHARDS]


# --------------------------------------------------------------------------------------------- weights
# Pretrained files come from the weights folder only (src/mammoflow/weights/): a job gets its file's path as
# an input of its rule. A file that is not there stops the DAG build (`snakemake -n` too) with one line
# naming every missing file and how to get it; only the jobs that need weights ask, so `snakemake weights`
# runs while the folder is still empty. A relative weights.folder lies in the checkout (beside this
# workflow), so every working directory (--directory) shares one download.
WEIGHTS_DIR = str(weights_catalog.folder(config, workflow.basedir))


def weights_file(need):
    try:
        return weights_catalog.require(config, need, workflow.basedir)
    except weights_catalog.MissingWeights as exc:
        raise WorkflowError(str(exc)) from None


def cell_weights(w):
    """The model's pretrained backbone, an input of its cells; nothing when they start from random."""
    need = weights_catalog.backbone(config, w.model)
    return {} if need is None else {"pretrained": weights_file(need)}


def cell_weights_option(w, input):
    need = weights_catalog.backbone(config, w.model)
    if need is None:
        return ""
    return f"--weights {shlex.quote(str(input.pretrained))} --weights-tag {shlex.quote(need.tag)}"


def fid_inception(w):
    """FID's Inception weights file (gan.inception: reference or a path); none for the substitute."""
    need = weights_catalog.inception(config)
    return [] if need is None else [weights_file(need)]


def projected_feature_files(w=None):
    """The projected discriminator's feature networks, {timm name: file in the weights folder}; empty unless
    gan.discriminator is projected. An input function for the GAN stage rule (it fails the DAG build when
    a file is missing)."""
    return {need.architecture: weights_file(need) for need in weights_catalog.projected(config)}


def weights_needed():
    """What `snakemake weights` fetches, as its command's JSON (a parameter: a new need re-runs the rule)."""
    return json.dumps([need.as_dict() for need in weights_catalog.needed(config)], sort_keys=True)


def weights_absent(w):
    """The needed files not in the folder now: a parameter, so that deleting one re-runs `weights`."""
    root = weights_catalog.folder(config, workflow.basedir)
    return [need.tag for need in weights_catalog.needed(config) if weights_catalog.locate(root, need) is None]


# ------------------------------------------------------------------------------------------------- GAN
# The `augmented` data set is processed + synthetic positives from the GAN stages. `clean`: a GAN per fold,
# trained only on that fold's training positives, its images used only in that fold's training set.
# `paper`: one GAN on all positives, its images split into the folds (so they reach validation).
if GAN_ON:
    try:
        GAN_STAGES = needed_stages(config["resolutions"], GAN["stages"])
    except ValueError as exc:
        config_error(str(exc))
else:
    GAN_STAGES = []
GAN_FID_STAGES = GAN_STAGES or GAN["stages"]


def gan_parts(protocol):
    return [paths.gan_part(protocol, k) for k in range(config["folds"]["k"])] if protocol == "clean" else ["all"]


def gan_source_store(stage):
    return paths.store_dir(source_resolution(int(stage), config["resolutions"]), "processed")


def gan_stage_index(stage):
    if stage not in GAN["stages"]:
        raise WorkflowError(f"there is no GAN stage {stage}: gan.stages is {GAN['stages']}")
    return GAN["stages"].index(stage)


def gan_previous_network(w):
    i = gan_stage_index(int(w.stage))
    return [f"{paths.gan_stage_dir(w.protocol, w.part, GAN['stages'][i - 1])}/network.pt"] if i else []


def gan_stage_minutes(w):
    """A generous SLURM limit; a stage that hits it resumes from its last checkpoint when re-run."""
    stage = int(w.stage)
    kimg = GAN["kimg"][gan_stage_index(stage)]
    return int(30 + kimg * max((stage / 256) ** 2, 1 / 16) * 10 / 60 * 3)


def synthetic_store(protocol, res, fold):
    return paths.synthetic_dir(protocol, res, paths.gan_part(protocol, fold))


def gan_targets():
    if not GAN_ON:
        return []
    targets = []
    for protocol in config["protocols"]:
        for part in gan_parts(protocol):
            for stage in GAN_STAGES:
                d = paths.gan_stage_dir(protocol, part, stage)
                targets += [f"{d}/fid.json", f"{d}/snapshots.png"]
        for res in config["resolutions"]:
            for k in range(config["folds"]["k"]) if protocol == "clean" else [None]:
                store = synthetic_store(protocol, res, k)
                targets += [f"{store}/images.npy", f"{store}/manifest.parquet", f"{store}/contact_sheet.png"]
    return list(dict.fromkeys(targets))


# -------------------------------------------------------------------------------------- training, CAM
def cell_settings(model):
    """The train section with the model's own overrides: a model's change re-runs only its cells."""
    return {**config["train"], **config["model_settings"].get(model, {})}


def keeps_weights(model):
    """Whether the model's cells write model.safetensors (train.keep_weights, per model)."""
    return bool(cell_settings(model)["keep_weights"])


def models_matching(keep):
    """A wildcard pattern for the models whose cells keep (or drop) their weights; one that never matches
    when there are none."""
    return "|".join(re.escape(m) for m in config["models"] if keeps_weights(m) == keep) or "(?!x)x"


def matrix_datasets():
    return list(config["datasets"])


def matrix_cells(models=None):
    return [
        (protocol, res, dataset, model, fold)
        for protocol in config["protocols"]
        for res in config["resolutions"]
        for dataset in matrix_datasets()
        for model in models or config["models"]
        for fold in range(config["folds"]["k"])
    ]


def train_targets():
    return [f"{paths.cell_dir(*cell)}/metrics.json" for cell in matrix_cells()]


def cell_inputs(w):
    store = paths.store_dir(w.res, "processed" if w.dataset == "augmented" else w.dataset)
    inputs = {
        "images": f"{store}/images.npy",
        "manifest": f"{store}/manifest.parquet",
        "folds": paths.folds_table(),
    }
    if w.dataset == "augmented":
        inputs["synthetic"] = f"{synthetic_store(w.protocol, w.res, w.fold)}/images.npy"
    return inputs


def synthetic_option(w, input):
    return f"--synthetic {shlex.quote(str(Path(input.synthetic).parent))}" if "synthetic" in input.keys() else ""


def cam_models():
    """cam.models (null: every model of the matrix), in the matrix's order."""
    chosen = config["cam"]["models"]
    return [m for m in config["models"] if chosen is None or m in chosen]


def cam_targets():
    return [
        f"{paths.cam_dir(*cell)}/{name}"
        for cell in matrix_cells(cam_models())
        for name in ("summary.json", "figure6.png")
    ]


def cam_inputs(w):
    """The cell's model and validation predictions, and the stores its validation images are in."""
    cell = paths.cell_dir(w.protocol, w.res, w.dataset, w.model, w.fold)
    inputs = {k: v for k, v in cell_inputs(w).items() if k != "folds"}
    inputs["model"] = paths.cell_artifact(w.protocol, w.res, w.dataset, w.model, w.fold)
    inputs["predictions"] = f"{cell}/predictions.parquet"
    return inputs


# ------------------------------------------------------------------------------------------------ report
REPORT_KEYS = ["protocols", "resolutions", "datasets", "models", "folds", "report"]


def report_inputs(wildcards):
    wanted = [paths.decoded_index(), paths.decoded_errors(), paths.folds_table(), *data_targets(), *gan_targets()]
    for metrics in train_targets():
        cell = Path(metrics).parent
        wanted += [metrics, str(cell / "predictions.parquet"), str(cell / "history.csv")]
    wanted += cam_targets()
    wanted = list(dict.fromkeys(wanted))
    if config["report"]["partial"]:
        wanted = [path for path in wanted if Path(path).exists()]
    return wanted


# ---------------------------------------------------------------------------------------------- predict
def predict_choice():
    """(protocol, resolution, data set, models) of the cells to apply."""
    section = config["predict"]
    protocol = section["protocol"] or ("clean" if "clean" in config["protocols"] else config["protocols"][0])
    resolution = section["resolution"] or max(config["resolutions"])
    datasets = matrix_datasets()
    dataset = section["dataset"] or next(d for d in ("processed", "original", *datasets) if d in datasets)
    named = [m for m in section["models"] if m not in ("best", "all")]
    unknown = [m for m in named if m not in config["models"]]
    if unknown:
        config_error(f"predict.models: {unknown} not in models {config['models']}")
    if protocol not in config["protocols"] or resolution not in config["resolutions"] or dataset not in datasets:
        config_error(f"predict: {protocol}/{resolution}/{dataset} is not part of the trained matrix")
    return protocol, resolution, dataset, named or config["models"]


def predict_inputs(w):
    if w.name not in config["predict"]["data"]:
        config_error(f"predict.data has no folder named {w.name!r} (known: {sorted(config['predict']['data'])})")
    protocol, resolution, dataset, models = predict_choice()
    cells = [
        path
        for model in models
        if keeps_weights(model)  # best and all choose among the models that kept their weights
        for fold in range(config["folds"]["k"])
        for path in (
            paths.cell_artifact(protocol, resolution, dataset, model, fold),
            paths.cell_weights(protocol, resolution, dataset, model, fold),
            f"{paths.cell_dir(protocol, resolution, dataset, model, fold)}/predictions.parquet",
        )
    ]
    return {"data": config["predict"]["data"][w.name], "cells": cells}


def predict_targets():
    return [paths.predict_submission(name) for name in sorted(config["predict"]["data"])]
