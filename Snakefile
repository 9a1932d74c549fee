# mammoflow: Prodan et al. 2023 (Appl. Sci. 13, 4272) as a Snakemake workflow. See README.md.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


# Short messages naming each bad key first; then Snakemake's validate fills in the defaults.
from mammoflow.config import problems as _config_problems

_bad = _config_problems(config, workflow.source_path("workflow/schemas/config.schema.yaml"))
if _bad:
    raise WorkflowError("invalid config:\n  " + "\n  ".join(_bad))
validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/gan.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/cam.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/predict.smk"


# `snakemake --report report.html` (Snakemake's own report) after a run: outputs marked with report().
report: "workflow/report/workflow.rst"


# Seconds-long bookkeeping jobs: run them where Snakemake runs instead of queueing them on a cluster.
localrules:
    decode_index,
    folds,
    report,


rule all:
    input:
        data_targets(),
        gan_targets(),
        train_targets(),
        cam_targets(),
        f"{RESULTS}/report/index.html",
    default_target: True
