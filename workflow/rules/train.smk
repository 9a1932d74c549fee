# The training matrix: protocol x resolution x data set x model x fold, one job per cell (paths.cell_dir).
CELL = paths.cell_dir("{protocol}", "{res}", "{dataset}", "{model}", "{fold}")


rule train:
    input:
        unpack(cell_inputs),
        unpack(cell_weights),
    output:
        metrics=f"{CELL}/metrics.json",
        predictions=f"{CELL}/predictions.parquet",
        history=f"{CELL}/history.csv",
        weights=paths.cell_weights("{protocol}", "{res}", "{dataset}", "{model}", "{fold}"),
        model=paths.cell_artifact("{protocol}", "{res}", "{dataset}", "{model}", "{fold}"),
    params:
        settings=lambda w: as_json(cell_settings(w.model)),
        store=parent("images"),
        synthetic=synthetic_option,
        pretrained=cell_weights_option,
        out=parent("metrics"),
        decode=as_json({k: config["decode"][k] for k in ("working_size", "decoders", "reduce")}),
        code=code_digest("train"),
    threads: config["train"]["threads"]
    resources:
        gpu=1,
        mem_mb=lambda w: 8000 if int(w.res) <= 256 else 16000,
        runtime=lambda w: 60 if int(w.res) <= 256 else 180,
    wildcard_constraints:
        model=models_matching(keep=True),
    log:
        "logs/train/{protocol}/{res}/{dataset}/{model}/fold{fold}.log",
    benchmark:
        "benchmarks/train/{protocol}/{res}/{dataset}/{model}/fold{fold}.tsv"
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m mammoflow train --store {params.store:q} {params.synthetic} {params.pretrained} --folds {input.folds:q}"
        " --model {wildcards.model} --fold {wildcards.fold} --protocol {wildcards.protocol}"
        " --settings {params.settings:q} --decode {params.decode:q} --out {params.out:q} --threads {threads}"
        ' --checkpoint-minutes "$MAMMOFLOW_CHECKPOINT_MINUTES" > {log:q} 2>&1'


# The same cell for a model with keep_weights: false (model_settings): model.json without model.safetensors.
use rule train as train_without_weights with:
    output:
        metrics=f"{CELL}/metrics.json",
        predictions=f"{CELL}/predictions.parquet",
        history=f"{CELL}/history.csv",
        model=paths.cell_artifact("{protocol}", "{res}", "{dataset}", "{model}", "{fold}"),
    wildcard_constraints:
        model=models_matching(keep=False),
