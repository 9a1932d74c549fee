"""GAN stage throughput per discriminator, with the same generator: seconds per step, kimg per hour, and where
the step goes.

For each resolution and each discriminator (``projected``: StyleGAN-XL's, on config.yaml's feature networks
unless ``--feature-networks`` names others; ``residual``: StyleGAN2's) a stage is trained as the workflow
trains it (``train_stage``: the four phases, DiffAugment, EMA, bookkeeping), grown from a previous stage
like the paper's 16 -> 32 -> 256, on random stand-in positives; everything else comes from config.yaml's
``gan`` section. Throughput depends on neither the images nor the weights' values, so the feature networks
are random unless ``--feature-weights NAME=PATH`` gives files. The step time is split by a timer that
synchronises the GPU at every boundary: the generator's phase (its loss through the discriminator, backward,
Adam), the discriminator's phase (generated and real images), the regularisers (path length every 4 steps
on a stem for projected, R1 every 16 for residual: amortised at their real rate, since a short run has
them at step 0 only), and the rest (batch gathering, EMA, logging).

    python bench/gan.py --res 16 --batch 8 --steps 3                     # paper widths, both, 16 px stem
    python bench/gan.py --res 32 --discriminator residual --cbase 512 --cmax 32 --syn-layers 4 --head-layers 2
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

from mammoflow.config import load_yaml
from mammoflow.devices import pick_device
from mammoflow.gan.cli import name_and_path, specs_from_settings
from mammoflow.gan.data import Positives
from mammoflow.gan.losses import PL_INTERVAL
from mammoflow.gan.network_io import generator_payload
from mammoflow.gan.settings import stage_settings
from mammoflow.gan.stage_runtime import RunOptions
from mammoflow.gan.stylegan_xl import build_generator
from mammoflow.gan.train import train_stage

CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"
PHASES = ("generator", "discriminator", "regularisers")


def stages_for(res: int) -> list[int]:
    """The paper's growth path up to ``res``: 16, 32, then straight to the target."""
    return [*[s for s in (16, 32) if s < res], res]


def gan_config(res: int, discriminator: str, steps: int, args: argparse.Namespace) -> dict:
    stages = stages_for(res)
    gan = load_yaml(CONFIG)["gan"] | {"stages": stages, "kimg": [steps * args.batch / 1000] * len(stages)}
    gan |= {k: getattr(args, k) for k in ("cbase", "cmax", "syn_layers", "head_layers") if getattr(args, k)}
    gan |= dict(discriminator=discriminator, batch=args.batch, snapshots=2, grid=2, checkpoint_kimg=1e9)
    gan |= dict(pl_start_kimg=0, mixed_precision=not args.fp32)  # path lengths from step 0: their cost shows
    if args.feature_networks:
        gan["feature_networks"] = args.feature_networks
    gan["feature_weights"] = "pretrained" if args.feature_weights else "random"
    return gan


def previous_network(gan: dict, res: int, folder: Path) -> Path | None:
    """An untrained previous stage (a grown stage's speed does not depend on what the stem learned)."""
    if len(gan["stages"]) == 1:
        return None
    spec, _ = specs_from_settings(stage_settings(gan, gan["stages"][-2]))
    path = folder / "previous.pt"
    torch.save(generator_payload(build_generator(spec)), path)
    return path


def measure(res: int, discriminator: str, args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (max(64, args.batch * 2), res, res), dtype=np.uint8)
    positives = Positives(images, np.arange(len(images), dtype=np.int64), res, "random stand-ins")
    weights = dict(args.feature_weights) if discriminator == "projected" else {}
    options = RunOptions(device=args.device, profile=True, show_progress=False, log=lambda _: None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        warm = gan_config(res, discriminator, args.warmup, args)
        previous = previous_network(warm, res, folder)
        spec, settings = specs_from_settings(stage_settings(warm, res))
        train_stage(positives, spec, settings, folder / "warmup", previous, weights, options)  # allocators
        spec, settings = specs_from_settings(
            stage_settings(gan_config(res, discriminator, args.steps, args), res)
        )
        started = time.perf_counter()
        result = train_stage(positives, spec, settings, folder / "measured", previous, weights, options)
        wall = time.perf_counter() - started
    parts = dict(result.timings)
    if discriminator == "projected":
        interval = PL_INTERVAL if len(spec.stages) == 1 else 0  # path lengths: the stem only
    else:
        interval = settings.r1_interval
    calls = -(-result.steps // interval) if interval else 0
    spent = parts.pop("regularisers", 0.0)  # a grown projected stage's Greg phase has nothing to do
    regularisers = spent / calls / interval if calls else spent / result.steps
    step = sum(parts.values()) / result.steps + regularisers
    phases = sum(parts.get(k, 0.0) for k in PHASES) / result.steps + regularisers
    return {
        "resolution": res,
        "discriminator": discriminator,
        "feature_networks": list(settings.feature_networks) if discriminator == "projected" else [],
        "stages": [s.resolution for s in spec.stages],
        "device": str(pick_device(args.device)),
        "batch": args.batch,
        "steps": result.steps,
        "seconds_per_step": round(step, 4),
        "kimg_per_hour": round(3600 * args.batch / 1000 / step, 3),
        "outside_phases_share": round(1 - phases / step, 4),
        "parts_seconds_per_step": {k: round(v / result.steps, 4) for k, v in sorted(parts.items())}
        | {"regularisers_amortised": round(regularisers, 4)},
        "stage_wall_seconds": round(wall, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--res", type=int, nargs="+", default=[16])
    parser.add_argument("--discriminator", nargs="+", default=["projected", "residual"])
    parser.add_argument(
        "--feature-networks", nargs="+", help="projected: timm names (default: config.yaml's)"
    )
    parser.add_argument(
        "--feature-weights", type=name_and_path, action="append", default=[], metavar="NAME=PATH"
    )
    parser.add_argument("--cbase", type=int, help="generator widths etc. (default: config.yaml's, Table 1)")
    parser.add_argument("--cmax", type=int)
    parser.add_argument("--syn-layers", type=int)
    parser.add_argument("--head-layers", type=int)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per resolution and discriminator")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default=None)
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast on CUDA")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [measure(res, d, args) for res in args.res for d in args.discriminator]
    where = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else (
        f"CPU ({platform.processor() or platform.machine()}, {args.threads} threads)"
    )  # fmt: skip
    gan = load_yaml(CONFIG)["gan"]
    widths = {k: getattr(args, k) or gan[k] for k in ("cbase", "cmax", "syn_layers", "head_layers")}
    print(f"# GAN stage throughput on {where}; generator {widths}, batch {args.batch}")
    print("| resolution | discriminator | stages | s/step | kimg/h | outside the phases | parts (s/step) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        parts = ", ".join(f"{k} {v}" for k, v in r["parts_seconds_per_step"].items())
        name = r["discriminator"] + (
            f" ({', '.join(r['feature_networks'])})" if r["feature_networks"] else ""
        )
        print(f"| {r['resolution']} | {name} | {r['stages']} | {r['seconds_per_step']} "
              f"| {r['kimg_per_hour']} | {100 * r['outside_phases_share']:.1f} % | {parts} |")  # fmt: skip
    if args.json:
        report = {"where": where, "args": vars(args), "rows": rows}
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
