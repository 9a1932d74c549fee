"""GPU leasing (src/mammoflow/devices.py): fake GPUs handed to concurrent processes, on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mammoflow import devices

SRC = str(Path(__file__).resolve().parents[1] / "src")

# A stand-in GPU job: lease as `mammoflow train` does, note which device it saw and when, hold it a while.
JOB = textwrap.dedent(
    """
    import json, os, sys, time
    from mammoflow.devices import lease_for_command
    lease_for_command("train", "auto")
    start = time.time()
    time.sleep(float(sys.argv[2]))
    record = {"device": os.environ["CUDA_VISIBLE_DEVICES"], "start": start, "end": time.time()}
    open(sys.argv[1], "w").write(json.dumps(record))
    """
)


def _env(tmp_path: Path, gpus: str = "0,1") -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    env.update(MAMMOFLOW_GPUS=gpus, MAMMOFLOW_GPU_LOCKS=str(tmp_path / "locks"), PYTHONPATH=SRC)
    return env


def test_two_fake_gpus_three_concurrent_jobs_never_share_a_device(tmp_path):
    env = _env(tmp_path)
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", JOB, str(tmp_path / f"job{i}.json"), "3"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    logs = [job.communicate(timeout=120)[1] for job in jobs]
    assert all(job.returncode == 0 for job in jobs), logs
    records = [json.loads((tmp_path / f"job{i}.json").read_text()) for i in range(3)]
    assert {r["device"] for r in records} == {"0", "1"}, "both devices should be used"
    for i, a in enumerate(records):
        for b in records[i + 1 :]:
            if a["device"] == b["device"]:
                assert a["end"] <= b["start"] or b["end"] <= a["start"], (a, b)
    # The jobs did run at the same time (two devices held at once), so the leases were really contended.
    assert any(
        a["start"] < b["end"] and b["start"] < a["end"]
        for i, a in enumerate(records)
        for b in records[i + 1 :]
    )


def test_a_killed_job_releases_its_device(tmp_path):
    env = _env(tmp_path, gpus="3,7")
    holders = [
        subprocess.Popen([sys.executable, "-c", JOB, str(tmp_path / f"h{i}.json"), "600"], env=env)
        for i in range(2)
    ]
    locks = tmp_path / "locks"
    try:
        # Both devices held: wait until both lock files name their holder.
        for _ in range(600):
            texts = [p.read_text() for p in locks.glob("gpu*.lock")] if locks.is_dir() else []
            if len(texts) == 2 and all(t.startswith("pid") for t in texts):
                break
            subprocess.run(["sleep", "0.1"], check=True)
        holders[0].kill()
        holders[0].wait()
        out = tmp_path / "next.json"
        subprocess.run([sys.executable, "-c", JOB, str(out), "0"], env=env, check=True, timeout=60)
        assert json.loads(out.read_text())["device"] in {"3", "7"}
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()


def test_no_leasing_under_a_scheduler_or_with_one_device(monkeypatch):
    monkeypatch.delenv("MAMMOFLOW_GPUS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")  # SLURM assigned the job its GPU
    assert not devices.leasing_wanted(["0", "1", "2", "3"])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    assert not devices.leasing_wanted(["0", "1"])
    monkeypatch.delenv("SLURM_JOB_ID")
    assert not devices.leasing_wanted(["0"])
    assert devices.leasing_wanted(["0", "1"])
    assert devices.lease_for_command("train", "cpu") is None
    assert devices.lease_for_command("train", "cuda:1") is None
    assert devices.lease_for_command("decode", None) is None


def test_device_list_is_checked(monkeypatch):
    monkeypatch.setenv("MAMMOFLOW_GPUS", "0,1,0")
    with pytest.raises(ValueError, match="twice"):
        devices.shared_devices()
    monkeypatch.setenv("MAMMOFLOW_GPUS", "none")
    assert devices.shared_devices() == []
    monkeypatch.setenv("MAMMOFLOW_GPUS", " 2, 5 ")
    assert devices.shared_devices() == ["2", "5"]


def test_the_command_line_leases_before_the_stage_runs(tmp_path):
    """`mammoflow train` itself takes the device: here it leases, then fails on the missing store."""
    env = _env(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "mammoflow", "train", "--store", str(tmp_path / "none"), "--folds",
         str(tmp_path / "folds.parquet"), "--model", "resnet18", "--fold", "0", "--out", str(tmp_path / "o")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert "leased GPU" in result.stderr, result.stderr
    assert result.returncode != 0


SNAKEFILE = """
rule all:
    input: expand("done/{i}.json", i=range(4))

rule gpu_job:
    output: "done/{i}.json"
    resources: gpu=1
    shell: "{python:q} -c {job:q} {output:q} 1"
"""


def test_snakemake_with_the_workstation_resources_runs_jobs_on_distinct_devices(tmp_path):
    """The documented local command: --resources gpu=N; Snakemake bounds, the jobs lease."""
    (tmp_path / "Snakefile").write_text(f"python = {sys.executable!r}\njob = {JOB!r}\n" + SNAKEFILE)
    snakemake = Path(sys.executable).parent / "snakemake"
    result = subprocess.run(
        [str(snakemake), "--cores", "4", "--resources", "gpu=2", "--quiet", "all"],
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads((tmp_path / f"done/{i}.json").read_text()) for i in range(4)]
    assert {r["device"] for r in records} == {"0", "1"}
    for i, a in enumerate(records):
        for b in records[i + 1 :]:
            if a["device"] == b["device"]:
                assert a["end"] <= b["start"] or b["end"] <= a["start"], (a, b)
