# The report that closes the DAG: results/report/{index.html, table2.md, table2.csv, cells.csv, protocols.csv,
# shapes.json}.
# report.partial=true asks only for the cells that exist now, so that a run with failed or unfinished cells
# still gets its report (missing and failed cells are marked in it).
# The whole configuration (for provenance) arrives in $MAMMOFLOW_CONFIG (see the Snakefile); only what the
# report shows re-runs it; a change that matters to any result reaches the report through its inputs.
# No parameter is a path (the Snakefile arrives in $MAMMOFLOW_SNAKEFILE, the data folder only as "phantom or
# not"), so a moved checkout or data folder does not re-run the report.


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
        protocols=f"{paths.report_dir()}/protocols.csv",
        shapes=f"{paths.report_dir()}/shapes.json",
    params:
        shown=lambda w: as_json({"phantom": USE_PHANTOM, **{k: config[k] for k in REPORT_KEYS}}, drop=()),
        results=lambda w, output: str(Path(output.cells).parents[1]),
        out=parent("html"),
        code=code_digest("report"),
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m mammoflow report --results {params.results:q} --workdir . --config \"$MAMMOFLOW_CONFIG\""
        " --snakefile \"$MAMMOFLOW_SNAKEFILE\" --out {params.out:q} > {log:q} 2>&1"
