# GAN stages and synthetic positives: the `augmented` data set (src/mammoflow/gan/, docs/gan.md). The
# folders: paths.gan_stage_dir and paths.synthetic_dir; part = fold{k} (`clean`) or all (`paper`).


rule gan_stage:
    input:
        images=lambda w: f"{gan_source_store(w.stage)}/images.npy",
        manifest=lambda w: f"{gan_source_store(w.stage)}/manifest.parquet",
        folds=paths.folds_table(),
        previous=gan_previous_network,
        feature_weights=gan_feature_weights,
    output:
        network=f"{paths.gan_stage_dir('{protocol}', '{part}', '{stage}')}/network.pt",
        stats=f"{paths.gan_stage_dir('{protocol}', '{part}', '{stage}')}/stats.jsonl",
        snapshots=report(
            f"{paths.gan_stage_dir('{protocol}', '{part}', '{stage}')}/snapshots.png",
            category="Figure 1: GAN",
            subcategory="{protocol} {part}",
            labels={"protocol": "{protocol}", "GAN": "{part}", "stage": "{stage} px"},
            caption="../report/gan_snapshots.rst",
        ),
        seen=f"{paths.gan_stage_dir('{protocol}', '{part}', '{stage}')}/training_images.parquet",
    params:
        settings=lambda w: json.dumps(stage_settings(GAN, int(w.stage)), sort_keys=True),
        store=parent("images"),
        out=parent("network"),
        previous=lambda w, input: str(input.previous[0]) if input.previous else "",
        code=code_digest("gan-stage"),
        feature_weights=gan_feature_weights_option,
    threads: GAN["threads"]
    resources:
        gpu=1,
        mem_mb=lambda w: 4000 if int(w.stage) <= 128 else 16000,
        runtime=gan_stage_minutes,
    log:
        "logs/gan/{protocol}/{part}/stage{stage}.log",
    benchmark:
        "benchmarks/gan/{protocol}/{part}/stage{stage}.tsv"
    conda:
        "../../envs/gan.yaml"
    shell:
        "python -m mammoflow gan-stage --store {params.store:q} --folds {input.folds:q}"
        " --protocol {wildcards.protocol} --part {wildcards.part} --stage {wildcards.stage}"
        " --previous={params.previous:q} --out {params.out:q} --settings {params.settings:q}"
        " {params.feature_weights} --threads {threads} > {log:q} 2>&1"


# One FID job per GAN (all its stages, one Inception load): changing the FID settings re-runs only these.
rule gan_fid:
    input:
        networks=[f"{paths.gan_stage_dir('{protocol}', '{part}', s)}/network.pt" for s in GAN_FID_STAGES],
        stores=[f"{gan_source_store(s)}/images.npy" for s in GAN_FID_STAGES],
        folds=paths.folds_table(),
        inception=fid_inception,
    output:
        [f"{paths.gan_stage_dir('{protocol}', '{part}', s)}/fid.json" for s in GAN_FID_STAGES],
    params:
        stores=lambda w, input: [str(Path(p).parent) for p in input.stores],
        images=GAN["fid_images"],
        batch=GAN["fid_batch"],
        inception=lambda w, input: input.inception[0] if input.inception else "none",
        seed=GAN["seed"],
        code=code_digest("gan-fid"),
    threads: GAN["threads"]
    resources:
        gpu=1,
        mem_mb=lambda w: 4000 if max(GAN_FID_STAGES) <= 128 else 16000,
        runtime=lambda w: 20 + len(GAN_FID_STAGES) * GAN["fid_images"] // 1000,
    log:
        "logs/gan/{protocol}/{part}/fid.log",
    benchmark:
        "benchmarks/gan/{protocol}/{part}/fid.tsv"
    conda:
        "../../envs/gan.yaml"
    shell:
        "python -m mammoflow gan-fid --networks {input.networks:q} --stores {params.stores:q} --folds {input.folds:q}"
        " --protocol {wildcards.protocol} --part {wildcards.part} --images {params.images}"
        " --batch {params.batch} --inception {params.inception:q} --seed {params.seed} --threads {threads} > {log:q} 2>&1"


# gan.network set: the published network's FID at each resolution it serves, against all positives.
rule gan_fid_published:
    input:
        network=lambda w: GAN_NETWORKS[int(w.res)],
        images=lambda w: f"{paths.store_dir(w.res, 'processed')}/images.npy",
        folds=paths.folds_table(),
    output:
        published_fid("{res}"),
    params:
        store=lambda w, input: str(Path(input.images).parent),
        images=GAN["fid_images"],
        batch=GAN["fid_batch"],
        inception=GAN["inception"],
        seed=GAN["seed"],
        code=code_digest("gan-fid"),
    threads: GAN["threads"]
    resources:
        gpu=1,
        mem_mb=lambda w: 4000 if int(w.res) <= 128 else 16000,
        runtime=lambda w: 20 + GAN["fid_images"] // 1000,
    log:
        "logs/gan/published/fid{res}.log",
    benchmark:
        "benchmarks/gan/published/fid{res}.tsv"
    conda:
        "../../envs/gan.yaml"
    shell:
        "python -m mammoflow gan-fid --networks {input.network:q} --stores {params.store:q} --folds {input.folds:q}"
        " --protocol paper --part all --resolution {wildcards.res} --out {output:q} --images {params.images}"
        " --batch {params.batch} --inception {params.inception:q} --seed {params.seed} --threads {threads} > {log:q} 2>&1"


rule synthesize:
    input:
        network=synthesis_network,
    output:
        images=f"{paths.synthetic_dir('{protocol}', '{res}', '{part}')}/images.npy",
        manifest=f"{paths.synthetic_dir('{protocol}', '{res}', '{part}')}/manifest.parquet",
        sheet=report(
            f"{paths.synthetic_dir('{protocol}', '{res}', '{part}')}/contact_sheet.png",
            category="Data",
            subcategory="synthetic positives",
            labels={"protocol": "{protocol}", "GAN": "{part}", "resolution": "{res} px"},
            caption="../report/synthetic_sheet.rst",
        ),
        summary=f"{paths.synthetic_dir('{protocol}', '{res}', '{part}')}/summary.json",
    params:
        images=GAN["synthetic_images"],
        truncation=GAN["truncation"],
        seed=GAN["seed"],
        folds=config["folds"]["k"],
        out=parent("images"),
        code=code_digest("synthesize"),
    threads: GAN["threads"]
    resources:
        gpu=1,
        mem_mb=lambda w: 4000 if int(w.res) <= 128 else 16000,
        runtime=lambda w: 10 + GAN["synthetic_images"] // 2000,
    log:
        "logs/gan/{protocol}/{part}/synthesize{res}.log",
    benchmark:
        "benchmarks/gan/{protocol}/{part}/synthesize{res}.tsv"
    conda:
        "../../envs/gan.yaml"
    shell:
        "python -m mammoflow synthesize --network {input.network:q} --res {wildcards.res} --count {params.images}"
        " --out {params.out:q} --protocol {wildcards.protocol} --part {wildcards.part}"
        " --folds {params.folds} --seed {params.seed} --truncation {params.truncation}"
        " --threads {threads} > {log:q} 2>&1"
