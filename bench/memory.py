"""Peak memory and time of each kind of job, read from a run's benchmarks/ (Snakemake's benchmark files).

Snakemake samples a job's memory every few seconds, so a short peak can be missed: a training cell's own
``metrics.json`` has the exact one (``peak_host_memory_mib``, from getrusage). CPU time does not depend on
how busy the machine was, wall time does.

Usage (from the folder the workflow ran in):
    python bench/memory.py                  # a markdown table: kind of job, jobs, max peak RSS, max seconds
    python bench/memory.py --root /tmp/run --json peaks.json

Kinds: the rule and, where the path has one, the resolution (train 512 px, cam 256 px, GAN stage 512,
...); for training cells and CAM jobs also the model, since resnet152 and efficientnet_b0 differ tenfold.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd


def kind_of(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    rule = parts[0]
    if rule in ("train", "cam") and len(parts) >= 5:  # {rule}/{protocol}/{res}/{dataset}/{model}/fold{k}
        return f"{rule} {parts[2]} px {parts[4]}"
    if rule == "gan":
        name = parts[-1]
        stage = re.fullmatch(r"stage(\d+)", name)
        synth = re.fullmatch(r"synthesize(\d+)", name)
        if stage:
            return f"gan_stage {stage.group(1)} px"
        if synth:
            return f"synthesize {synth.group(1)} px"
        return "gan_fid (all stages)" if name == "fid" else f"gan {name}"
    if rule == "preprocess" and len(parts) == 2:  # preprocess/{res}_{dataset}
        return f"preprocess {parts[1].split('_')[0]} px"
    return rule


def collect(root: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        table = pd.read_csv(path, sep="\t")
        if "max_rss" not in table.columns or table.empty:
            continue
        rss = pd.to_numeric(table["max_rss"], errors="coerce").max()
        cpu = pd.to_numeric(table["cpu_time"], errors="coerce").max() if "cpu_time" in table else float("nan")
        rows.append(
            {"kind": kind_of(path, root), "max_rss_mib": rss, "seconds": float(table["s"].max()), "cpu": cpu}
        )
    frame = pd.DataFrame(rows, columns=["kind", "max_rss_mib", "seconds", "cpu"])
    return (
        frame.groupby("kind")
        .agg(
            jobs=("kind", "size"),
            peak_rss_mib=("max_rss_mib", "max"),
            max_seconds=("seconds", "max"),
            max_cpu_seconds=("cpu", "max"),
        )
        .reset_index()
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=Path("benchmarks"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    table = collect(args.root)
    if table.empty:
        print(f"{args.root}: no benchmark files", file=sys.stderr)
        return 1
    print("| job | jobs | peak RSS (MiB) | longest wall (s) | most CPU time (s) |\n|---|---|---|---|---|")
    for row in table.itertuples():
        print(
            f"| {row.kind} | {row.jobs} | {row.peak_rss_mib:.0f} | {row.max_seconds:.0f} "
            f"| {row.max_cpu_seconds:.0f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(table.to_dict(orient="records"), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
