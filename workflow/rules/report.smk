# The report that closes the DAG: results/report/{index.html, table2.md, table2.csv, cells.csv}.
# report.partial=true asks only for the cells that exist now, so that a run with failed or unfinished cells
# still gets its report (missing and failed cells are marked in it).
# The whole configuration (for provenance) arrives in $MAMMOFLOW_CONFIG (see the Snakefile); only what the
# report shows re-runs it; a change that matters to any result reaches the report through its inputs.


rule report:
    input:
        report_inputs,
    output:
        html=report(
            f"{paths.report_dir()}/index.html",
            category="Report",
            caption="../report/index.rst",
        ),
        markdown=f"{paths.report_dir()}/table2.md",
        table=report(
            f"{paths.report_dir()}/table2.csv",
            category="Report",
            caption="../report/table2.rst",
        ),
        cells=f"{paths.report_dir()}/cells.csv",
    params:
        shown=lambda w: as_json({k: config[k] for k in REPORT_KEYS}, drop=()),
        snakefile=workflow.main_snakefile,
        results=lambda w, output: str(Path(output.cells).parents[1]),
        out=parent("html"),
        code=package_digest("report"),
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m mammoflow report --results {params.results:q} --workdir . --config \"$MAMMOFLOW_CONFIG\""
        " --snakefile {params.snakefile:q} --out {params.out:q} > {log:q} 2>&1"
