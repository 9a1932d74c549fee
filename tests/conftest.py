import os
import sys
from pathlib import Path

import pytest

# No model hub can be reached in tests: fail fast instead of retrying for ~46 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# pytest-xdist runs one worker per core: a worker's torch gets that core's share of threads, however many a
# test asks for, and OpenMP threads wait passively. Two workers asking for two spinning threads each on two
# cores (or beside a Snakemake run's jobs) made a 20-second training test take 200 s.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, (os.cpu_count() or 1) // _WORKERS)
sys.path.insert(0, str(Path(__file__).parent))  # the tests' own helper modules (dicom_factory)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"

# Environment for Snakemake runs that do not use SLURM: the plugin's start-up `scontrol` probe answers at
# once (tests/shims/scontrol) instead of waiting ~9 s for a controller that is not running.
SNAKEMAKE_ENV = {**os.environ, "PATH": f"{Path(__file__).parent / 'shims'}{os.pathsep}{os.environ['PATH']}"}


def pytest_configure(config):
    """Cap torch's threads at the worker's share (see THREADS): a test's threads=2 runs on one core when two
    workers share two cores."""
    import torch

    set_threads = torch.set_num_threads
    torch.set_num_threads = lambda n: set_threads(max(1, min(int(n), THREADS)))
    torch.set_num_threads(THREADS)


# pytest-xdist (--dist loadfile) hands out files in collection order. The files that run Snakemake take
# minutes each: started last, one of them would set the suite's end while the other worker sits idle.
LONGEST_FIRST = ("test_workflow.py", "test_slurm.py", "test_resume.py", "test_documented_commands.py")


def pytest_collection_modifyitems(config, items):
    """The longest files first, then the files with any Snakemake run (slow), then the rest; each in its
    own order."""

    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    def rank(item) -> tuple[int, int]:
        name = item.path.name
        if name in LONGEST_FIRST:
            return 0, LONGEST_FIRST.index(name)
        return (1, 0) if item.path in slow_files else (2, 0)

    items.sort(key=rank)  # stable: a file's tests keep their order


@pytest.fixture
def one_thread():
    """One torch thread for the test: CPU results are bit-identical only for the same thread count (the GAN
    tests compare runs with CLI subprocesses given --threads 1)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
