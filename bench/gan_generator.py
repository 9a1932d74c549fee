"""StyleGAN-XL generator (src/mammoflow/gan/stylegan_xl/) speed: a forward pass, and the generator's part
of a training step, at the paper's and at the small configs' sizes.

A StyleGAN-XL training step runs the generator three times: forward and backward for the generator's loss,
and a forward without gradients for the discriminator's fakes. "G per step" adds those up (forward+backward
at the stage's batch, plus one more forward), so it is the generator's own cost of a step (the
discriminator and augmentation come on top; bench/gan.py measures whole steps).

    python bench/gan_generator.py                             # every config below, CPU threads = cores
    python bench/gan_generator.py --configs paper256 --batch 1 --repeats 2
    python bench/gan_generator.py --reference /path/to/stylegan-xl   # also StyleGAN-XL's own code (CPU:
        # its reference ops), same layer tables and batch, for comparison; its imports must be importable
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

from mammoflow.devices import pick_device
from mammoflow.gan.stylegan_xl import StemConfig, arch_for_stages, build_generator, set_train_head_only

# name: (stem config, stages, head layers, batch of a training step)
CONFIGS = {
    "paper256": (StemConfig.configured(), [16, 32, 256], 4, 1),
    "paper32": (StemConfig.configured(), [16, 32], 4, 4),
    "paper16": (StemConfig.configured(), [16], 4, 4),
    # presets/demo.yaml's widths (cbase 512, cmax 32, 4 stem layers, z 32, w 64, batch 16); its 2-layer
    # heads are below StyleGAN-XL's minimum of 3, so 3 here
    "demo32": (StemConfig.configured(cbase=512, cmax=32, syn_layers=4, z_dim=32, w_dim=64), [16, 32], 3, 16),
    "demo16": (StemConfig.configured(cbase=512, cmax=32, syn_layers=4, z_dim=32, w_dim=64), [16], 3, 16),
    # tests/config/tiny.yaml's (cbase 256, cmax 32, 3 stem layers, z 32, w 64, batch 8), 3-layer heads
    "tiny64": (
        StemConfig.configured(cbase=256, cmax=32, syn_layers=3, z_dim=32, w_dim=64),
        [16, 32, 64],
        3,
        8,
    ),
}


def timed(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, batch: int | None, repeats: int, device: torch.device) -> dict:
    config, stages, head_layers, step_batch = CONFIGS[name]
    batch = batch or step_batch
    torch.manual_seed(0)
    generator = build_generator(arch_for_stages(config, stages, head_layers)).to(device)
    z = torch.randn(batch, generator.z_dim, device=device)

    def forward():
        with torch.no_grad():
            generator(z, None)

    def forward_backward():
        generator(z, None).square().mean().backward()

    if len(stages) > 1:
        set_train_head_only(generator)  # a grown stage trains its head only, as StyleGAN-XL
    fwd = timed(forward, repeats, device)
    fwd_bwd = timed(forward_backward, repeats, device)
    return {
        "config": name,
        "stages": stages,
        "batch": batch,
        "parameters": sum(p.numel() for p in generator.parameters()),
        "forward_s": round(fwd, 4),
        "forward_per_image_s": round(fwd / batch, 4),
        "forward_backward_s": round(fwd_bwd, 4),
        "g_per_step_s": round(fwd_bwd + fwd, 4),
    }


def reference_forward(checkout: str, name: str, batch: int | None, repeats: int) -> float:
    """StyleGAN-XL's own generator at the same config (CPU reference ops), forward seconds."""
    sys.path.insert(0, checkout)
    os.chdir(checkout)  # its mapping network reads in_embeddings/ relative to the working directory
    import dnnlib

    config, stages, _, step_batch = CONFIGS[name]
    torch.manual_seed(0)
    kwargs = dict(c_dim=0, img_channels=config.img_channels)
    G = dnnlib.util.construct_class_by_name(
        class_name="training.networks_stylegan3_resetting.Generator", z_dim=config.z_dim, w_dim=config.w_dim,
        mapping_kwargs=dnnlib.EasyDict(rand_embedding=False, num_layers=config.map_layers),
        channel_base=config.cbase * 2, channel_max=config.cmax * 2, conv_kernel=3, use_radial_filters=False,
        num_layers=config.syn_layers, img_resolution=stages[0], **kwargs,
    )  # fmt: skip
    if len(stages) > 1:
        raise SystemExit("--reference times stems only (its heads load their stem from a pickle file)")
    z = torch.randn(batch or step_batch, config.z_dim)
    G.eval()
    return timed(lambda: G(z, torch.zeros(len(z), 0)), repeats, torch.device("cpu"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--batch", type=int, default=None, help="default: each config's training batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--device", default=None)
    parser.add_argument("--reference", default=None, help="a StyleGAN-XL checkout: time its stems too")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"# {name}, {args.threads} threads, torch {torch.__version__}, load {os.getloadavg()[0]:.1f}")
    rows = []
    for config in args.configs:
        row = measure(config, args.batch, args.repeats, device)
        if args.reference and device.type == "cpu" and len(row["stages"]) == 1:
            row["stylegan_xl_forward_s"] = round(
                reference_forward(args.reference, config, args.batch, args.repeats), 4
            )
        rows.append(row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
