"""`mammoflow report`: the Table 2 replica report from a results folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_report(args: argparse.Namespace) -> None:
    from mammoflow.report.build import Inputs, build_report, load_config

    inputs = Inputs(
        results=Path(args.results),
        workdir=Path(args.workdir),
        config=load_config(*args.config),
        snakefile=Path(args.snakefile) if args.snakefile else None,
        out=Path(args.out),
    )
    build_report(inputs)


def register(sub) -> None:
    p = sub.add_parser("report", help="the Table 2 replica report (HTML, Markdown, CSV) from what has run")
    p.add_argument("--results", default="results", help="the workflow's results folder")
    p.add_argument("--workdir", default=".", help="the workflow's working folder (logs/, benchmarks/)")
    p.add_argument(
        "--config",
        required=True,
        nargs="+",
        help="the workflow's configuration: JSON text or YAML/JSON files, merged in order "
        "(e.g. config.yaml presets/demo.yaml)",
    )
    p.add_argument("--snakefile", default="", help="the Snakefile, to draw the rule graph (omit: none)")
    p.add_argument(
        "--out",
        default="results/report",
        help="folder for index.html, table2.md, table2.csv, cells.csv, protocols.csv, shapes.json",
    )
    p.set_defaults(func=cmd_report)
