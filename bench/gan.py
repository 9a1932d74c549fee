"""GAN stage throughput: kimg per hour, and the share of the step spent outside the networks.

For each resolution a stage is trained as the workflow trains it (``train_stage``: DiffAugment, lazy R1,
EMA, bookkeeping), grown from a previous stage like the paper's 16 -> 32 -> 256, on random stand-in
positives (throughput does not depend on what the images show). The step time is split by a timer that
synchronises the GPU at every boundary: "networks" is the generator's and discriminator's own forward and
backward passes (R1's double backward included); everything else (batch gathering, augmentation forward,
optimiser steps, EMA, logging) is "outside".

    python bench/gan.py                         # 64 and 256 px, paper widths (Table 1), CPU or GPU
    python bench/gan.py --res 64 128 --cbase 1024 --cmax 64 --batch 16 --steps 20   # the demo's widths
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mammoflow.devices import pick_device
from mammoflow.gan.data import Positives
from mammoflow.gan.network_io import FORMAT
from mammoflow.gan.networks import GeneratorSpec, build_generator
from mammoflow.gan.train import TrainSettings, train_stage


def stages_for(res: int) -> tuple[int, ...]:
    """The paper's growth path up to ``res``: 16, 32, then straight to the target."""
    return (*[s for s in (16, 32) if s < res], res)


def previous_network(spec: GeneratorSpec, folder: Path) -> Path | None:
    if len(spec.stages) == 1:
        return None
    previous = GeneratorSpec(**{**spec.to_dict(), "stages": spec.stages[:-1]})
    path = folder / "previous.pt"
    state = build_generator(previous).state_dict()
    torch.save(
        {"format": FORMAT, "spec": previous.to_dict(), "state": state, "stage": previous.resolution}, path
    )
    return path


settings_interval = TrainSettings(kimg=1).r1_interval


def measure(res: int, args: argparse.Namespace) -> dict:
    spec = GeneratorSpec(
        stages=stages_for(res),
        cbase=args.cbase,
        cmax=args.cmax,
        syn_layers=args.syn_layers,
        head_layers=args.head_layers,
    )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (max(64, args.batch * 2), res, res), dtype=np.uint8)
    positives = Positives(images, np.arange(len(images), dtype=np.int64), res, "random stand-ins")
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        previous = previous_network(spec, folder)

        def run(steps: int, out: str):
            settings = TrainSettings(
                kimg=steps * args.batch / 1000,
                batch=args.batch,
                snapshots=2,
                grid=2,
                checkpoint_kimg=1e9,
                mixed_precision=not args.fp32,
            )
            return train_stage(positives, spec, settings, folder / out, previous, device=args.device,
                               profile=True, show_progress=False, log=lambda _: None)  # fmt: skip

        run(args.warmup, "warmup")  # first calls: allocator, cuDNN autotuning, thread pools
        started = time.perf_counter()
        result = run(args.steps, "measured")
        wall = time.perf_counter() - started
    # The stage's wall time also covers set-up and the output files; the step time is the timed parts.
    # R1 runs every r1_interval steps; a short run has it at step 0, so amortise it at its real rate.
    parts = dict(result.timings)
    r1_calls = -(-result.steps // settings_interval)
    r1_per_step = parts.pop("r1", 0.0) / r1_calls / settings_interval
    step_time = sum(parts.values()) / result.steps + r1_per_step
    networks = parts.get("networks", 0.0) / result.steps + r1_per_step
    return {
        "resolution": res,
        "stages": list(spec.stages),
        "device": str(device),
        "batch": args.batch,
        "steps": result.steps,
        "seconds_per_step": round(step_time, 4),
        "kimg_per_hour": round(3600 * args.batch / 1000 / step_time, 2),
        "outside_networks_share": round(1 - networks / step_time, 4),
        "parts_seconds_per_step": {k: round(v / result.steps, 4) for k, v in sorted(parts.items())}
        | {"r1_amortised": round(r1_per_step, 4)},
        "stage_wall_seconds": round(wall, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--res", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--cbase", type=int, default=16384)
    parser.add_argument("--cmax", type=int, default=256)
    parser.add_argument("--syn-layers", type=int, default=7)
    parser.add_argument("--head-layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per resolution")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default=None)
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast on CUDA")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [measure(res, args) for res in args.res]
    where = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else (
        f"CPU ({platform.processor() or platform.machine()}, {args.threads} threads)"
    )  # fmt: skip
    print(f"# GAN stage throughput on {where}; cbase {args.cbase}, cmax {args.cmax}, "
          f"syn_layers {args.syn_layers}, head_layers {args.head_layers}, batch {args.batch}")  # fmt: skip
    print("| resolution | stages | s/step | kimg/h | outside networks | parts (s/step) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        parts = ", ".join(f"{k} {v}" for k, v in r["parts_seconds_per_step"].items())
        print(f"| {r['resolution']} | {r['stages']} | {r['seconds_per_step']} | {r['kimg_per_hour']} "
              f"| {100 * r['outside_networks_share']:.1f} % | {parts} |")  # fmt: skip
    if args.json:
        report = {"where": where, "args": vars(args), "rows": rows}
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
