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
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "2"}
    subprocess.run(
        ["bash", str(ROOT / "bench/gpu.sh"), "--tiny", "--device", "cpu", "--models", "resnet18",
         "efficientnet_b0", "--out", str(out)],
        env=env, check=True, timeout=900, capture_output=True, text=True,
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert result["shape"] == "tiny"
    for part in ("train", "gan", "fid", "cam"):
        assert "error" not in result[part], result[part]
    assert {(r["model"], r["res"]) for r in result["train"]} == {
        (m, r) for m in ("resnet18", "efficientnet_b0") for r in (32, 64)
    }
    assert all(r["cell_img_s"] > 0 and r["bare_img_s"] > 0 and r["precision"] for r in result["train"])
    assert [r["stage"] for r in result["gan"]] == [16, 32] and all(r["kimg_s"] > 0 for r in result["gan"])
    assert result["fid"]["generated"] == 8 and result["fid"]["images_s"] > 0
    assert len(result["cam"]) == 4 and all(r["images_s"] > 0 for r in result["cam"])
