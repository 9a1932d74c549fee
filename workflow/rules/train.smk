# The training matrix: protocol x resolution x data set x model x fold, one job per cell.
import hashlib
from pathlib import Path

import mammoflow.classify as _classify_package

TRAIN_DATASETS = ["original", "processed", "augmented"]


def package_digest(package):
    """Hash of a package's source: a parameter of the cells, so editing the training code re-runs them all
    (Snakemake's own code trigger only sees the rule's shell command)."""
    digest = hashlib.sha256()
    for path in sorted(Path(package.__file__).parent.rglob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


TRAIN_CODE = package_digest(_classify_package)


def cell_settings(model):
    """The train section with the model's own overrides: a model's change re-runs only its cells."""
    return {**config["train"], **config["model_settings"].get(model, {})}


def matrix_datasets():
    return [d for d in config["datasets"] if d != "augmented" or GAN_RULES]


def train_targets():
    return expand(
        f"{RESULTS}/train/{{protocol}}/{{res}}/{{dataset}}/{{model}}/fold{{fold}}/metrics.json",
        protocol=config["protocols"],
        res=config["resolutions"],
        dataset=matrix_datasets(),
        model=config["models"],
        fold=range(config["folds"]["k"]),
    )


def cell_inputs(w):
    store = "processed" if w.dataset == "augmented" else w.dataset
    inputs = {
        "images": f"{RESULTS}/data/{w.res}/{store}/images.npy",
        "manifest": f"{RESULTS}/data/{w.res}/{store}/manifest.parquet",
        "folds": f"{RESULTS}/data/folds.parquet",
    }
    if w.dataset == "augmented":
        inputs["synthetic"] = f"{synthetic_store(w.protocol, w.res, w.fold)}/images.npy"
    return inputs


rule train:
    input:
        unpack(cell_inputs),
    output:
        metrics=f"{RESULTS}/train/{{protocol}}/{{res}}/{{dataset}}/{{model}}/fold{{fold}}/metrics.json",
        predictions=f"{RESULTS}/train/{{protocol}}/{{res}}/{{dataset}}/{{model}}/fold{{fold}}/predictions.parquet",
        history=f"{RESULTS}/train/{{protocol}}/{{res}}/{{dataset}}/{{model}}/fold{{fold}}/history.csv",
        weights=f"{RESULTS}/train/{{protocol}}/{{res}}/{{dataset}}/{{model}}/fold{{fold}}/model.safetensors",
        artifact=f"{RESULTS}/train/{{protocol}}/{{res}}/{{dataset}}/{{model}}/fold{{fold}}/model.json",
    wildcard_constraints:
        protocol=r"clean|paper",
        fold=r"\d+",
        model=r"[A-Za-z0-9_.-]+",
    params:
        settings=lambda w: as_json(cell_settings(w.model)),
        synthetic=lambda w, input: f"--synthetic {Path(input.synthetic).parent}" if "synthetic" in input.keys() else "",
        decode=as_json({k: config["decode"][k] for k in ("working_size", "decoders")}),
        code=TRAIN_CODE,
    threads: config["train"]["threads"]
    resources:
        gpu=1,
        mem_mb=lambda w: 8000 if int(w.res) <= 256 else 16000,
        runtime=lambda w: 60 if int(w.res) <= 256 else 180,
    log:
        "logs/train/{protocol}/{res}/{dataset}/{model}/fold{fold}.log",
    benchmark:
        "benchmarks/train/{protocol}/{res}/{dataset}/{model}/fold{fold}.tsv"
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m mammoflow train --store $(dirname {input.images}) {params.synthetic} --folds {input.folds}"
        " --model {wildcards.model} --fold {wildcards.fold} --protocol {wildcards.protocol}"
        " --settings '{params.settings}' --decode '{params.decode}' --out $(dirname {output.metrics}) --threads {threads} > {log} 2>&1"
