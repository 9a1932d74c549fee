# The report that closes the DAG: results/report/{index.html, table2.md, table2.csv, cells.csv, protocols.csv}.
# report.partial=true asks only for the cells that exist now, so that a run with failed or unfinished cells
# still gets its report (missing and failed cells are marked in it).
import hashlib
import json
import shlex

from mammoflow import paths

CAM_RULES = globals().get("CAM_RULES", False)
# The whole configuration goes to the page's provenance section, but only what the report shows re-runs
# it (a setting of a model outside the matrix changes nothing else either); a change that matters to any
# result reaches the report through its inputs.
REPORT_CONFIG = shlex.quote(json.dumps(config, sort_keys=True))
REPORT_KEYS = ["protocols", "resolutions", "datasets", "models", "folds", "report"]


def report_code():
    """Hash of what makes the page (the report package with its templates, the metrics and the paths it
    reads): a parameter, so editing them re-runs the report; never a path, so a moved checkout does not."""
    src = Path(workflow.basedir) / "src" / "mammoflow"
    files = [*sorted((src / "report").rglob("*.*")), src / "classify" / "metrics.py", src / "paths.py"]
    digest = hashlib.sha256()
    for path in files:
        if path.suffix in (".py", ".j2", ".css", ".js", ".csv"):
            digest.update(path.relative_to(src).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()[:16]


REPORT_CODE = report_code()


def report_inputs(wildcards):
    wanted = [
        paths.decoded_index(RESULTS),
        paths.decoded_errors(RESULTS),
        paths.folds_table(RESULTS),
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
            f"{paths.report_dir(RESULTS)}/index.html",
            category="Report",
            caption="../report/index.rst",
        ),
        markdown=f"{paths.report_dir(RESULTS)}/table2.md",
        table=report(
            f"{paths.report_dir(RESULTS)}/table2.csv",
            category="Report",
            caption="../report/table2.rst",
        ),
        cells=f"{paths.report_dir(RESULTS)}/cells.csv",
        protocols=f"{paths.report_dir(RESULTS)}/protocols.csv",
    params:
        # What the page shows, and whether the data is the phantom (the data folder's path is not a
        # parameter: the page names it, but moving the data must not re-run the report).
        shown=lambda w: as_json({"phantom": USE_PHANTOM, **{k: config[k] for k in REPORT_KEYS}}, drop=()),
        code=REPORT_CODE,
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m mammoflow report --results {RESULTS:q} --workdir . --config {REPORT_CONFIG}"
        " --snakefile {workflow.main_snakefile:q} --out \"$(dirname {output.html:q})\" > {log:q} 2>&1"
