"""`snakemake --profile slurm` against a real SLURM: a one-node cluster on this machine (scripts/slurm/up.sh).

The tiny config's jobs go through snakemake-executor-plugin-slurm to slurmctld/slurmd; the tests check that
they ran as SLURM jobs (the controller's own record), that GPU rules asked SLURM for a GPU, that the outputs
equal a local run's, and that a SLURM job killed mid-run is retried to a complete, correct result.

They skip, saying why, where SLURM cannot run (not root; packages missing and not installable; /etc/slurm
holding another cluster's configuration). Deselect them with `pytest -m "not slurm"`.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TINY = REPO / "tests/config/tiny.yaml"
UP, DOWN, STATUS = (REPO / "scripts/slurm" / name for name in ("up.sh", "down.sh", "status.sh"))
# The plugin hangs for ever (ignoring SIGTERM) when its status command keeps failing: every Snakemake run
# here is bounded by `timeout -k`.
RUN_LIMIT_S = 420
# Polling for the test's jobs of 6-15 s. The plugin waits this long after submitting, then 10 s more after
# each poll that finds nothing finished (here: polls 2, 14, 36 s after a submission), and goes back to this
# value once a job finished. The cluster's MinJobAge (300 s) is far above the 3 x this value that the
# plugin asks for before it trusts squeue.
POLL = ["--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2"]
# Columns and keys that hold timings, which differ from run to run: dropped before outputs are compared.
# (Pictures, model weights and DICOMs are not compared, only required to exist in both runs.)
TIMING = re.compile(r"seconds|per_second|elapsed|timestamp")


def _local_rules() -> set[str]:
    """The Snakefile's `localrules:` (a local dry run prints every job as a plain `rule`)."""
    block = re.search(r"^localrules:\n((?:[ \t]+\w+,?\n)+)", (REPO / "Snakefile").read_text(), re.MULTILINE)
    return set(re.findall(r"\w+", block.group(1))) if block else set()


def _script(path, *args, timeout=600):
    return subprocess.run(["bash", str(path), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cluster():
    """The local cluster, up; brought down afterwards only if this module started it and no one else's
    jobs are on it."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the local SLURM test cluster needs Linux")
    if os.geteuid() != 0:
        pytest.skip("the local SLURM test cluster needs root (daemons, /etc/slurm, munge)")
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("SLURM is not installed and there is no apt-get to install it (Debian: slurmctld slurmd "
                    "slurm-client munge)")  # fmt: skip
    was_up = _script(STATUS).returncode == 0
    started = time.monotonic()
    up = _script(UP, "--install")
    seconds = time.monotonic() - started
    if up.returncode in (2, 3, 4):  # not root / packages not installable / another cluster's /etc/slurm
        pytest.skip(f"SLURM cannot run here: {up.stderr.strip().splitlines()[-1]}")
    assert up.returncode == 0, f"scripts/slurm/up.sh failed ({up.returncode}):\n{up.stdout}\n{up.stderr}"
    print(f"cluster up in {seconds:.1f} s ({'already running' if was_up else 'started'})")
    yield
    if not was_up:
        others = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
        if not others:
            _script(DOWN)


def _command(workdir, targets=(), *args, slurm=False):
    """Snakemake on the tiny config, in `workdir`. With slurm=True exactly as a user types it in the
    repository root: `snakemake --profile slurm` (the profile found as ./slurm/config.yaml). Targets come
    first: options such as --configfile and --quiet take several values."""
    how = ["--profile", "slurm", *POLL] if slurm else ["-s", str(REPO / "Snakefile"), "--cores", "2"]
    return [sys.executable, "-m", "snakemake", *targets, *how, "--directory", str(workdir),
            "--configfile", str(TINY), *args]  # fmt: skip


def snakemake(workdir, targets=(), *args, slurm=False, limit=RUN_LIMIT_S, cwd=REPO):
    command = _command(workdir, targets, *args, slurm=slurm)
    if slurm:
        command = ["timeout", "-k", "15", str(limit), *command]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=limit + 60)


def _check(done, what):
    if done.returncode != 0:
        hint = " (timed out: see the plugin's status polling)" if done.returncode in (124, 137) else ""
        tail = f"{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
        raise AssertionError(f"{what} failed ({done.returncode}){hint}:\n{tail}")


def _jobs(workdir):
    """The tiny DAG's jobs (rule, outputs, resources) from a dry run, with the jobs each one needs."""
    done = snakemake(workdir, (), "-n")
    _check(done, "snakemake -n")
    jobs, job = {}, None
    for line in (done.stdout + done.stderr).splitlines():
        head = re.match(r"^(local)?rule (\w+):$", line)
        key, _, value = line.strip().partition(": ")
        if head:
            local = bool(head.group(1)) or head.group(2) in _local_rules()
            job = {"rule": head.group(2), "local": local, "output": [], "resources": {}}
            job["needs"] = set()
        elif job is not None and key == "jobid":
            jobs[int(value)] = job
        elif job is not None and key == "output":
            job["output"] = value.split(", ")
        elif job is not None and key == "resources":
            job["resources"] = dict(item.partition("=")[::2] for item in value.split(", "))
    dag = snakemake(workdir, (), "--d3dag")
    _check(dag, "snakemake --d3dag")
    for edge in json.loads(dag.stdout)["edges"]:  # u is an input of v
        jobs[edge["v"]]["needs"].add(edge["u"])
    return jobs


def _closure(jobs, chosen):
    """The chosen jobs and every job they need, directly or not."""
    seen, todo = set(), list(chosen)
    while todo:
        jobid = todo.pop()
        if jobid not in seen:
            seen.add(jobid)
            todo.extend(jobs[jobid]["needs"])
    return seen


def _gpu(job):
    return job["resources"].get("gpu", "0") not in ("0", "") or "gpu" in job["resources"].get("gres", "")


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    """Targets: the GPU job of the tiny DAG that needs the fewest other jobs (with all of those); without
    a gpu=1 rule, the smallest resolution's stores and the folds."""
    jobs = _jobs(tmp_path_factory.mktemp("probe"))
    gpu = [jobid for jobid, job in sorted(jobs.items()) if _gpu(job)]
    if gpu:
        chosen = [min(gpu, key=lambda jobid: len(_closure(jobs, [jobid])))]
    else:
        stores = {i: int(Path(j["output"][0]).parts[2]) for i, j in jobs.items() if j["rule"] == "preprocess"}
        chosen = [i for i, res in stores.items() if res == min(stores.values())]
        chosen += [i for i, j in jobs.items() if j["rule"] == "folds"]
    # The jobs that go to SLURM: not localrules (run by Snakemake itself).
    planned = [jobs[i] for i in sorted(_closure(jobs, chosen)) if not jobs[i]["local"]]
    print(f"SLURM test targets: {[jobs[i]['output'][0] for i in chosen]} ({len(planned)} jobs)")
    return {
        "targets": [jobs[i]["output"][0] for i in chosen],
        "jobs": planned,
        "gpu_rules": sorted({j["rule"] for j in jobs.values() if _gpu(j)}),
    }


@pytest.fixture(scope="module")
def local_run(plan, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("local")
    started = time.monotonic()
    _check(snakemake(workdir, plan["targets"]), "local snakemake")
    print(f"local run: {time.monotonic() - started:.0f} s")
    return workdir


@pytest.fixture(scope="module")
def slurm_run(cluster, plan, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm")
    started = time.monotonic()
    done = snakemake(workdir, plan["targets"], slurm=True)
    _check(done, "snakemake --profile slurm")
    print(f"SLURM run: {time.monotonic() - started:.0f} s")
    return workdir, done.stdout + done.stderr


def _slurm_jobs(run_id):
    """The controller's record of a run's jobs (finished jobs stay MinJobAge = 300 s)."""
    out = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True).stdout
    jobs = []
    for line in out.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if fields.get("JobName") == run_id:
            jobs.append(fields)
    return jobs


def _seconds(elapsed):
    """squeue's %M ([days-][hours:]minutes:seconds) in seconds."""
    days, _, clock = elapsed.rpartition("-")
    seconds = 0
    for part in clock.split(":"):
        seconds = seconds * 60 + int(part)
    return seconds + 86400 * int(days or 0)


def _run_id(log):
    found = re.findall(r"SLURM run ID: (\S+)", log)
    assert found, f"no 'SLURM run ID' in Snakemake's log: it did not use the SLURM executor\n{log[-3000:]}"
    return found[0]


def _relative(value):
    """An absolute path into a working directory's results/, from results/ on (runs differ in directory)."""
    if isinstance(value, str) and value.startswith("/") and "/results/" in value:
        return "results/" + value.split("/results/", 1)[1]
    return value


def _frame(path):
    """A table without timings, with paths inside the working directory relative to it."""
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    frame = frame.drop(columns=[c for c in frame.columns if TIMING.search(str(c))])
    for column in frame.columns:
        if frame[column].dtype == object or isinstance(frame[column].dtype, pd.StringDtype):
            frame[column] = frame[column].map(_relative)
    return frame


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if not TIMING.search(k)}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return _relative(value)


def assert_same_results(got, want):
    """The outputs under results/ agree: the same files; arrays byte for byte; tables and JSON equal once
    timings are dropped and paths made relative to the working directory."""
    files = {p.relative_to(want) for p in (want / "results").rglob("*") if p.is_file()}
    assert {p.relative_to(got) for p in (got / "results").rglob("*") if p.is_file()} == files
    compared = 0
    for name in sorted(files):
        a, b = got / name, want / name
        if name.suffix in (".npy", ".u16"):
            assert a.read_bytes() == b.read_bytes(), f"{name}: bytes differ from the local run's"
        elif name.suffix in (".parquet", ".csv"):
            pd.testing.assert_frame_equal(_frame(a), _frame(b), obj=str(name))
        elif name.suffix == ".json":
            mine, theirs = (_without_timings(json.loads(path.read_text())) for path in (a, b))
            assert mine == theirs, f"{name}: differs from the local run's"
        else:
            continue
        compared += 1
    assert compared >= 5, f"only {compared} comparable outputs"
    return compared


def test_profile_runs_jobs_as_slurm_jobs(cluster, plan, local_run, slurm_run):
    workdir, log = slurm_run
    run_id = _run_id(log)
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.", log)
    assert len(submitted) == len(plan["jobs"]), f"{len(submitted)} submissions, {len(plan['jobs'])} jobs"
    for _, slurm_log in submitted:  # each job's SLURM log is where Snakemake's log says
        assert Path(slurm_log).is_file() and Path(slurm_log).stat().st_size > 0, slurm_log

    # The controller's record: every job of the run completed, one per planned job, rule by rule.
    record = _slurm_jobs(run_id)
    assert {j["JobId"] for j in record} == {job_id for job_id, _ in submitted}
    assert all(j["JobState"] == "COMPLETED" for j in record), [(j["JobId"], j["JobState"]) for j in record]
    ran = sorted(re.match(r"rule_(\w+?)(_wildcards_|$)", j["Comment"]).group(1) for j in record)
    assert ran == sorted(job["rule"] for job in plan["jobs"])

    # GPU rules asked SLURM for a GPU (scheduled on the node's fake GRES); the others did not.
    for j in record:
        rule = re.match(r"rule_(\w+?)(_wildcards_|$)", j["Comment"]).group(1)
        asked = "gpu" in j.get("TresPerJob", "") + j.get("TresPerNode", "")
        assert asked == (rule in plan["gpu_rules"]), f"{rule}: TresPerJob={j.get('TresPerJob')}"
    # (Without a gpu=1 rule in the DAG, the loop above checks only that no job asked for a GPU.)

    assert_same_results(workdir, local_run)


def test_profile_found_from_any_directory(tmp_path):
    """`--profile <repo>/slurm` from elsewhere is the same profile (dry run: no cluster needed)."""
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--profile", str(REPO / "slurm"),
         "--directory", str(tmp_path), "--configfile", str(TINY), "-n"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    _check(done, "snakemake --profile <repo>/slurm -n")
    assert "Using profile" in done.stdout + done.stderr


def test_killed_job_is_retried_to_correct_result(cluster, plan, local_run, slurm_run, tmp_path):
    """scancel a running job (what a preemption or node failure looks like to Snakemake): the profile's
    retries submit it again, and the run ends complete and equal to the local run."""
    source, _ = slurm_run
    shutil.copytree(source / "results", tmp_path / "results")
    # The job to kill: a GPU rule's (the expensive kind), else the last data job. Its outputs go, so that
    # this run has exactly that job (and what follows it) to do.
    victim = next((j for j in plan["jobs"] if j["rule"] in plan["gpu_rules"]), plan["jobs"][-1])
    for output in victim["output"]:
        (tmp_path / output).unlink()
    known = set(subprocess.run(["squeue", "-h", "--states=all", "-o", "%i"], capture_output=True,
                               text=True).stdout.split())  # fmt: skip

    command = _command(tmp_path, plan["targets"], slurm=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    log = tmp_path / "snakemake.out"
    with log.open("w") as out:
        run = subprocess.Popen(["timeout", "-k", "15", str(RUN_LIMIT_S), *command], cwd=REPO, env=env,
                               stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        killed = None
        deadline = time.monotonic() + 180
        while killed is None and time.monotonic() < deadline and run.poll() is None:
            queue = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k|%M"], capture_output=True,
                                   text=True).stdout  # fmt: skip
            for line in queue.splitlines():
                job_id, comment, elapsed = line.split("|")
                ours = job_id not in known and comment.startswith(f"rule_{victim['rule']}")
                if ours and _seconds(elapsed) >= 2:
                    subprocess.run(["scancel", job_id], check=True)
                    killed = job_id
            time.sleep(0.3)
        assert killed, f"never saw the {victim['rule']} job running:\n{log.read_text()[-3000:]}"
        print(f"cancelled SLURM job {killed} ({victim['rule']})")
        returncode = run.wait(timeout=RUN_LIMIT_S + 60)
    finally:
        if run.poll() is None:  # a failed assertion: stop Snakemake (timeout passes SIGTERM on, then kills)
            run.terminate()
            run.wait(timeout=30)
    text = log.read_text()
    _check(subprocess.CompletedProcess(command, returncode, text, ""), "snakemake --profile slurm (kill)")

    record = {j["JobId"]: j for j in _slurm_jobs(_run_id(text))}
    assert record[killed]["JobState"] == "CANCELLED", record[killed]["JobState"]
    again = [j for i, j in record.items() if i != killed and j["Comment"] == record[killed]["Comment"]]
    assert [j["JobState"] for j in again] == ["COMPLETED"], "the cancelled job was not submitted again"
    assert re.search(r"Trying to restart job \d+", text), text[-3000:]
    assert_same_results(tmp_path, local_run)
    after = snakemake(tmp_path, plan["targets"], "-n")
    _check(after, "snakemake -n after the recovered run")
    assert "Nothing to be done" in after.stdout + after.stderr, after.stdout[-3000:]
