# The report that closes the DAG: results/report/{index.html, table2.md, table2.csv, cells.csv}.
# report.partial=true asks only for the cells that exist now, so that a run with failed or unfinished cells
# still gets its report (missing and failed cells are marked in it).
import json
import shlex

import mammoflow.report as _report_package

REPORT_CODE = package_digest(_report_package)
CAM_RULES = globals().get("CAM_RULES", False)
# The whole configuration goes to the page's provenance section, but only what the report shows re-runs
# it (a setting of a model outside the matrix changes nothing else either); a change that matters to any
# result reaches the report through its inputs.
REPORT_CONFIG = shlex.quote(json.dumps(config, sort_keys=True))
REPORT_KEYS = ["data", "protocols", "resolutions", "datasets", "models", "folds", "report"]


def report_inputs(wildcards):
    wanted = [
        f"{RESULTS}/decoded/index.parquet",
        f"{RESULTS}/decoded/errors.parquet",
        f"{RESULTS}/data/folds.parquet",
        *data_targets(),
        *gan_targets(),
    ]
    for metrics in train_targets():
        cell = Path(metrics).parent
        wanted += [metrics, str(cell / "predictions.parquet"), str(cell / "history.csv")]
    if CAM_RULES:
        wanted += cam_targets()
    wanted = list(dict.fromkeys(wanted))
    if config["report"]["partial"]:
        wanted = [path for path in wanted if Path(path).exists()]
    return wanted


rule report:
    input:
        report_inputs,
    output:
        html=report(
            f"{RESULTS}/report/index.html",
            category="Report",
            caption="../report/index.rst",
        ),
        markdown=f"{RESULTS}/report/table2.md",
        table=report(
            f"{RESULTS}/report/table2.csv",
            category="Report",
            caption="../report/table2.rst",
        ),
        cells=f"{RESULTS}/report/cells.csv",
    params:
        shown=lambda w: as_json({k: config[k] for k in REPORT_KEYS}, drop=()),
        snakefile=workflow.main_snakefile,
        code=REPORT_CODE,
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m mammoflow report --results {RESULTS} --workdir . --config {REPORT_CONFIG}"
        " --snakefile {params.snakefile} --out $(dirname {output.html}) > {log} 2>&1"
