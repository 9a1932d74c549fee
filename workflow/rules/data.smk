# Data stages: phantom -> decode (sharded) -> index -> preprocess (per resolution x data set); folds from
# the sample sheet.


rule phantom:
    output:
        csv=f"{paths.phantom_dir()}/train.csv",
        lesions=f"{paths.phantom_dir()}/lesions.csv",
    params:
        spec=as_json(config["phantom"]),
        out=parent("csv"),
        code=code_digest("phantom"),
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
        "python -m mammoflow phantom --out {params.out:q} --spec {params.spec:q} --workers {threads} > {log:q} 2>&1"


rule decode:
    input:
        sheet=SHEET,
    output:
        pixels=f"{paths.shard_dir('{shard}')}/pixels.u16",
        meta=f"{paths.shard_dir('{shard}')}/meta.parquet",
        errors=f"{paths.shard_dir('{shard}')}/errors.parquet",
    params:
        data_dir=lambda w, input: str(Path(input.sheet).parent),
        out=parent("meta"),
        shards=config["decode"]["shards"],
        working_size=config["decode"]["working_size"],
        decoders=config["decode"]["decoders"],
        strict="--strict" if config["decode"]["strict"] else "",
        reduce="--reduce" if config["decode"]["reduce"] else "--no-reduce",
        code=code_digest("decode"),
        limits=decode_limit_arguments(),
    threads: config["decode"]["threads"]
    resources:
        # Each decoder process may use decode.max_memory_mb: asked for, so that bound is what stops a file.
        mem_mb=lambda w, threads: 1000 + threads * (config["decode"]["max_memory_mb"] or 2000),
        runtime=600,
    log:
        "logs/decode/shard{shard}.log",
    benchmark:
        "benchmarks/decode/shard{shard}.tsv"
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m mammoflow decode --data-dir {params.data_dir:q} --sheet {input.sheet:q} --out {params.out:q}"
        " --shard {wildcards.shard} --shards {params.shards} --working-size {params.working_size}"
        " --workers {threads} --decoders {params.decoders:q} {params.strict} {params.reduce} {params.limits}"
        " > {log:q} 2>&1"


rule decode_index:
    input:
        meta=shard_outputs("meta.parquet"),
        errors=shard_outputs("errors.parquet"),
    output:
        index=paths.decoded_index(),
        errors=paths.decoded_errors(),
    params:
        shard_dirs=lambda w, input: [str(Path(p).parent) for p in input.meta],
        max_failed=config["decode"]["max_failed_fraction"],
        code=code_digest("index"),
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        # Snakemake deletes a failed job's outputs (errors.parquet) but keeps its logs: the list the
        # failure message names is this CSV.
        main="logs/decode_index.log",
        failed="logs/decode_failed.csv",
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m mammoflow index {params.shard_dirs:q} --index {output.index:q} --errors {output.errors:q}"
        " --max-failed-fraction {params.max_failed} --failure-list {log.failed:q} > {log.main:q} 2>&1"


rule preprocess:
    input:
        index=paths.decoded_index(),
        lesions=[LESIONS] if LESIONS else [],
    output:
        images=f"{paths.store_dir('{res}', '{dataset}')}/images.npy",
        manifest=f"{paths.store_dir('{res}', '{dataset}')}/manifest.parquet",
        sheet=report(
            f"{paths.store_dir('{res}', '{dataset}')}/contact_sheet.png",
            category="Data",
            subcategory="{dataset} images",
            labels={"data set": "{dataset}", "resolution": "{res} px"},
            caption="../report/contact_sheet.rst",
        ),
        summary=f"{paths.store_dir('{res}', '{dataset}')}/summary.json",
    wildcard_constraints:
        dataset=r"original|processed",
    params:
        # `original` does not depend on the preprocessing settings: do not re-run it when they change.
        options=lambda w: as_json(config["preprocess"]) if w.dataset == "processed" else "{}",
        lesions=lambda w, input: ["--lesions", input.lesions] if input.lesions else [],
        out=parent("images"),
        code=code_digest("preprocess"),
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
        "python -m mammoflow preprocess --index {input.index:q} --dataset {wildcards.dataset} --res {wildcards.res}"
        " --out {params.out:q} --options {params.options:q} {params.lesions:q} --workers {threads} > {log:q} 2>&1"


# Folds come from the sample sheet, before decoding: a file that fails to decode (now or in a later run)
# cannot move other images between folds; training drops the images its store lacks, and says how many.
rule folds:
    input:
        sheet=SHEET,
    output:
        paths.folds_table(),
    params:
        k=config["folds"]["k"],
        seed=config["folds"]["seed"],
        # Each `clean` fold's GAN trains on that fold's training positives: there must be some.
        positives="--require-positive-training" if GAN_ON and "clean" in config["protocols"] else "",
        code=code_digest("folds"),
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/folds.log",
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m mammoflow folds --sheet {input.sheet:q} --out {output:q} --k {params.k} --seed {params.seed}"
        " --protocols clean paper {params.positives} > {log:q} 2>&1"
