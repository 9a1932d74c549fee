"""bench/gpu.sh: the prepared GPU check runs its every part at toy sizes on a CPU and writes one JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_tiny_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}  # one xdist worker, one core
    subprocess.run(
        ["bash", str(ROOT / "bench/gpu.sh"), "--tiny", "--device", "cpu", "--models", "resnet18",
         "--out", str(out)],
        env=env, check=True, timeout=900, capture_output=True, text=True,
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert result["shape"] == "tiny"
    for part in ("train", "gan", "fid", "cam"):
        assert "error" not in result[part], result[part]
    assert {(r["model"], r["res"]) for r in result["train"]} == {("resnet18", 32), ("resnet18", 64)}
    assert all(r["cell_img_s"] > 0 and r["bare_img_s"] > 0 and r["precision"] for r in result["train"])
    assert [r["stage"] for r in result["gan"]] == [16, 32] and all(r["kimg_s"] > 0 for r in result["gan"])
    assert result["fid"]["generated"] == 8 and result["fid"]["images_s"] > 0
    assert len(result["cam"]) == 2 and all(r["images_s"] > 0 for r in result["cam"])


def test_memory_table_groups_benchmarks_by_kind_of_job(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    from memory import collect

    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    files = {
        "train/paper/512/processed/resnet152/fold0.tsv": (120.0, 2900.5),
        "train/paper/512/augmented/resnet152/fold1.tsv": (130.0, 3100.0),
        "gan/paper/all/stage512.tsv": (300.0, 6000.0),
        "gan/paper/all/fid.tsv": (500.0, 1500.0),
        "preprocess/512_processed.tsv": (10.0, 600.0),
    }
    for name, (seconds, rss) in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + f"{seconds}\t0:02:00\t{rss}\t1\t1\t1\t0\t0\t1\t1\n")
    table = collect(tmp_path).set_index("kind")
    assert table.loc["train 512 px resnet152", "jobs"] == 2
    assert table.loc["train 512 px resnet152", "peak_rss_mib"] == 3100.0
    assert table.loc["gan_stage 512 px", "max_seconds"] == 300.0
    assert set(table.index) == {"train 512 px resnet152", "gan_stage 512 px", "gan_fid (all stages)",
                                "preprocess 512 px"}  # fmt: skip
