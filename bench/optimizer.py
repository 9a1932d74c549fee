"""AdamW step time per model: PyTorch's default (per-tensor loop on a CPU), foreach, and fused.

The cells and the GAN use ``fused=True`` on CPU and CUDA. Run on one core, as a cell runs:

    taskset -c 0 .venv/bin/python bench/optimizer.py            # CPU
    .venv/bin/python bench/optimizer.py --device cuda           # a GPU
"""

from __future__ import annotations

import argparse
import json
import time

import timm
import torch

MODELS = ["resnet18", "resnet34", "resnet152", "efficientnet_b0", "maxvit_nano_rw_256"]


def step_seconds(model: torch.nn.Module, device: torch.device, repeats: int, **options) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, **options)
    optimizer.step()  # state allocation
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = {}
    for name in MODELS:
        model = timm.create_model(name, pretrained=False, num_classes=1).to(device)
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        row = {
            kind: round(step_seconds(model, device, args.repeats, **options) * 1000, 2)
            for kind, options in (
                ("default_ms", {}),
                ("foreach_ms", {"foreach": True}),
                ("fused_ms", {"fused": True}),
            )
        }
        row["parameters_millions"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
        results[name] = row
        print(name, row, flush=True)
    print(json.dumps({"device": str(device), "threads": args.threads, "torch": torch.__version__, **results}))


if __name__ == "__main__":
    main()
