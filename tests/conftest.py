import os
import sys
from pathlib import Path

# No model hub can be reached in tests: fail fast instead of retrying for ~46 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))  # the tests' own helper modules (dicom_factory)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"

# Environment for Snakemake runs that do not use SLURM: the plugin's start-up `scontrol` probe answers at
# once (tests/shims/scontrol) instead of waiting ~9 s for a controller that is not running.
SNAKEMAKE_ENV = {**os.environ, "PATH": f"{Path(__file__).parent / 'shims'}{os.pathsep}{os.environ['PATH']}"}
