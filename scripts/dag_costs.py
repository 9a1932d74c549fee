"""What a configuration's DAG asks of a machine or cluster, from `snakemake -n` itself.

Counts the jobs per rule, which of them ask for a GPU, and adds up the rules' `runtime` limits (minutes,
what a SLURM job is granted, not what it takes). The docs quote these numbers between markers
(``<!-- dag-costs:begin -->`` ... ``<!-- dag-costs:end -->``); ``--check PAGE`` fails when a page's block
differs from what the shipped DAG gives, and ``--write PAGE`` rewrites the block (tests/test_docs_numbers.py
runs the check).

    python scripts/dag_costs.py                                   # config.yaml, as a Markdown table
    python scripts/dag_costs.py --configfile presets/demo.yaml
    python scripts/dag_costs.py --check docs/scale.md             # every block of the page
    python scripts/dag_costs.py --write docs/scale.md             # rewrite them

A block's first line names the config files (and --config values) it was made with; an empty block
(markers only) is made from config.yaml.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- dag-costs:begin -->", "<!-- dag-costs:end -->"


@dataclass
class RuleCost:
    jobs: int = 0
    gpu_jobs: int = 0
    runtime_minutes: int = 0
    mem_mb: set[int] = field(default_factory=set)


def stand_in_weights(configfiles: list[str], folder: Path) -> Path:
    """A weights folder holding an empty file for each pretrained file the configuration needs (the DAG
    build checks that they exist, `snakemake weights` would fetch them), and the config file that points
    weights.folder at it."""
    sys.path.insert(0, str(REPO / "src"))
    from mammoflow.config import load_yaml, merge
    from mammoflow.weights import catalog

    config: dict = {}
    for name in configfiles:
        config = merge(config, load_yaml(REPO / name))
    config = merge(config, {"weights": {"folder": str(folder)}})
    for need in catalog.needed(config):
        if need.kind != "file":  # a user's own file (gan.inception: a path) is theirs to provide
            path = folder / need.candidates[0]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    overlay = folder / "weights.yaml"
    overlay.write_text(f"weights:\n  folder: {folder}\n")
    return overlay


def dry_run(configfiles: list[str], extra: list[str]) -> str:
    """The dry run's text, in an empty folder (nothing exists yet: every job of the DAG is listed), with
    stand-ins for the pretrained files (stand_in_weights)."""
    snakemake = Path(sys.executable).with_name("snakemake")
    with tempfile.TemporaryDirectory() as empty, tempfile.TemporaryDirectory() as weights:
        overlay = stand_in_weights(configfiles, Path(weights))
        command = [
            str(snakemake), "-n", "--forceall", "-s", str(REPO / "Snakefile"), "--directory", empty,
            "--configfile", *[str(REPO / c) for c in configfiles], str(overlay), *extra,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TERM": "dumb"})
    if done.returncode:
        tail = done.stdout[-2000:] + done.stderr[-2000:]
        raise SystemExit(f"snakemake -n failed ({done.returncode}):\n{tail}")
    return done.stdout + done.stderr


def costs(text: str) -> dict[str, RuleCost]:
    """Per rule: jobs, GPU jobs, summed runtime limits and the memory requests seen."""
    out: dict[str, RuleCost] = defaultdict(RuleCost)
    rule = None
    for line in text.splitlines():
        match = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if match:
            rule = match.group(1)
            if rule != "all":
                out[rule].jobs += 1
            continue
        if rule and rule != "all" and line.strip().startswith("resources:"):
            resources = dict(re.findall(r"(\w+)=([^,\s]+)", line))
            if int(resources.get("gpu", 0)):
                out[rule].gpu_jobs += 1
            out[rule].runtime_minutes += int(resources.get("runtime", 0))
            if "mem_mb" in resources:
                out[rule].mem_mb.add(int(resources["mem_mb"]))
    return dict(out)


def table(found: dict[str, RuleCost]) -> str:
    rows = ["| rule | jobs | GPU jobs | runtime limits (hours) | mem_mb asked |", "|---|---|---|---|---|"]
    order = sorted(found.items(), key=lambda item: (-item[1].gpu_jobs, -item[1].jobs, item[0]))
    for rule, cost in order:
        memory = "–".join(str(m) for m in sorted({min(cost.mem_mb), max(cost.mem_mb)})) if cost.mem_mb else ""
        rows.append(
            f"| `{rule}` | {cost.jobs} | {cost.gpu_jobs} | {cost.runtime_minutes / 60:.0f} | {memory} |"
        )
    jobs = sum(c.jobs for c in found.values())
    gpu_jobs = sum(c.gpu_jobs for c in found.values())
    gpu_hours = sum(c.runtime_minutes for c in found.values() if c.gpu_jobs) / 60
    rows.append(f"| **all** | **{jobs}** | **{gpu_jobs}** | **{gpu_hours:.0f}** on GPU rules | |")
    return "\n".join(rows)


def block(configfiles: list[str], extra: list[str]) -> str:
    shown = " ".join(["--configfile", *configfiles, *extra])
    found = table(costs(dry_run(configfiles, extra)))
    return f"{BEGIN}\n`python scripts/dag_costs.py {shown}`:\n\n{found}\n{END}"


def page_blocks(page: Path) -> list[tuple[str, list[str], list[str]]]:
    """Each block of a page: its text, and the config files and --config values its first line names."""
    found = []
    for body in page.read_text().split(BEGIN)[1:]:
        if END not in body:
            raise SystemExit(f"{page}: a {BEGIN} without {END}")
        text = BEGIN + body.split(END, 1)[0] + END
        command = re.search(r"`python scripts/dag_costs\.py ([^`]*)`", text)
        words = command.group(1).split() if command else ["--configfile", "config.yaml"]
        configfiles, extra, into = [], [], None
        for word in words:
            if word in ("--configfile", "--config"):
                into = configfiles if word == "--configfile" else extra
                if word == "--config":
                    extra.append(word)
                continue
            into.append(word)
        found.append((text, configfiles, extra))
    if not found:
        raise SystemExit(f"{page}: no {BEGIN} ... {END} block")
    return found


def main(argv: list[str] | None = None) -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--configfile", nargs="+", default=["config.yaml"], help="relative to the repository")
    parser.add_argument("--config", nargs="*", default=[], help="passed to snakemake --config")
    parser.add_argument("--check", type=Path, help="fail when a block of this page differs from the DAG")
    parser.add_argument("--write", type=Path, help="rewrite every block of this page from the DAG")
    args = parser.parse_args(argv)
    page = args.check or args.write
    if page is None:
        print(block(args.configfile, ["--config", *args.config] if args.config else []))
        return 0
    text, stale = page.read_text(), 0
    for found, configfiles, extra in page_blocks(page):
        wanted = block(configfiles, extra)
        if found.strip() != wanted.strip():
            stale += 1
            text = text.replace(found, wanted)
            print(f"{page}: the DAG's numbers changed; now:\n{wanted}\nwas:\n{found}\n")
    if args.write:
        page.write_text(text)
        return 0
    if stale:
        print(f"rewrite with: python scripts/dag_costs.py --write {page}")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
