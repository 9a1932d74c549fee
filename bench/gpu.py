"""The GPU check: what the paper-scale run costs on this machine's accelerator, in one JSON.

- training, per model at 256 and 512 px, batch 64: the cell's loop (``Trainer.train_epoch``: memory-mapped
  store, pinned prefetch, flips, micro-batches) against a bare loop (``Trainer.train_step`` on tensors made
  up front), images/s, peak CUDA memory, the precision the cell chose, and the micro-batch that fitted
  (a batch that runs out of memory is retried in micro-batches of 16, then 8);
- GAN: kimg/s per progressive stage (16, 32, 256, 512 px) at Table 1's widths, batch 32, with config.yaml's
  discriminator (projected: its feature networks with random weights, which run as fast as the real ones);
- FID: images/s of generating at 512 px and streaming through Inception-v3 (torch-fidelity's module;
  random weights unless --inception names the reference file: the speed is the same);
- Grad-CAM: images/s per model at 256 and 512 px, batch 32.

Usage (bench/gpu.sh wraps it):
    python bench/gpu.py --out gpu.json                 # the paper's shapes (under 10 minutes on one H200)
    python bench/gpu.py --tiny --device cpu --out t.json   # the same code paths at toy sizes, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from mammoflow.classify.data import CellData, epoch_batches
from mammoflow.classify.models import PAPER_MODELS, build_model
from mammoflow.classify.train import Trainer, TrainSettings
from mammoflow.devices import pick_device

SHAPES = {  # what each part runs at: the paper's, and --tiny's
    "paper": dict(
        resolutions=[256, 512],
        batch=64,
        steps=6,
        gan_stages=[16, 32, 256, 512],
        gan_kimg=0.32,
        gan_batch=32,
        gan=dict(
            cbase=16384, cmax=256, syn_layers=7, head_layers=4, z_dim=64, w_dim=512, feature_weights="random"
        ),
        fid_images=1024,
        cam_batch=32,
        cam_images=64,
    ),
    "tiny": dict(
        resolutions=[32, 64],
        batch=8,
        steps=2,
        gan_stages=[16, 32],
        gan_kimg=0.008,
        gan_batch=4,
        gan=dict(
            cbase=256, cmax=16, syn_layers=3, head_layers=3, z_dim=8, w_dim=16, discriminator="residual"
        ),
        fid_images=8,
        cam_batch=4,
        cam_images=4,
    ),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _store(path: Path, n: int, res: int) -> CellData:
    np.save(path, np.random.default_rng(0).integers(0, 256, (n, res, res), dtype=np.uint8))
    table = pd.DataFrame({"cancer": (np.arange(n) % 5 == 0).astype(int), "fold": 1})
    return CellData(np.load(path, mmap_mode="r"), None, table, np.arange(n), np.empty(0, int))


def train_pair(name: str, res: int, batch: int, steps: int, micro: int, device, tmp: Path) -> dict:
    """Cell loop and bare loop of one model at one resolution; images/s and peak memory of each."""
    # fit_one_cycle from random initialisation: the whole network trains, as in fine_tune's unfrozen epochs
    settings = TrainSettings.configured(lr=1e-4, micro_batch=micro, recipe="fit_one_cycle", pretrained=False)
    out = {"model": name, "res": res, "batch": batch, "micro_batch": micro or batch}
    data = _store(tmp / f"{name}_{res}.npy", batch * (steps + 2), res)
    batches = epoch_batches(np.arange(batch * (steps + 2)), batch, seed=0)
    for loop in ("cell", "bare"):
        _reset_peak(device)
        model, _ = build_model(name, res)
        trainer = Trainer(model, settings, device, steps_per_epoch=10 * steps)
        out["precision"] = trainer.precision.name
        if loop == "cell":
            trainer.train_epoch(data, batches[:2], flip_seed=0)  # warm-up: allocator, cuDNN autotuning
            _sync(device)
            started = time.perf_counter()
            _, seen = trainer.train_epoch(data, batches[2:], flip_seed=1)
        else:
            model.train()
            x = trainer._inputs(np.asarray(data.gather(batches[0])))
            y = (torch.arange(batch, device=device) % 5 == 0).float()
            for _ in range(2):
                trainer.train_step(x, y)
            _sync(device)
            started = time.perf_counter()
            for _ in range(steps):
                trainer.train_step(x, y)
            seen = batch * steps
        _sync(device)
        out[f"{loop}_img_s"] = round(seen / (time.perf_counter() - started), 2)
        out[f"{loop}_peak_cuda_mib"] = _peak_mib(device)
        del model, trainer
    out["ratio"] = round(out["cell_img_s"] / out["bare_img_s"], 3)
    return out


def train_part(shape: dict, models: list[str], device, tmp: Path) -> list[dict]:
    rows = []
    for res in shape["resolutions"]:
        for name in models:
            for micro in (0, 16, 8):
                try:
                    rows.append(train_pair(name, res, shape["batch"], shape["steps"], micro, device, tmp))
                    break
                except torch.OutOfMemoryError:
                    print(
                        f"{name} {res}px: out of memory at micro-batch {micro or shape['batch']}", flush=True
                    )
                    torch.cuda.empty_cache()
            else:
                rows.append({"model": name, "res": res, "error": "out of memory even at micro-batch 8"})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def gan_part(shape: dict, device, tmp: Path) -> list[dict]:
    from mammoflow.config import load_yaml
    from mammoflow.gan.cli import specs_from_settings
    from mammoflow.gan.data import Positives
    from mammoflow.gan.settings import stage_settings
    from mammoflow.gan.stage_runtime import RunOptions
    from mammoflow.gan.train import train_stage

    rows, previous, stages = [], None, shape["gan_stages"]
    gan = load_yaml(Path(__file__).resolve().parents[1] / "config.yaml")["gan"] | shape["gan"]
    gan |= dict(stages=stages, kimg=[shape["gan_kimg"]] * len(stages), batch=shape["gan_batch"])
    gan |= dict(snapshots=2, grid=2, checkpoint_kimg=1e6)
    options = RunOptions(device=str(device), show_progress=False, log=lambda _: None)
    for i, res in enumerate(stages):
        images = np.random.default_rng(i).integers(0, 256, (64, res, res), dtype=np.uint8)
        positives = Positives(images, np.arange(64, dtype=np.int64), res, "random images (benchmark)")
        spec, settings = specs_from_settings(stage_settings(gan, res))
        _reset_peak(device)
        result = train_stage(positives, spec, settings, tmp / f"gan{res}", previous, options=options)
        previous = result.network
        phases = ("generator", "discriminator", "regularisers")
        networks = sum(v for k, v in result.timings.items() if k in phases)
        rows.append(
            {
                "stage": res,
                "kimg": result.kimg,
                "seconds": round(result.seconds, 2),
                "kimg_s": round(result.kimg / result.seconds, 4),
                "kimg_s_training_only": round(result.kimg / networks, 4) if networks else None,
                "peak_cuda_mib": _peak_mib(device),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _random_inception(path: Path) -> Path:
    """torch-fidelity's TF-Inception module with random weights, saved: the reference file's speed."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    load, url = fe.FeatureExtractorInceptionV3.load_state_dict, fe.load_state_dict_from_url
    fe.FeatureExtractorInceptionV3.load_state_dict = lambda self, state, *a, **k: None
    fe.load_state_dict_from_url = lambda *a, **k: None
    try:
        torch.save(nn.Module.state_dict(fe.FeatureExtractorInceptionV3("x", ["2048"])), path)
    finally:
        fe.FeatureExtractorInceptionV3.load_state_dict, fe.load_state_dict_from_url = load, url
    return path


def fid_part(shape: dict, inception: str, device, tmp: Path, network: Path | None) -> dict:
    from mammoflow.gan.fid import FeatureExtractor, generated_batches
    from mammoflow.gan.network_io import load_network

    weights = inception or str(_random_inception(tmp / "inception.pth"))
    extractor = FeatureExtractor(weights, device)
    generator, _ = load_network(network, device)
    real = np.random.default_rng(0).integers(
        0, 256, (64, generator.resolution, generator.resolution), np.uint8
    )
    _reset_peak(device)
    started = time.perf_counter()
    report = extractor.stream_report(
        generated_batches(generator, shape["fid_images"], 1, device=device), real
    )
    seconds = time.perf_counter() - started
    return {
        "res": generator.resolution,
        "generated": report["generated_images"],
        "images_s": round(report["generated_images"] / seconds, 2),
        "peak_cuda_mib": _peak_mib(device),
        "weights": "given" if inception else "random (timing only)",
        "metric": report["metric"],
    }


def cam_part(shape: dict, models: list[str], device) -> list[dict]:
    from mammoflow.explain.gradcam import grad_cam_maps, target_layer

    rows = []
    for res in shape["resolutions"]:
        images = np.random.default_rng(0).integers(0, 256, (shape["cam_images"], res, res), np.uint8)
        for name in models:
            model, _ = build_model(name, res)
            layer, _ = target_layer(model, name)
            grad_cam_maps(model, layer, images[:2], 2, device, show_progress=False)  # warm-up
            _reset_peak(device)
            _sync(device)
            started = time.perf_counter()
            grad_cam_maps(model, layer, images, shape["cam_batch"], device, show_progress=False)
            _sync(device)
            rows.append(
                {
                    "model": name,
                    "res": res,
                    "batch": shape["cam_batch"],
                    "images_s": round(len(images) / (time.perf_counter() - started), 2),
                    "peak_cuda_mib": _peak_mib(device),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tiny", action="store_true", help="toy sizes: the code paths in seconds (tests, CPU)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", nargs="+", default=list(PAPER_MODELS))
    parser.add_argument("--parts", nargs="+", default=["train", "gan", "fid", "cam"])
    parser.add_argument("--inception", default="", help="reference Inception weights file (else random)")
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
    args = parser.parse_args()
    device = pick_device(args.device)
    shape = SHAPES["tiny" if args.tiny else "paper"]
    result = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "shape": "tiny" if args.tiny else "paper",
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    with tempfile.TemporaryDirectory(prefix="mammoflow-bench-gpu-") as name:
        tmp = Path(name)
        for part in args.parts:  # each part on its own: one failing does not lose the others
            started = time.perf_counter()
            try:
                if part == "train":
                    result["train"] = train_part(shape, args.models, device, tmp)
                elif part == "gan":
                    result["gan"] = gan_part(shape, device, tmp)
                elif part == "fid":
                    network = tmp / f"gan{shape['gan_stages'][-1]}" / "network.pt"
                    if not network.is_file():
                        gan_part(shape, device, tmp)
                    result["fid"] = fid_part(shape, args.inception, device, tmp, network)
                elif part == "cam":
                    result["cam"] = cam_part(shape, args.models, device)
            except Exception as exc:  # recorded in the JSON, the next part still runs
                result[part] = {"error": f"{type(exc).__name__}: {exc}"}
            result.setdefault("seconds", {})[part] = round(time.perf_counter() - started, 1)
            args.out.write_text(json.dumps(result, indent=2) + "\n")  # after each part: a timeout keeps them
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
