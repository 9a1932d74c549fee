# Data stages: phantom -> decode (sharded) -> index -> preprocess (per resolution x data set), folds.


rule phantom:
    output:
        csv=f"{RESULTS}/phantom/train.csv",
        lesions=f"{RESULTS}/phantom/lesions.csv",
    params:
        spec=as_json(config["phantom"]),
        out=f"{RESULTS}/phantom",
    threads: config["phantom"]["threads"]
    resources:
        mem_mb=4000,
        runtime=240,
    log:
        "logs/phantom.log",
    benchmark:
        "benchmarks/phantom.tsv"
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m mammoflow phantom --out {params.out} --spec '{params.spec}' --workers {threads} > {log} 2>&1"


rule decode:
    input:
        csv=f"{DATA_DIR}/train.csv",
    output:
        pixels=f"{RESULTS}/decoded/shard{{shard}}/pixels.u16",
        meta=f"{RESULTS}/decoded/shard{{shard}}/meta.parquet",
        errors=f"{RESULTS}/decoded/shard{{shard}}/errors.parquet",
    params:
        data_dir=DATA_DIR,
        shards=config["decode"]["shards"],
        working_size=config["decode"]["working_size"],
        decoders=" ".join(config["decode"]["decoders"]),
        strict="--strict" if config["decode"]["strict"] else "",
        reduce="--reduce" if config["decode"].get("reduce", True) else "--no-reduce",
    threads: config["decode"]["threads"]
    resources:
        mem_mb=3000,
        runtime=600,
    log:
        "logs/decode/shard{shard}.log",
    benchmark:
        "benchmarks/decode/shard{shard}.tsv"
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m mammoflow decode --data-dir {params.data_dir} --out $(dirname {output.meta}) --shard {wildcards.shard}"
        " --shards {params.shards} --working-size {params.working_size} --workers {threads}"
        " --decoders {params.decoders} {params.strict} {params.reduce} > {log} 2>&1"


rule decode_index:
    input:
        meta=expand(f"{RESULTS}/decoded/shard{{shard}}/meta.parquet", shard=SHARDS),
        errors=expand(f"{RESULTS}/decoded/shard{{shard}}/errors.parquet", shard=SHARDS),
    output:
        index=f"{RESULTS}/decoded/index.parquet",
        errors=f"{RESULTS}/decoded/errors.parquet",
    params:
        shard_dirs=" ".join(f"{RESULTS}/decoded/shard{s}" for s in SHARDS),
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/decode_index.log",
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m mammoflow index {params.shard_dirs} --index {output.index} --errors {output.errors} > {log} 2>&1"


rule preprocess:
    input:
        index=f"{RESULTS}/decoded/index.parquet",
        lesions=[LESIONS] if LESIONS else [],
    output:
        images=f"{RESULTS}/data/{{res}}/{{dataset}}/images.npy",
        manifest=f"{RESULTS}/data/{{res}}/{{dataset}}/manifest.parquet",
        sheet=report(
            f"{RESULTS}/data/{{res}}/{{dataset}}/contact_sheet.png",
            category="Data",
            subcategory="{dataset} images",
            labels={"data set": "{dataset}", "resolution": "{res} px"},
            caption="../report/contact_sheet.rst",
        ),
        summary=f"{RESULTS}/data/{{res}}/{{dataset}}/summary.json",
    wildcard_constraints:
        dataset=r"original|processed",
    params:
        # `original` does not depend on the preprocessing settings: do not re-run it when they change.
        options=lambda w: as_json(config["preprocess"]) if w.dataset == "processed" else "{}",
        lesions=f"--lesions {LESIONS}" if LESIONS else "",
    threads: config["preprocess"]["threads"]
    resources:
        mem_mb=4000,
        runtime=240,
    log:
        "logs/preprocess/{res}_{dataset}.log",
    benchmark:
        "benchmarks/preprocess/{res}_{dataset}.tsv"
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m mammoflow preprocess --index {input.index} --dataset {wildcards.dataset} --res {wildcards.res}"
        " --out $(dirname {output.images}) --options '{params.options}' {params.lesions}"
        " --workers {threads} > {log} 2>&1"


rule folds:
    input:
        index=f"{RESULTS}/decoded/index.parquet",
    output:
        f"{RESULTS}/data/folds.parquet",
    params:
        k=config["folds"]["k"],
        seed=config["folds"]["seed"],
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/folds.log",
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m mammoflow folds --index {input.index} --out {output} --k {params.k} --seed {params.seed}"
        " --protocols clean paper > {log} 2>&1"
