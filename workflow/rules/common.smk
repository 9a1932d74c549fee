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
from mammoflow.weights import catalog as weights_catalog

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


def gan_feature_weights(w):
    """The projected discriminator's feature network files in the weights folder (gan.feature_networks'
    order); none unless gan.discriminator is projected with pretrained features. An input function of the
    GAN stage rule: a missing file stops the DAG build."""
    return [weights_file(need) for need in weights_catalog.projected(config)]


def gan_feature_weights_option(w, input):
    names = [need.architecture for need in weights_catalog.projected(config)]
    return " ".join(
        f"--feature-weights {shlex.quote(f'{name}={path}')}"
        for name, path in zip(names, input.feature_weights, strict=True)
    )


def weights_needed():
    """What `snakemake weights` fetches, as its command's JSON (a parameter: a new need re-runs the rule)."""
    return json.dumps([need.as_dict() for need in weights_catalog.needed(config)], sort_keys=True)


def weights_absent(w):
    """The needed files not in the folder now: a parameter, so that deleting one re-runs `weights`."""
    root = weights_catalog.folder(config, workflow.basedir)
    return [need.tag for need in weights_catalog.needed(config) if weights_catalog.locate(root, need) is None]


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
