# Helpers shared by the rule files: the data source, stage parameters, and checks the schema cannot express.
import json
import os
import sys
from pathlib import Path

# Rules run `python -m mammoflow ...` with this checkout's src/ on PYTHONPATH: the Python beside the one
# running Snakemake (a venv works without being activated), or, with --software-deployment-method conda,
# the stage's conda environment (envs/*.yaml), which Snakemake puts first on PATH inside the job.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(Path(workflow.basedir) / "src"), os.environ.get("PYTHONPATH", "")) if p
)

RESULTS = "results"
USE_PHANTOM = not config["data"]["rsna_dir"]
DATA_DIR = f"{RESULTS}/phantom" if USE_PHANTOM else config["data"]["rsna_dir"]
LESIONS = f"{RESULTS}/phantom/lesions.csv" if USE_PHANTOM else ""
SHARDS = [f"{i:03d}" for i in range(config["decode"]["shards"])]
STORE_DATASETS = [d for d in config["datasets"] if d in ("original", "processed")]


def config_error(message):
    raise WorkflowError(f"config: {message}")


if not USE_PHANTOM and not Path(DATA_DIR, "train.csv").is_file():
    config_error(f"data.rsna_dir={DATA_DIR!r}: no train.csv there (expected a Kaggle RSNA folder)")
if len(config["gan"]["kimg"]) != len(config["gan"]["stages"]):
    config_error("gan.kimg must give one length per entry of gan.stages")
if config["gan"]["stages"] != sorted(set(config["gan"]["stages"])):
    config_error(f"gan.stages must increase: {config['gan']['stages']}")
if "augmented" in config["datasets"] and "processed" not in config["datasets"]:
    config_error("datasets: augmented is processed + synthetic images, so it needs processed as well")


def as_json(section, drop=("threads",)):
    """A config section as a JSON argument; changing it re-runs the rule (Snakemake's params trigger)."""
    return json.dumps({k: v for k, v in section.items() if k not in drop}, sort_keys=True)


def data_targets():
    return [
        f"{RESULTS}/decoded/index.parquet",
        f"{RESULTS}/data/folds.parquet",
        *expand(
            f"{RESULTS}/data/{{res}}/{{dataset}}/{{name}}",
            res=config["resolutions"],
            dataset=STORE_DATASETS,
            name=["images.npy", "manifest.parquet", "contact_sheet.png"],
        ),
    ]


wildcard_constraints:
    res=r"\d+",
    shard=r"\d{3}",
    dataset=r"original|processed|augmented",


# --------------------------------------------------------------------------------------- augmented data
# The `augmented` data set is processed + synthetic positives from the GAN stage (workflow/rules/gan.smk).
# Contract between the GAN rules and the training cells:
#   clean: results/synthetic/clean/{res}/fold{k}/{images.npy,manifest.parquet}: made by a GAN that saw only
#          fold k's training positives; used only in fold k's training set.
#   paper: results/synthetic/paper/{res}/all/{images.npy,manifest.parquet}: one GAN on all positives; the
#          manifest has a `fold` column (synthetic images are split with the real ones, so they reach
#          validation, as in the study).
# gan.smk sets GAN_RULES = True when it is included; until then `augmented` stays out of the matrix.
GAN_RULES = False


def synthetic_store(protocol, res, fold):
    part = f"fold{fold}" if protocol == "clean" else "all"
    return f"{RESULTS}/synthetic/{protocol}/{res}/{part}"
