"""GPU leasing for several GPU jobs on one machine (a workstation without a cluster scheduler).

Snakemake counts GPUs (``--resources gpu=N`` bounds how many GPU jobs run at once) but never says which
device a job should use, so without help every job would open ``cuda:0``. Each GPU job therefore leases a
free device itself before torch initialises CUDA: one lock file per device in a shared folder, held with
``fcntl.flock`` for the life of the process. The kernel drops the lock when the process ends, however it
ends (killed, out of memory, segfault), so a lease can never be left stale. The leased device is then the
only one the process sees (``CUDA_VISIBLE_DEVICES``), and the job's ``cuda`` is that device.

Leasing is off where a scheduler already assigns devices (SLURM sets ``CUDA_VISIBLE_DEVICES`` for the job)
and on a machine with one GPU or none. Environment variables:

- ``MAMMOFLOW_GPUS``: the devices to share, e.g. ``0,1,2,3``; ``auto`` (the default) counts them with
  ``nvidia-smi -L``; ``none`` turns leasing off.
- ``MAMMOFLOW_GPU_LOCKS``: the lock folder (default ``$TMPDIR/mammoflow-gpu-locks-<uid>``), shared by every
  run on the machine, so two workflows started side by side do not collide either.
- ``MAMMOFLOW_GPU_WAIT``: seconds to wait for a free device before failing (default 86400). With
  ``--resources gpu=N`` and N at most the number of devices a job never waits.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mammoflow.commands import GPU_COMMANDS


@dataclass
class Lease:
    device: str  # the physical device id, as nvidia-smi and CUDA_VISIBLE_DEVICES name it
    lock_path: Path
    handle: IO  # kept open: closing it (or the process ending) releases the device


_held: Lease | None = None


def lock_folder() -> Path:
    configured = os.environ.get("MAMMOFLOW_GPU_LOCKS")
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"mammoflow-gpu-locks-{os.getuid()}"


def count_gpus() -> int:
    """GPUs on this machine, without initialising CUDA (nvidia-smi -L lists one line per device)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in listed.stdout.splitlines() if line.startswith("GPU "))


def shared_devices() -> list[str]:
    """The devices jobs lease from: MAMMOFLOW_GPUS, or every GPU nvidia-smi lists (auto)."""
    setting = os.environ.get("MAMMOFLOW_GPUS", "auto").strip()
    if setting.lower() == "none":
        return []
    if setting.lower() == "auto":
        return [str(i) for i in range(count_gpus())]
    devices = [d.strip() for d in setting.split(",") if d.strip()]
    if len(set(devices)) != len(devices):
        raise ValueError(f"MAMMOFLOW_GPUS={setting!r} names a device twice")
    return devices


def leasing_wanted(devices: list[str]) -> bool:
    """Lease only when several devices are shared and no scheduler has already assigned one."""
    if "MAMMOFLOW_GPUS" not in os.environ and (
        "CUDA_VISIBLE_DEVICES" in os.environ or "SLURM_JOB_ID" in os.environ
    ):
        return False
    return len(devices) > 1


def _try_lock(path: Path) -> IO | None:
    handle = open(path, "a+")  # noqa: SIM115 -- held open for the life of the lease
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def lease(devices: list[str], folder: Path | None = None, wait_s: float | None = None, poll_s: float = 0.5):
    """Hold the first free device of ``devices`` (waiting for one) and make it the only visible one."""
    global _held
    if _held is not None:
        return _held
    folder = folder or lock_folder()
    folder.mkdir(parents=True, exist_ok=True)
    wait_s = float(os.environ.get("MAMMOFLOW_GPU_WAIT", 86400)) if wait_s is None else wait_s
    # Start the scan at a different device per process, so that jobs starting together spread out at once.
    start = os.getpid() % len(devices)
    order = devices[start:] + devices[:start]
    deadline = time.monotonic() + wait_s
    announced = False
    while True:
        for device in order:
            path = folder / f"gpu{device}.lock"
            handle = _try_lock(path)
            if handle is not None:
                handle.seek(0)
                handle.truncate()
                handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
                handle.flush()
                os.environ["CUDA_VISIBLE_DEVICES"] = device
                _held = Lease(device, path, handle)
                print(f"mammoflow: leased GPU {device} (lock {path})", file=sys.stderr, flush=True)
                return _held
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"no free GPU among {devices} after {wait_s:.0f} s (locks in {folder}); run with "
                f"--resources gpu=N, N at most {len(devices)}"
            )
        if not announced:
            print(f"mammoflow: all GPUs {devices} busy, waiting (locks in {folder})", file=sys.stderr)
            announced = True
        time.sleep(poll_s)


def release() -> None:
    global _held
    if _held is not None:
        _held.handle.close()
        _held = None


def lease_for_command(command: str, device: str | None) -> Lease | None:
    """Called by `mammoflow <command>` before anything imports torch: lease a GPU where one is needed."""
    # An explicit device (cpu, cuda:2) is the user's choice: leasing would hide the device they named.
    if command not in GPU_COMMANDS or (device or "auto") not in ("auto", "cuda"):
        return None
    devices = shared_devices()
    if not leasing_wanted(devices):
        return None
    if "torch" in sys.modules and _cuda_initialised():
        raise RuntimeError("a GPU must be leased before torch initialises CUDA")
    return lease(devices)


def _cuda_initialised() -> bool:
    torch = sys.modules["torch"]
    return bool(getattr(torch.cuda, "is_initialized", lambda: False)())


def pick_device(name: str | None = "auto"):
    """The torch device a job runs on: ``auto`` (or empty) is CUDA when present, else the CPU. Under a
    lease (above) CUDA is the leased GPU, the only one the process sees."""
    import torch

    if not name or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
