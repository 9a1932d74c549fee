# Prediction on new exams (on demand, not part of `all`): the trained cells applied to other folders.
#
#   predict.data: {name: folder}   ->   results/predict/{name}/
#       submission.csv, images.{parquet,csv}, breasts.{parquet,csv}, failed.csv, summary.json,
#       cam/ (Grad-CAM panels of flagged breasts), external.json (when the folder has train.csv labels)
#
#   snakemake --cores 2 --configfile presets/demo.yaml --config 'predict={"data": {"clinic": "/data/x"}}' predict_all
#
# Needs train.smk (matrix_datasets) and common.smk included first.


def predict_choice():
    """protocol, resolution, data set and models the rule asks the command for (the CLI's defaults, made
    explicit here so that the rule's inputs are exactly the cells the command may use)."""
    section = config["predict"]
    protocol = section["protocol"] or ("clean" if "clean" in config["protocols"] else config["protocols"][0])
    resolution = section["resolution"] or max(config["resolutions"])
    datasets = matrix_datasets()
    dataset = section["dataset"] or next(d for d in ("processed", "original", "augmented", *datasets) if d in datasets)
    named = [m for m in section["models"] if m not in ("best", "all")]
    unknown = [m for m in named if m not in config["models"]]
    if unknown:
        config_error(f"predict.models: {unknown} not in models {config['models']}")
    if protocol not in config["protocols"] or resolution not in config["resolutions"] or dataset not in datasets:
        config_error(f"predict: {protocol}/{resolution}/{dataset} is not a trained part of the matrix")
    return protocol, resolution, dataset, named or config["models"]


def predict_inputs(w):
    if w.name not in config["predict"]["data"]:
        config_error(f"predict.data has no folder named {w.name!r} (known: {sorted(config['predict']['data'])})")
    protocol, resolution, dataset, models = predict_choice()
    cells = expand(
        f"{RESULTS}/train/{protocol}/{resolution}/{dataset}/{{model}}/fold{{fold}}/{{name}}",
        model=models,
        fold=range(config["folds"]["k"]),
        name=["model.json", "model.safetensors", "predictions.parquet"],
    )
    return {"data": config["predict"]["data"][w.name], "cells": cells}


def predict_targets():
    return expand(f"{RESULTS}/predict/{{name}}/submission.csv", name=sorted(config["predict"]["data"]))


rule predict:
    input:
        unpack(predict_inputs),
    output:
        submission=f"{RESULTS}/predict/{{name}}/submission.csv",
        images=f"{RESULTS}/predict/{{name}}/images.parquet",
        breasts=f"{RESULTS}/predict/{{name}}/breasts.parquet",
        failed=f"{RESULTS}/predict/{{name}}/failed.csv",
        summary=f"{RESULTS}/predict/{{name}}/summary.json",
    wildcard_constraints:
        name=r"[A-Za-z0-9_.-]+",
    params:
        choice=lambda w: predict_choice(),
        models=lambda w: " ".join(config["predict"]["models"]),
        settings=lambda w: as_json(config["predict"], drop=("threads", "data")),
    threads: config["predict"]["threads"]
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    log:
        "logs/predict/{name}.log",
    benchmark:
        "benchmarks/predict/{name}.tsv"
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m mammoflow predict --data {input.data:q} --out $(dirname {output.submission:q})"
        " --results {RESULTS:q} --protocol {params.choice[0]} --resolution {params.choice[1]}"
        " --dataset {params.choice[2]} --models {params.models} --name {wildcards.name}"
        " --aggregation {config[predict][aggregation]} --submission {config[predict][submission]}"
        " --bootstrap {config[predict][bootstrap]} --cam-max {config[predict][cam_max]}"
        " --workers {threads} --threads {threads} > {log:q} 2>&1"


rule predict_all:
    input:
        predict_targets(),
