# Prediction on new exams, on demand (not part of `all`): the trained cells applied to other folders.
#
#   predict.data: {name: folder}  ->  paths.predict_dir(name): submission.csv, images.{parquet,csv},
#       breasts.{parquet,csv}, failed.csv, summary.json, cam/ (flagged breasts), external.json (with labels)
#
#   snakemake --cores 2 --configfile presets/demo.yaml unseen.yaml -- predict_all   (unseen.yaml: predict.data)
#
# Its helpers (common.smk: predict_choice, predict_inputs, from mammoflow.plan.predict) turn the CLI's
# defaults into explicit arguments, so that the rule's inputs are exactly the cells the command may use.
PREDICT = paths.predict_dir("{name}")


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
        results=lambda w, input: paths.RESULTS,
        aggregation=config["predict"]["aggregation"],
        submission=config["predict"]["submission"],
        bootstrap=config["predict"]["bootstrap"],
        cam_max=config["predict"]["cam_max"],
        batch_size=config["predict"]["batch_size"],
        code=code_digest("predict"),
        limits=decode_limit_arguments(),
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
        "python -m mammoflow predict --data {input.data:q} --out {params.out:q} --results {params.results:q}"
        " --protocol {params.choice[0]} --resolution {params.choice[1]} --dataset {params.choice[2]}"
        " --models {params.models} --name {wildcards.name} --aggregation {params.aggregation}"
        " --submission {params.submission:q} --bootstrap {params.bootstrap}"
        " --cam-max {params.cam_max} --batch-size {params.batch_size} --workers {threads} --threads {threads} {params.limits} > {log:q} 2>&1"


rule predict_all:
    input:
        predict_targets(),
