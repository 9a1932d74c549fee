"""Disk of a cell's model: the fp32 state dict (what model.pt held) against the fp16 safetensors artifact.

python bench/artifact_sizes.py --resolutions 256 512
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from mammoflow.classify.artifact import WEIGHTS_NAME, save_artifact
from mammoflow.classify.models import PAPER_MODELS, build_model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--models", nargs="+", default=list(PAPER_MODELS))
    args = parser.parse_args()
    print("resolution  model                 fp32 MB  artifact MB")
    for res in args.resolutions:
        for name in args.models:
            model, _ = build_model(name, res)
            fp32 = sum(t.numel() * t.element_size() for t in model.state_dict().values())
            with tempfile.TemporaryDirectory() as folder:
                save_artifact(folder, model, {"architecture": name, "resolution": res})
                artifact = (Path(folder) / WEIGHTS_NAME).stat().st_size
            print(f"{res:>10}  {name:<20} {fp32 / 1e6:8.1f}  {artifact / 1e6:11.1f}")


if __name__ == "__main__":
    main()
