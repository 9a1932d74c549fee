# mammoflow: Prodan et al. 2023 (Appl. Sci. 13, 4272) as a Snakemake workflow. See README.md.
import json
import os
import sys
import time
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

# The checkout's own package, for the driver too: a plain Snakemake (mammoflow not installed, as with
# --software-deployment-method conda) reads this file; the driver needs only PyYAML and jsonschema.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))


# The experiment's values, found beside this file (also with --directory); --configfile and --config are
# laid over it (mappings merge, lists replace).
configfile: str(Path(workflow.basedir) / "config.yaml")


from mammoflow.config import problems as _config_problems

# Checked once, before anything runs: one line per problem, naming the key.
_bad = _config_problems(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
if _bad:
    raise WorkflowError("invalid config:\n  " + "\n  ".join(_bad))


from mammoflow.plan.gan import GanPlan
from mammoflow.plan.rules import shell_prefix
from mammoflow.plan.source import DataSource, print_decode_summary

# The data: the phantom, or an RSNA folder whose sample sheet is checked before the DAG is built.
SOURCE = DataSource.from_config(config)
USE_PHANTOM, SHEET, LESIONS = SOURCE.phantom, SOURCE.sheet, SOURCE.lesions
_bad = SOURCE.problems()
if _bad:
    raise WorkflowError("\n".join(_bad))
try:
    GAN_PLAN = GanPlan(config)  # the stages a run needs: gan.stages must reach every resolution
except ValueError as _error:
    raise WorkflowError(f"config: {_error}") from None

# Jobs run `python -m mammoflow ...` with this checkout's src/ on PYTHONPATH: without conda, the Python that
# runs Snakemake; with --software-deployment-method conda, the stage's environment (envs/*.yaml).
SRC = str(Path(workflow.basedir) / "src")
_CONDA = "conda" in {str(m).lower().rsplit(".", 1)[-1] for m in workflow.deployment_settings.deployment_method}
shell.prefix(shell_prefix(SRC, None if _CONDA else Path(sys.executable).parent))
STARTED = time.time()

# The whole configuration, for the report's provenance section. Passed in the environment rather than as a
# parameter: only what the report shows re-runs it (REPORT_KEYS), not every setting of every stage.
# The Snakefile likewise, for the report's rule graph (a machine path: it must not re-run anything).
os.environ["MAMMOFLOW_CONFIG"] = json.dumps(config, sort_keys=True)
os.environ["MAMMOFLOW_SNAKEFILE"] = workflow.main_snakefile
# How often a training cell writes its checkpoint: how a cell runs, not what it computes, so (like its
# threads) not a parameter, and a change re-runs nothing.
CHECKPOINT_MINUTES = str(config["train"]["checkpoint_minutes"])
os.environ["MAMMOFLOW_CHECKPOINT_MINUTES"] = CHECKPOINT_MINUTES


envvars:
    "MAMMOFLOW_CONFIG",
    "MAMMOFLOW_SNAKEFILE",
    "MAMMOFLOW_CHECKPOINT_MINUTES",


include: "workflow/rules/common.smk"
include: "workflow/rules/weights.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/gan.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/cam.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/predict.smk"


# `snakemake --report report.html` (Snakemake's own report) after a run: outputs marked with report().
report: "workflow/report/workflow.rst"


wildcard_constraints:
    res=r"\d+",
    shard=r"\d{3}",
    dataset=r"original|processed|augmented",
    protocol=r"clean|paper",
    part=r"fold\d+|all",
    fold=r"\d+",
    stage=r"\d+",
    model=r"[A-Za-z0-9_.-]+",


# Seconds-long bookkeeping jobs: run them where Snakemake runs instead of queueing them on a cluster.
localrules:
    weights,
    decode_index,
    folds,
    report,


rule all:
    input:
        data_targets(),
        gan_targets(),
        train_targets(),
        cam_targets(),
        f"{paths.report_dir()}/index.html",
    default_target: True


# The decode summary on the console, whenever this run decoded something (also when it then failed).
onsuccess:
    print_decode_summary(STARTED)


onerror:
    print_decode_summary(STARTED)
