"""Where the numbers came from: code version, packages, machine, and when each stage ran and for how long."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from mammoflow import paths

PACKAGES = (
    "mammoflow", "snakemake", "torch", "torchvision", "timm", "grad-cam", "numpy", "pandas", "pyarrow",
    "scikit-learn", "jinja2", "opencv-python-headless", "pydicom", "dicomsdl", "matplotlib",
)  # fmt: skip


def git_state(repo: Path) -> dict:
    """Commit and whether the working tree had uncommitted changes; 'unknown' outside a git checkout."""

    def git(*args):
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=20)
        return done.stdout.strip() if done.returncode == 0 else None

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        commit = dirty = None
    return {
        "commit": commit or "unknown (not a git checkout)",
        "uncommitted changes": "unknown" if dirty is None else ("yes" if dirty else "no"),
    }


def package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    """The machine the report was made on (the cells record their own device in metrics.json)."""
    info = {
        "host": platform.node(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": f"{_cpu_name()} ({os.cpu_count()} logical cores)",
    }
    try:
        import torch

        info["cuda"] = (
            ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
            if torch.cuda.is_available()
            else "none"
        )
    except ImportError:
        info["cuda"] = "torch not installed"
    return info


def rule_of(benchmark: Path) -> str:
    """The rule a benchmark file belongs to: benchmarks/<rule>/... or benchmarks/<rule>.tsv, except the GAN
    rules, which share benchmarks/gan/ (stage*.tsv: gan_stage, fid.tsv: gan_fid, synthesize*: synthesize)."""
    if len(benchmark.parts) == 1:
        return benchmark.stem
    if benchmark.parts[0] == "gan":
        name = benchmark.stem
        if name == "fid":
            return "gan_fid"
        return "synthesize" if name.startswith("synthesize") else "gan_stage"
    return benchmark.parts[0]


def stage_timings(workdir: Path) -> pd.DataFrame:
    """Per rule: jobs, total and longest wall-clock seconds and peak memory (Snakemake's benchmark files,
    benchmarks/<rule>/...), first and last finish time (the benchmark files' modification times)."""
    root = Path(workdir) / paths.BENCHMARKS
    rows = []
    for path in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        rule = rule_of(path.relative_to(root))
        try:
            table = pd.read_csv(path, sep="\t")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            continue
        if table.empty or "s" not in table:
            continue
        rows.append(
            {
                "rule": rule,
                "s": float(table["s"].iloc[-1]),
                "max_rss_mb": float(pd.to_numeric(table.get("max_rss"), errors="coerce").iloc[-1])
                if "max_rss" in table
                else float("nan"),
                "finished": path.stat().st_mtime,
            }
        )
    if not rows:
        return pd.DataFrame(
            columns=["rule", "jobs", "total_s", "longest_s", "peak_rss_mb", "first_done", "last_done"]
        )
    frame = pd.DataFrame(rows)
    grouped = frame.groupby("rule", sort=False).agg(
        jobs=("s", "size"),
        total_s=("s", "sum"),
        longest_s=("s", "max"),
        peak_rss_mb=("max_rss_mb", "max"),
        first_done=("finished", "min"),
        last_done=("finished", "max"),
    )
    for column in ("first_done", "last_done"):
        grouped[column] = [_when(t) for t in grouped[column]]
    return grouped.sort_values("first_done", kind="stable").reset_index()


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def now() -> str:
    return datetime.now(tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
