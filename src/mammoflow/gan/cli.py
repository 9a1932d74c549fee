"""`mammoflow gan-stage`, `gan-fid` and `synthesize` (the subcommands workflow/rules/gan.smk calls), and
`mammoflow gan generate` (images from a published StyleGAN-XL pickle or a stage's network.pt)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mammoflow.arguments import COUNT, NON_NEGATIVE, finite_number, json_object, whole_number


def _torch_setup(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def specs_from_settings(settings: dict):
    """(the generator's layer table, StageSettings) from a stage's settings (see settings.stage_settings):
    StyleGAN-XL's stem from Table 1's values, one head per later stage."""
    from mammoflow.gan.settings import StageSettings
    from mammoflow.gan.stylegan_xl import StemConfig, arch_for_stages
    from mammoflow.gan.stylegan_xl.arch import stem_magnitude_ema_beta

    stage = StageSettings.from_stage(settings)
    stem = StemConfig(
        resolution=settings["stages"][0],
        cbase=settings["cbase"],
        cmax=settings["cmax"],
        syn_layers=settings["syn_layers"],
        z_dim=settings["z_dim"],
        w_dim=settings["w_dim"],
        map_layers=settings["map_layers"],
        img_channels=1,  # the stores are grey
        magnitude_ema_beta=stem_magnitude_ema_beta(stage.batch),  # StyleGAN-XL's train.py, per batch
    )
    return arch_for_stages(stem, list(settings["stages"]), settings["head_layers"]), stage


def name_and_path(text: str) -> tuple[str, Path]:
    """argparse type: NAME=PATH (a feature network and its weights file)."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME=PATH, e.g. tf_efficientnet_lite0=weights.safetensors"
        )
    return name, Path(path)


def cmd_gan_stage(args: argparse.Namespace) -> None:
    from mammoflow.gan.data import load_positives
    from mammoflow.gan.stage_runtime import RunOptions
    from mammoflow.gan.train import Interrupted, train_stage

    _torch_setup(args.threads)
    spec, settings = specs_from_settings(args.settings)
    weights = dict(args.feature_weights)
    if len(weights) != len(args.feature_weights):
        raise ValueError(f"--feature-weights names a network twice: {[n for n, _ in args.feature_weights]}")
    if spec.img_resolution != args.stage:
        raise ValueError(f"--stage {args.stage} but the settings' stages end at {spec.img_resolution}")
    positives = load_positives(args.store, args.folds, args.protocol, args.part, args.stage)
    print(f"gan-stage {args.protocol} {args.part} {args.stage}px: {positives.note}", file=sys.stderr)
    meta = {
        "protocol": args.protocol,
        "part": args.part,
        "store": str(args.store),
        "data": positives.note,
        "label": f"{args.protocol} {args.part}",
    }
    options = RunOptions(device=args.device, meta=meta)
    try:
        train_stage(positives, spec, settings, args.out, args.previous or None, weights, options)
    except Interrupted as exc:
        raise SystemExit(f"mammoflow gan-stage: {exc}; run it again to resume") from exc


def cmd_gan_fid(args: argparse.Namespace) -> None:
    """fid.json beside each network.pt: FID (or the labelled substitute) against the positives it saw."""
    from mammoflow.atomic import write_text
    from mammoflow.devices import pick_device
    from mammoflow.gan.data import load_positives
    from mammoflow.gan.fid import FeatureExtractor, generated_batches
    from mammoflow.gan.network_io import load_network

    if len(args.networks) != len(args.stores) or (args.out and len(args.out) != len(args.networks)):
        raise ValueError(
            f"{len(args.networks)} networks, {len(args.stores)} stores, {len(args.out or [])} --out"
        )
    _torch_setup(args.threads)
    device = pick_device(args.device)
    features = FeatureExtractor(args.inception, device)
    for i, (network, store) in enumerate(zip(args.networks, args.stores, strict=True)):
        generator, payload = load_network(network, device)
        res = args.resolution or generator.resolution
        positives = load_positives(store, args.folds, args.protocol, args.part, res)
        # Generated in the training orientation (chest wall left), like the real images compared with;
        # streamed batch by batch (features only are kept), so 50,000 images at 512 px fit any job.
        generated = generated_batches(generator, args.images, args.seed + 1, args.batch, device)
        generated = _as_compared(generated, generator.resolution, res, payload["source"]["kind"])
        report = {
            "protocol": args.protocol,
            "part": args.part,
            "stage": generator.resolution,
            "resolution": res,
            "kimg": payload.get("kimg"),
            "network": payload["source"],
            "real": positives.note,
            **features.stream_report(generated, positives.images, seed=args.seed),
        }
        out = Path(args.out[i]) if args.out else Path(network).parent / "fid.json"
        write_text(json.dumps(report, indent=2) + "\n", out)
        print(f"gan-fid {args.protocol} {args.part} {generator.resolution}px: {report['metric']} = "
              f"{report['value']} -> {out}", file=sys.stderr)  # fmt: skip


def _as_compared(batches, drawn: int, res: int, kind: str):
    """Generated batches as the real images are compared: at ``res`` px (area-downsampled; a network
    smaller than that is refused), and, for a published network (trained on both orientations), each image
    turned chest wall left by its brighter edge, as the real positives are."""
    from mammoflow.gan.data import resize
    from mammoflow.gan.network_io import PICKLE_KIND
    from mammoflow.gan.sample import chest_wall_left

    if drawn < res:
        raise ValueError(f"a {drawn} px network cannot be compared at {res} px (it would need upsampling)")
    for batch in batches:
        if kind == PICKLE_KIND:
            right = ~chest_wall_left(batch)
            batch[right] = batch[right][:, :, ::-1]
        yield resize(batch, res)


def cmd_synthesize(args: argparse.Namespace) -> None:
    from mammoflow.gan.sample import SynthesisJob, synthesize

    _torch_setup(args.threads)
    job = SynthesisJob(
        args.network,
        args.res,
        args.count,
        args.out,
        args.protocol,
        args.part,
        args.folds,
        args.seed,
        args.truncation,
    )
    synthesize(job, device=args.device)


def cmd_gan_generate(args: argparse.Namespace) -> None:
    from mammoflow.gan.sample import generate_raw

    _torch_setup(args.threads)
    generate_raw(args.network, args.latents, args.out, args.truncation, args.batch, args.device)


def register_generate(sub) -> None:
    """``mammoflow gan generate``: images from any generator mammoflow reads (StyleGAN-XL pickle or
    network.pt)."""
    gan = sub.add_parser("gan", help="use a GAN network outside the workflow (mammoflow gan generate ...)")
    gan.set_defaults(func=cmd_gan_generate)  # its one subcommand (mammoflow.commands names the handler)
    commands = gan.add_subparsers(dest="gan_command", required=True)
    p = commands.add_parser(
        "generate",
        help="a generator's raw images (N, C, H, W) float32 in [-1, 1] for given latents",
        description="Reads a StyleGAN-XL network-snapshot-*.pkl without running code from it (or a "
        "mammoflow network.pt) and writes its G_ema's output for the latents: unconditional, no noise.",
    )
    p.add_argument("--network", type=Path, required=True, help="network-snapshot-*.pkl or network.pt")
    p.add_argument(
        "--latents", type=Path, required=True, help=".npy of z, shape (N, z_dim); z_dim is 64 here"
    )
    p.add_argument("--out", type=Path, required=True, help=".npy to write (N, C, H, W) float32")
    p.add_argument(
        "--truncation", type=finite_number(0.0, low_open=True), default=1.0, help="truncation psi (1: none)"
    )
    p.add_argument("--batch", type=COUNT, default=8, help="latents drawn at once")
    p.add_argument("--threads", type=COUNT, default=4, help="CPU threads for torch")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    p.set_defaults(func=cmd_gan_generate)


def register(sub) -> None:
    from mammoflow.sections import defaults

    gan = defaults("gan")  # config.yaml's values are the commands' defaults too
    p = sub.add_parser("gan-stage", help="train one progressive GAN stage on real positives (resumable)")
    p.add_argument("--store", type=Path, required=True, help="processed store the positives come from")
    p.add_argument("--folds", type=Path, required=True, help="folds.parquet")
    p.add_argument("--protocol", required=True, choices=["clean", "paper"])
    p.add_argument("--part", required=True, help="fold<k> (clean: trained without fold k) or all (paper)")
    p.add_argument("--stage", type=COUNT, required=True, help="this stage's resolution")
    p.add_argument("--previous", default="", help="the previous stage's network.pt (none for the first)")
    p.add_argument("--out", type=Path, required=True, help="stage folder")
    p.add_argument(
        "--settings", type=json_object, required=True, help="the stage's settings as a JSON object"
    )
    p.add_argument(
        "--feature-weights", type=name_and_path, action="append", default=[], metavar="NAME=PATH",
        help="projected discriminator: feature network NAME's weights file (timm's format), one per network",
    )  # fmt: skip
    p.add_argument("--threads", type=COUNT, default=1, help="CPU threads for torch")
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
    p.add_argument("--images", type=whole_number(2), default=gan["fid_images"], help="generated images")
    p.add_argument(
        "--batch", type=COUNT, default=gan["fid_batch"], help="images generated and featurised at once"
    )
    p.add_argument("--inception", default="none", help="Inception-v3 weights file, or none (the substitute)")
    p.add_argument("--seed", type=NON_NEGATIVE, default=gan["seed"])
    p.add_argument(
        "--resolution", type=COUNT, default=None, help="compare at this size (default: the network's)"
    )
    p.add_argument(
        "--out", type=Path, nargs="+", default=None, help="fid.json per network (default: beside it)"
    )
    p.add_argument("--threads", type=COUNT, default=1)
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_gan_fid)

    p = sub.add_parser("synthesize", help="write a store of synthetic positives from a trained stage")
    p.add_argument("--network", type=Path, required=True)
    p.add_argument("--res", type=COUNT, required=True)
    p.add_argument("--count", type=NON_NEGATIVE, required=True)
    p.add_argument("--out", type=Path, required=True, help="store folder")
    p.add_argument("--protocol", required=True, choices=["clean", "paper"])
    p.add_argument("--part", required=True)
    p.add_argument(
        "--folds", type=whole_number(2), required=True, help="number of folds (paper: the fold column)"
    )
    p.add_argument("--seed", type=NON_NEGATIVE, default=gan["seed"])
    p.add_argument("--truncation", type=finite_number(0.0, low_open=True), default=gan["truncation"])
    p.add_argument("--threads", type=COUNT, default=1)
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_synthesize)

    register_generate(sub)
