"""`mammoflow gan-stage`, `gan-fid` and `synthesize`: the subcommands workflow/rules/gan.smk calls."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mammoflow.arguments import json_object


def _torch_setup(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def specs_from_settings(settings: dict):
    """(GeneratorSpec, TrainSettings) from a stage's settings (see settings.stage_settings)."""
    from mammoflow.gan.networks import GeneratorSpec
    from mammoflow.gan.train import TrainSettings

    arch = {k: v for k, v in settings.items() if k in GeneratorSpec.__dataclass_fields__ and k != "stages"}
    train = {k: v for k, v in settings.items() if k in TrainSettings.__dataclass_fields__}
    return GeneratorSpec(stages=tuple(settings["stages"]), **arch), TrainSettings(**train)


def cmd_gan_stage(args: argparse.Namespace) -> None:
    from mammoflow.gan.data import load_positives
    from mammoflow.gan.train import Interrupted, train_stage

    _torch_setup(args.threads)
    spec, settings = specs_from_settings(args.settings)
    if spec.resolution != args.stage:
        raise ValueError(f"--stage {args.stage} but the settings' stages end at {spec.resolution}")
    positives = load_positives(args.store, args.folds, args.protocol, args.part, args.stage)
    print(f"gan-stage {args.protocol} {args.part} {args.stage}px: {positives.note}", file=sys.stderr)
    meta = {
        "protocol": args.protocol,
        "part": args.part,
        "store": str(args.store),
        "data": positives.note,
        "label": f"{args.protocol} {args.part}",
    }
    try:
        train_stage(positives, spec, settings, args.out, args.previous or None, device=args.device, meta=meta)
    except Interrupted as exc:
        raise SystemExit(f"mammoflow gan-stage: {exc}; run it again to resume") from exc


def cmd_gan_fid(args: argparse.Namespace) -> None:
    """fid.json beside each network.pt: FID (or the labelled substitute) against the positives it saw."""
    from mammoflow.atomic import write_text
    from mammoflow.devices import pick_device
    from mammoflow.gan.data import load_positives
    from mammoflow.gan.fid import FeatureExtractor, generated_batches
    from mammoflow.gan.network_io import load_network

    if len(args.networks) != len(args.stores):
        raise ValueError(f"{len(args.networks)} networks but {len(args.stores)} stores")
    _torch_setup(args.threads)
    device = pick_device(args.device)
    features = FeatureExtractor(args.inception, device)
    for network, store in zip(args.networks, args.stores, strict=True):
        generator, payload = load_network(network, device)
        positives = load_positives(store, args.folds, args.protocol, args.part, generator.resolution)
        # Generated in the training orientation (chest wall left), like the real images compared with;
        # streamed batch by batch (features only are kept), so 50,000 images at 512 px fit any job.
        generated = generated_batches(generator, args.images, args.seed + 1, args.batch, device)
        report = {
            "protocol": args.protocol,
            "part": args.part,
            "stage": generator.resolution,
            "kimg": payload.get("kimg"),
            "real": positives.note,
            **features.stream_report(generated, positives.images, seed=args.seed),
        }
        out = Path(network).parent / "fid.json"
        write_text(json.dumps(report, indent=2) + "\n", out)
        print(f"gan-fid {args.protocol} {args.part} {generator.resolution}px: {report['metric']} = "
              f"{report['value']} -> {out}", file=sys.stderr)  # fmt: skip


def cmd_synthesize(args: argparse.Namespace) -> None:
    from mammoflow.gan.sample import synthesize

    _torch_setup(args.threads)
    synthesize(
        args.network,
        args.res,
        args.count,
        args.out,
        args.protocol,
        args.part,
        args.folds,
        seed=args.seed,
        truncation=args.truncation,
        device=args.device,
    )


def register(sub) -> None:
    p = sub.add_parser("gan-stage", help="train one progressive GAN stage on real positives (resumable)")
    p.add_argument("--store", type=Path, required=True, help="processed store the positives come from")
    p.add_argument("--folds", type=Path, required=True, help="folds.parquet")
    p.add_argument("--protocol", required=True, choices=["clean", "paper"])
    p.add_argument("--part", required=True, help="fold<k> (clean: trained without fold k) or all (paper)")
    p.add_argument("--stage", type=int, required=True, help="this stage's resolution")
    p.add_argument("--previous", default="", help="the previous stage's network.pt (none for the first)")
    p.add_argument("--out", type=Path, required=True, help="stage folder")
    p.add_argument(
        "--settings", type=json_object, required=True, help="the stage's settings as a JSON object"
    )
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    p.set_defaults(func=cmd_gan_stage)

    p = sub.add_parser(
        "gan-fid", help="FID (or its labelled substitute) of GAN stages against their positives"
    )
    p.add_argument("--networks", type=Path, nargs="+", required=True, help="network.pt of each stage")
    p.add_argument("--stores", type=Path, nargs="+", required=True, help="each stage's processed store")
    p.add_argument("--folds", type=Path, required=True)
    p.add_argument("--protocol", required=True, choices=["clean", "paper"])
    p.add_argument("--part", required=True)
    p.add_argument("--images", type=int, default=50_000, help="generated images (50000: FID50k)")
    p.add_argument("--batch", type=int, default=64, help="images generated and featurised at once")
    p.add_argument("--inception", default="none", help="Inception-v3 weights file, or none (the substitute)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_gan_fid)

    p = sub.add_parser("synthesize", help="write a store of synthetic positives from a trained stage")
    p.add_argument("--network", type=Path, required=True)
    p.add_argument("--res", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--out", type=Path, required=True, help="store folder")
    p.add_argument("--protocol", required=True, choices=["clean", "paper"])
    p.add_argument("--part", required=True)
    p.add_argument("--folds", type=int, required=True, help="number of folds (paper: the fold column)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truncation", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_synthesize)
