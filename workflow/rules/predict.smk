# Prediction on new exams, on demand (not part of `all`): the trained cells applied to other folders.
#
#   predict.data: {name: folder}  ->  paths.predict_dir(name): submission.csv, images.{parquet,csv},
#       breasts.{parquet,csv}, failed.csv, summary.json, cam/ (flagged breasts), external.json (with labels)
#
#   snakemake --cores 2 --configfile presets/demo.yaml unseen.yaml -- predict_all   (unseen.yaml: predict.data)
#
# The helpers below belong to this rule only; they turn the CLI's defaults into explicit arguments so that
# the rule's inputs are exactly the cells the command may use.
PREDICT = paths.predict_dir("{name}")


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


rule predict:
    input:
        unpack(predict_inputs),
    output:
        submission=paths.predict_submission("{name}"),
        images=f"{PREDICT}/images.parquet",
        breasts=f"{PREDICT}/breasts.parquet",
        failed=f"{PREDICT}/failed.csv",
        summary=f"{PREDICT}/summary.json",
    wildcard_constraints:
        name=r"[A-Za-z0-9_.-]+",
    params:
        choice=lambda w: predict_choice()[:3],
        models=lambda w: " ".join(shlex.quote(m) for m in config["predict"]["models"]),
        out=parent("submission"),
        settings=as_json(config["predict"], drop=("threads", "data")),
        code=package_digest("predict"),
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
        "python -m mammoflow predict --data {input.data:q} --out {params.out:q} --results {RESULTS:q}"
        " --protocol {params.choice[0]} --resolution {params.choice[1]} --dataset {params.choice[2]}"
        " --models {params.models} --name {wildcards.name} --aggregation {config[predict][aggregation]}"
        " --submission {config[predict][submission]} --bootstrap {config[predict][bootstrap]}"
        " --cam-max {config[predict][cam_max]} --workers {threads} --threads {threads} > {log:q} 2>&1"


rule predict_all:
    input:
        predict_targets(),
