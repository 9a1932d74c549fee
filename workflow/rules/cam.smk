# Grad-CAM explanations of every trained cell (the study's Figure 6; src/mammoflow/explain/, docs/cam.md).
#
#   results/cam/{protocol}/{res}/{dataset}/{model}/fold{k}/   boxes.parquet, maps.npy, summary.json, figure6.png
#
# Needs train.smk (cell_inputs, matrix_datasets, package_digest) and common.smk (as_json) included first.
import mammoflow.explain as _explain_package

CAM_RULES = True
CAM_CODE = package_digest(_explain_package)
CAM_CELL = "{protocol}/{res}/{dataset}/{model}/fold{fold}"


def cam_models():
    """cam.models (null: every model of the matrix), in the matrix's order."""
    chosen = config["cam"]["models"]
    if chosen is None:
        return config["models"]
    unknown = [m for m in chosen if m not in config["models"]]
    if unknown:
        config_error(f"cam.models: {unknown} not in models {config['models']}")
    return [m for m in config["models"] if m in chosen]


def cam_targets():
    return expand(
        f"{RESULTS}/cam/{{protocol}}/{{res}}/{{dataset}}/{{model}}/fold{{fold}}/{{name}}",
        protocol=config["protocols"],
        res=config["resolutions"],
        dataset=matrix_datasets(),
        model=cam_models(),
        fold=range(config["folds"]["k"]),
        name=["summary.json", "figure6.png"],
    )


def cam_inputs(w):
    """The cell's model and validation predictions, and the stores its validation images are in."""
    cell = f"{RESULTS}/train/{w.protocol}/{w.res}/{w.dataset}/{w.model}/fold{w.fold}"
    inputs = {k: v for k, v in cell_inputs(w).items() if k != "folds"}
    inputs["model"] = f"{cell}/model.json"
    inputs["predictions"] = f"{cell}/predictions.parquet"
    return inputs


rule cam:
    input:
        unpack(cam_inputs),
    output:
        boxes=f"{RESULTS}/cam/{CAM_CELL}/boxes.parquet",
        maps=f"{RESULTS}/cam/{CAM_CELL}/maps.npy",
        summary=f"{RESULTS}/cam/{CAM_CELL}/summary.json",
        figure=report(
            f"{RESULTS}/cam/{CAM_CELL}/figure6.png",
            category="Figure 6: Grad-CAM",
            subcategory="{protocol}, {res} px",
            labels={"data set": "{dataset}", "model": "{model}", "fold": "{fold}"},
            caption="../report/cam.rst",
        ),
    wildcard_constraints:
        protocol=r"clean|paper",
        fold=r"\d+",
        model=r"[A-Za-z0-9_.-]+",
    params:
        settings=as_json(config["cam"], drop=("threads", "models")),
        synthetic=lambda w, input: f"--synthetic {Path(input.synthetic).parent}" if "synthetic" in input.keys() else "",
        code=CAM_CODE,
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
        "python -m mammoflow cam --cell $(dirname {input.model}) --store $(dirname {input.images}) {params.synthetic}"
        " --protocol {wildcards.protocol} --dataset {wildcards.dataset} --fold {wildcards.fold}"
        " --settings '{params.settings}' --out $(dirname {output.summary}) --threads {threads} > {log} 2>&1"
