# Grad-CAM explanations of every trained cell (the study's Figure 6; src/mammoflow/explain/, docs/cam.md),
# one job per cell of cam.models, in paths.cam_dir.
CAM = paths.cam_dir("{protocol}", "{res}", "{dataset}", "{model}", "{fold}")


rule cam:
    input:
        unpack(cam_inputs),
    output:
        boxes=f"{CAM}/boxes.parquet",
        maps=f"{CAM}/maps.npy",
        summary=f"{CAM}/summary.json",
        figure=report(
            f"{CAM}/figure6.png",
            category="Figure 6: Grad-CAM",
            subcategory="{protocol}, {res} px",
            labels={"data set": "{dataset}", "model": "{model}", "fold": "{fold}"},
            caption="../report/cam.rst",
        ),
    params:
        settings=as_json(config["cam"], drop=("threads", "models")),
        cell=parent("model"),
        store=parent("images"),
        synthetic=synthetic_option,
        out=parent("summary"),
        code=code_digest("cam"),
    threads: config["cam"]["threads"]
    resources:
        gpu=1,
        mem_mb=lambda w: 4000 if int(w.res) <= 256 else 8000,
        runtime=lambda w: 20 if int(w.res) <= 256 else 60,
    log:
        "logs/cam/{protocol}/{res}/{dataset}/{model}/fold{fold}.log",
    benchmark:
        "benchmarks/cam/{protocol}/{res}/{dataset}/{model}/fold{fold}.tsv"
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m mammoflow cam --cell {params.cell:q} --store {params.store:q} {params.synthetic}"
        " --protocol {wildcards.protocol} --dataset {wildcards.dataset} --fold {wildcards.fold}"
        " --settings {params.settings:q} --out {params.out:q} --threads {threads} > {log:q} 2>&1"
