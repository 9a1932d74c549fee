"""The SLURM profile sends every GPU job to a partition with GPUs from one setting (slurm/config.yaml's
slurm-partition-config), not from a per-rule list: checked with the SLURM plugin's own partition choice on
the resources of every job of the tiny DAG, predict included. No cluster needed."""

import logging
import re
import subprocess
import sys
from types import SimpleNamespace

import yaml
from conftest import REPO, SNAKEMAKE_ENV
from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file

PROFILE = REPO / "slurm/config.yaml"
GPU_RULES = {"train", "gan_stage", "gan_fid", "synthesize", "cam", "predict"}


def _value(text: str):
    return int(text) if text.isdigit() else text


def dry_run_jobs(workdir) -> list[tuple[str, int, dict]]:
    """(rule, threads, resources) of every job of the tiny DAG with a predict job, as Snakemake plans it."""
    (workdir / "new").mkdir()
    extra = workdir / "predict.yaml"
    extra.write_text(f"predict:\n  data: {{new: {workdir / 'new'}}}\n")
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "-n", "--forceall", "--cores", "2", "--configfile", str(REPO / "tests/config/tiny.yaml"),
               str(extra), "--", "all", "predict_all"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=SNAKEMAKE_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = []
    for block in re.split(r"^(?:local)?rule ", done.stdout, flags=re.M)[1:]:
        rule = block.split(":", 1)[0]
        threads = re.search(r"^\s+threads: (\d+)", block, flags=re.M)
        found = re.search(r"^\s+resources: (.*)$", block, flags=re.M)
        pairs = [item.split("=", 1) for item in found.group(1).split(", ")] if found else []
        jobs.append((rule, int(threads.group(1)) if threads else 1, {k: _value(v) for k, v in pairs}))
    return jobs


def test_every_gpu_job_reaches_a_gpu_partition_and_no_other_job_does(tmp_path):
    text = PROFILE.read_text()
    # The one setting (shipped commented, until a site has named its partitions in the file it points to).
    (setting,) = re.findall(r"^#?\s*slurm-partition-config:\s*(\S+)\s*$", text, flags=re.M)
    profile = yaml.safe_load(text)
    # A slurm_partition resource would win over the partition file (for every job it applies to).
    assert "slurm_partition" not in (profile.get("default-resources") or {})
    assert not any("slurm_partition" in r for r in (profile.get("set-resources") or {}).values())

    partitions = read_partition_file(PROFILE.parent / setting)
    with_gpus = {p.name for p in partitions if p.limits.max_gpu > 0}
    assert with_gpus and with_gpus != {p.name for p in partitions}
    jobs = dry_run_jobs(tmp_path)
    logger = logging.getLogger("slurm-partitions")
    chosen = {}
    for rule, threads, resources in jobs:
        job = SimpleNamespace(name=rule, threads=threads, resources=resources)
        chosen.setdefault(rule, set()).add(get_best_partition(partitions, job, logger) in with_gpus)
    asks_gpu = {rule for rule, _, resources in jobs if int(resources.get("gpu", 0)) > 0}
    assert asks_gpu >= GPU_RULES  # every GPU rule of the workflow is among the jobs
    assert chosen == {rule: {rule in asks_gpu} for rule in chosen}
