"""Full disks named (issue 25, item 8): a write that runs out of space fails with one line naming the file and
"no space left on device", leaves no temporary file, and the same command completes once space is freed.

Each test writes into a real small file system (tmpfs, mounted here: needs root, skipped otherwise).
Before: a checkpoint failed with torch's "[enforce fail at inline_container.cc:...] unexpected pos", and a
store filled through a memory map into a full disk killed preprocess with SIGBUS (exit 135).
"""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from dicom_factory import mammo_like, write_dicom

from mammoflow.atomic import atomic_path, write_parquet
from mammoflow.decode import decode_shard, image_path, index_shards
from mammoflow.errors import DiskFullError
from mammoflow.limits import DecodeSettings

MIB = 1 << 20


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs at tmp_path/disk, with a filler file that ``free()`` deletes."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk, leave: int = 0):
    """Fill the disk but ``leave`` bytes; the filler is disk/filler."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(bytes(max(0, free - leave)))


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name)


def test_parquet_write_into_a_full_disk_names_the_path(small_disk):
    frame = pd.DataFrame({"x": np.random.default_rng(0).random(200_000)})  # 1.6 MB, incompressible
    _fill(small_disk, leave=256 * 1024)
    with pytest.raises(DiskFullError, match=r"disk/out/errors\.parquet: no space left on device") as caught:
        write_parquet(frame, small_disk / "out" / "errors.parquet")
    assert "\n" not in str(caught.value) and not _leftovers(small_disk)
    (small_disk / "filler").unlink()
    write_parquet(frame, small_disk / "out" / "errors.parquet")
    assert len(pd.read_parquet(small_disk / "out" / "errors.parquet")) == len(frame)


def test_torch_checkpoint_into_a_full_disk_is_a_full_disk(small_disk):
    """torch reports it as `RuntimeError: [enforce fail at inline_container.cc] ... unexpected pos`."""
    import torch

    state = {"weights": torch.rand(1_000_000)}  # 4 MB
    target = small_disk / "fold0" / "checkpoint.pt"
    full = pytest.raises(DiskFullError, match=r"checkpoint\.pt: no space left on device")
    with full as caught, atomic_path(target) as tmp:
        torch.save(state, tmp)
    assert isinstance(caught.value.__cause__, RuntimeError)  # torch's own error, kept as the cause
    assert not _leftovers(small_disk) and not target.exists()


def _decoded(root, n: int = 12):
    rows = []
    for i in range(n):
        write_dicom(image_path(root / "rsna", 1 + i // 2, 10 + i), mammo_like(300, 240, seed=i), "raw")
        rows.append((1 + i // 2, 10 + i, "LR"[i % 2], "CC", i % 2))
    columns = ["patient_id", "image_id", "laterality", "view", "cancer"]
    pd.DataFrame(rows, columns=columns).to_csv(root / "rsna" / "train.csv", index=False)
    return root / "rsna"


def test_shard_write_into_a_full_disk_leaves_nothing(small_disk, tmp_path):
    data = _decoded(tmp_path)  # 12 images of 300 x 240: 1.7 MB of decoded pixels
    _fill(small_disk, leave=512 * 1024)
    with pytest.raises(DiskFullError, match=r"shard000/pixels\.u16: no space left on device"):
        decode_shard(
            data, small_disk / "shard000", 0, 1, settings=DecodeSettings.configured(working_size=1024)
        )
    assert not _leftovers(small_disk) and not list((small_disk / "shard000").iterdir())
    (small_disk / "filler").unlink()
    assert decode_shard(
        data, small_disk / "shard000", 0, 1, settings=DecodeSettings.configured(working_size=1024)
    ) == (12, 0)


def test_store_into_a_full_disk_fails_with_one_line_not_sigbus(small_disk, tmp_path):
    """The store is reserved on disk before preprocessing: ENOSPC at once. Before, a worker writing through
    the map died of SIGBUS, and the pool of two waited for it for ever (one worker: exit 135)."""
    data = _decoded(tmp_path)
    decode_shard(data, tmp_path / "shard000", 0, 1, settings=DecodeSettings.configured(working_size=512))
    index_shards([tmp_path / "shard000"], tmp_path / "index.parquet", tmp_path / "errors.parquet")
    _fill(small_disk, leave=MIB // 4)  # 12 x 256 x 256 = 0.75 MiB of store
    command = [sys.executable, "-m", "mammoflow", "preprocess", "--index", str(tmp_path / "index.parquet"),
               "--dataset", "processed", "--res", "256", "--out", str(small_disk / "store"),
               "--workers", "2"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])  # not 135 (SIGBUS)
    last = done.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("mammoflow preprocess: error: ")
        and "store/images.npy: no space left on device" in last
    )
    assert "Traceback" not in done.stderr and not _leftovers(small_disk)
    (small_disk / "filler").unlink()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert np.load(small_disk / "store" / "images.npy").shape == (12, 256, 256)
