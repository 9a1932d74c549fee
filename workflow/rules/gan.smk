# GAN stages and synthetic positives: the `augmented` data set (src/mammoflow/gan/, docs/gan.md).
#
#   results/gan/{protocol}/{part}/stage{stage}/   network.pt, stats.jsonl, snapshots.png,
#                                                 training_images.parquet, fid.json (resume.pt while running)
#   results/synthetic/{protocol}/{res}/{part}/    images.npy, manifest.parquet, contact_sheet.png, summary.json
#
# part = fold{k} for `clean` (a GAN per fold, trained without fold k's positives), `all` for `paper`.
import json
from pathlib import Path

from mammoflow.gan.settings import needed_stages, source_resolution, stage_settings, synthesis_stage

GAN_RULES = True
GAN = config["gan"]
GAN_ON = "augmented" in config["datasets"]

if GAN_ON:
    _not_powers = [s for s in GAN["stages"] if s & (s - 1)]
    if _not_powers:
        config_error(f"gan.stages must be powers of two: {_not_powers}")
    try:
        GAN_STAGES = needed_stages(config["resolutions"], GAN["stages"])
    except ValueError as exc:
        config_error(str(exc))
else:
    GAN_STAGES = []


def gan_parts(protocol):
    return [f"fold{k}" for k in range(config["folds"]["k"])] if protocol == "clean" else ["all"]


def gan_stage_dir(protocol, part, stage):
    return f"{RESULTS}/gan/{protocol}/{part}/stage{stage}"


def gan_source_store(w):
    return f"{RESULTS}/data/{source_resolution(int(w.stage), config['resolutions'])}/processed"


def gan_stage_index(stage):
    if stage not in GAN["stages"]:
        raise WorkflowError(f"there is no GAN stage {stage}: gan.stages is {GAN['stages']}")
    return GAN["stages"].index(stage)


def gan_previous_network(w):
    stages = GAN["stages"]
    i = gan_stage_index(int(w.stage))
    return [f"{gan_stage_dir(w.protocol, w.part, stages[i - 1])}/network.pt"] if i else []


def gan_stage_minutes(w):
    """A generous SLURM limit; a stage that hits it resumes from its last checkpoint when re-run."""
    stage = int(w.stage)
    kimg = GAN["kimg"][gan_stage_index(stage)]
    return int(30 + kimg * max((stage / 256) ** 2, 1 / 16) * 10 / 60 * 3)


def gan_targets():
    if not GAN_ON:
        return []
    targets = []
    for protocol in config["protocols"]:
        for part in gan_parts(protocol):
            for stage in GAN_STAGES:
                d = gan_stage_dir(protocol, part, stage)
                targets += [f"{d}/fid.json", f"{d}/snapshots.png"]
        for res in config["resolutions"]:
            for k in range(config["folds"]["k"]) if protocol == "clean" else [None]:
                store = synthetic_store(protocol, res, k)
                targets += [f"{store}/images.npy", f"{store}/manifest.parquet", f"{store}/contact_sheet.png"]
    return list(dict.fromkeys(targets))


rule gan_stage:
    input:
        images=lambda w: f"{gan_source_store(w)}/images.npy",
        manifest=lambda w: f"{gan_source_store(w)}/manifest.parquet",
        folds=f"{RESULTS}/data/folds.parquet",
        previous=gan_previous_network,
    output:
        network=f"{RESULTS}/gan/{{protocol}}/{{part}}/stage{{stage}}/network.pt",
        stats=f"{RESULTS}/gan/{{protocol}}/{{part}}/stage{{stage}}/stats.jsonl",
        snapshots=report(
            f"{RESULTS}/gan/{{protocol}}/{{part}}/stage{{stage}}/snapshots.png",
            category="Figure 1: GAN",
            subcategory="{protocol} {part}",
            labels={"protocol": "{protocol}", "GAN": "{part}", "stage": "{stage} px"},
            caption="../report/gan_snapshots.rst",
        ),
        seen=f"{RESULTS}/gan/{{protocol}}/{{part}}/stage{{stage}}/training_images.parquet",
    wildcard_constraints:
        protocol=r"clean|paper",
        part=r"fold\d+|all",
        stage=r"\d+",
    params:
        settings=lambda w: json.dumps(stage_settings(GAN, int(w.stage)), sort_keys=True),
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
        "python -m mammoflow gan-stage --store $(dirname {input.images}) --folds {input.folds}"
        " --protocol {wildcards.protocol} --part {wildcards.part} --stage {wildcards.stage}"
        " --previous '{input.previous}' --out $(dirname {output.network}) --settings '{params.settings}'"
        " --threads {threads} > {log} 2>&1"


# One FID job per GAN (all its stages, one Inception load): changing the FID settings re-runs only these.
GAN_FID_STAGES = GAN_STAGES or GAN["stages"]


rule gan_fid:
    input:
        networks=[f"{RESULTS}/gan/{{protocol}}/{{part}}/stage{s}/network.pt" for s in GAN_FID_STAGES],
        stores=lambda w: [
            f"{RESULTS}/data/{source_resolution(s, config['resolutions'])}/processed/images.npy"
            for s in GAN_FID_STAGES
        ],
        folds=f"{RESULTS}/data/folds.parquet",
    output:
        [f"{RESULTS}/gan/{{protocol}}/{{part}}/stage{s}/fid.json" for s in GAN_FID_STAGES],
    wildcard_constraints:
        protocol=r"clean|paper",
        part=r"fold\d+|all",
    params:
        stores=lambda w, input: " ".join(str(Path(p).parent) for p in input.stores),
        images=GAN["fid_images"],
        inception=GAN["inception"],
        seed=GAN["seed"],
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
        "python -m mammoflow gan-fid --networks {input.networks} --stores {params.stores} --folds {input.folds}"
        " --protocol {wildcards.protocol} --part {wildcards.part} --images {params.images}"
        " --inception '{params.inception}' --seed {params.seed} --threads {threads} > {log} 2>&1"


rule synthesize:
    input:
        network=lambda w: f"{gan_stage_dir(w.protocol, w.part, synthesis_stage(int(w.res), GAN['stages']))}/network.pt",
    output:
        images=f"{RESULTS}/synthetic/{{protocol}}/{{res}}/{{part}}/images.npy",
        manifest=f"{RESULTS}/synthetic/{{protocol}}/{{res}}/{{part}}/manifest.parquet",
        sheet=report(
            f"{RESULTS}/synthetic/{{protocol}}/{{res}}/{{part}}/contact_sheet.png",
            category="Data",
            subcategory="synthetic positives",
            labels={"protocol": "{protocol}", "GAN": "{part}", "resolution": "{res} px"},
            caption="../report/synthetic_sheet.rst",
        ),
        summary=f"{RESULTS}/synthetic/{{protocol}}/{{res}}/{{part}}/summary.json",
    wildcard_constraints:
        protocol=r"clean|paper",
        part=r"fold\d+|all",
    params:
        images=GAN["synthetic_images"],
        truncation=GAN["truncation"],
        seed=GAN["seed"],
        folds=config["folds"]["k"],
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
        "python -m mammoflow synthesize --network {input.network} --res {wildcards.res} --count {params.images}"
        " --out $(dirname {output.images}) --protocol {wildcards.protocol} --part {wildcards.part}"
        " --folds {params.folds} --seed {params.seed} --truncation {params.truncation}"
        " --threads {threads} > {log} 2>&1"
