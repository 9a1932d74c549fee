# The rules' targets and input functions (the rule files hold rules only). What they are computed from is
# Python the Snakefile imports: the results tree (mammoflow.paths), the matrix (mammoflow.matrix), the data
# source, GAN stages, predict choice and code triggers (mammoflow.plan).
import json
import shlex
from dataclasses import replace
from pathlib import Path

from mammoflow import paths
from mammoflow.gan.settings import stage_settings, synthesis_stage
from mammoflow.matrix import Matrix, cam_models, model_settings
from mammoflow.plan import predict as predict_plan
from mammoflow.plan.code import Package
from mammoflow.plan import rules as rule_helpers
from mammoflow.plan.rules import as_json, parent

RESULTS = paths.RESULTS
SHARDS = range(config["decode"]["shards"])
STORE_DATASETS = [d for d in config["datasets"] if d in ("original", "processed")]
MATRIX = Matrix.from_config(config)
GAN = config["gan"]
GAN_ON, GAN_FID_STAGES = GAN_PLAN.on, GAN_PLAN.fid_stages  # GAN_PLAN: the Snakefile checked it
# Each rule's code trigger: the hash of the package files its command's job can load (mammoflow.plan.code).
code_digest = Package(SRC).digest


def cell_settings(model):
    return model_settings(config, model)


def models_matching(keep):
    return rule_helpers.models_matching(config, keep)


def config_checked(function, *args):
    """A plan function's ValueError as Snakemake's one-line config error."""
    try:
        return function(*args)
    except ValueError as error:
        raise WorkflowError(f"config: {error}") from None


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


def shard_outputs(name):
    return [f"{paths.shard_dir(s)}/{name}" for s in SHARDS]


def decode_limit_arguments():
    """decode.max_megapixels, max_memory_mb and timeout_s as the command-line options of decode and predict."""
    d = config["decode"]
    return f"--max-megapixels {d['max_megapixels']} --max-memory-mb {d['max_memory_mb']} --timeout-s {d['timeout_s']}"


# ------------------------------------------------------------------------------------------------- GAN
gan_source_store = GAN_PLAN.source_store
gan_previous_network = GAN_PLAN.previous_network
gan_stage_minutes = GAN_PLAN.stage_minutes
synthesis_network = GAN_PLAN.synthesis_network
published_fid = GAN_PLAN.published_fid
GAN_NETWORKS = GAN_PLAN.networks


def gan_feature_weights():
    """{feature network: its weights file} for the projected discriminator; none for residual or random.

    TODO(weights step, branch train-recipe): return the paths that the weights package's torch-free lookup
    gives for the `weights` rule's folder (the function the train rule gets its backbone files from); the
    layout below is a stand-in until then."""
    if GAN["discriminator"] != "projected" or GAN["feature_weights"] == "random":
        return {}
    return {name: f"resources/weights/timm/{name}/model.safetensors" for name in GAN["feature_networks"]}


def gan_targets():
    if not GAN_ON:
        return []
    targets = [published_fid(res) for res in sorted(GAN_NETWORKS)]
    for protocol in config["protocols"]:
        for part in GAN_PLAN.parts(protocol):
            for stage in GAN_PLAN.stages:
                d = paths.gan_stage_dir(protocol, part, stage)
                targets += [f"{d}/fid.json", f"{d}/snapshots.png"]
        for res in config["resolutions"]:
            for k in range(MATRIX.k) if protocol == "clean" else [None]:
                store = GAN_PLAN.synthetic_store(protocol, res, k)
                targets += [f"{store}/images.npy", f"{store}/manifest.parquet", f"{store}/contact_sheet.png"]
    return list(dict.fromkeys(targets))


# -------------------------------------------------------------------------------------- training, CAM
def train_targets():
    return [f"{paths.cell_dir(*cell)}/metrics.json" for cell in MATRIX.cells()]


def cell_inputs(w):
    store = paths.store_dir(w.res, "processed" if w.dataset == "augmented" else w.dataset)
    inputs = {
        "images": f"{store}/images.npy",
        "manifest": f"{store}/manifest.parquet",
        "folds": paths.folds_table(),
    }
    if w.dataset == "augmented":
        inputs["synthetic"] = f"{GAN_PLAN.synthetic_store(w.protocol, w.res, w.fold)}/images.npy"
    return inputs


def synthetic_option(w, input):
    return f"--synthetic {shlex.quote(str(Path(input.synthetic).parent))}" if "synthetic" in input.keys() else ""


def cam_targets():
    explained = replace(MATRIX, models=cam_models(config))
    return [f"{paths.cam_dir(*cell)}/{name}" for cell in explained.cells() for name in ("summary.json", "figure6.png")]


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
    """(protocol, resolution, data set, models) of the cells the predict rule applies."""
    return config_checked(predict_plan.predict_choice, config)


def predict_inputs(w):
    return config_checked(predict_plan.predict_cells, config, w.name)


def predict_targets():
    return [paths.predict_submission(name) for name in sorted(config["predict"]["data"])]
