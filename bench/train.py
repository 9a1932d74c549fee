"""Training throughput of a cell's loop against a bare loop of forward, backward and optimiser steps.

- cell loop: ``Trainer.train_epoch`` exactly as a training cell runs it: batches gathered from a
  memory-mapped uint8 store (one fancy-index per batch, prefetched in a thread), normalised and flipped
  on the batch tensor, bf16 autocast and channels_last where the cell would use them;
- bare loop: the same model, optimiser and precision on tensors made once up front: what the network
  alone costs. The goal is a ratio of at least 0.9.

Usage:
    python bench/train.py                                  # the five models at 32 and 64 px, batch 16
    python bench/train.py --models resnet18 --resolutions 256 --batch 64 --device cuda
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mammoflow.classify.data import CellData, epoch_batches
from mammoflow.classify.models import PAPER_MODELS, build_model, normalize_batch
from mammoflow.classify.train import Trainer, TrainSettings
from mammoflow.devices import pick_device


def _store(path: Path, n: int, res: int) -> CellData:
    rng = np.random.default_rng(0)
    np.save(path, rng.integers(0, 256, (n, res, res), dtype=np.uint8))
    images = np.load(path, mmap_mode="r")
    table = pd.DataFrame({"cancer": (np.arange(n) % 5 == 0).astype(int), "fold": 1})
    return CellData(images, None, table, np.arange(n), np.empty(0, int))


def cell_loop(
    name: str, res: int, batch: int, steps: int, device: torch.device, settings: TrainSettings, tmp
):
    data = _store(Path(tmp) / f"{name}_{res}.npy", batch * steps, res)
    model, _ = build_model(name, res)
    trainer = Trainer(model, settings, device, steps * 3)
    batches = epoch_batches(np.arange(batch * steps), batch, seed=0)
    trainer.train_epoch(data, batches[:2], flip_seed=0)  # warm-up (allocator, autotuning)
    _sync(device)
    started = time.perf_counter()
    _, seen = trainer.train_epoch(data, batches, flip_seed=1)
    _sync(device)
    return seen / (time.perf_counter() - started), trainer.bf16


def bare_loop(name: str, res: int, batch: int, steps: int, device: torch.device, settings: TrainSettings):
    model, _ = build_model(name, res)
    trainer = Trainer(model, settings, device, steps * 3)
    x = normalize_batch(torch.randint(0, 256, (batch, res, res), dtype=torch.uint8)).to(device)
    x = x.contiguous(memory_format=trainer.memory_format)
    y = (torch.arange(batch) % 5 == 0).float().to(device)
    model.train()

    def step():
        loss = trainer.loss(trainer._logits(x), y)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()
        trainer.schedule.step()

    for _ in range(2):
        step()
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - started)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(PAPER_MODELS))
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per measurement")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    settings = TrainSettings(precision=args.precision, lr=1e-4)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mammoflow-bench-train-") as tmp:
        for res in args.resolutions:
            for name in args.models:
                # Alternate the two loops twice and keep each one's best: this machine is shared.
                cell = max(
                    cell_loop(name, res, args.batch, args.steps, device, settings, tmp)[0] for _ in range(2)
                )
                bare = max(bare_loop(name, res, args.batch, args.steps, device, settings) for _ in range(2))
                rows.append(
                    {"model": name, "res": res, "cell_img_s": cell, "bare_img_s": bare, "ratio": cell / bare}
                )
                line = f"{name:20s} {res:4d}px  cell {cell:8.1f} img/s  bare {bare:8.1f} img/s"
                print(f"{line}  ratio {cell / bare:.2f}", flush=True)
    bf16 = Trainer(build_model("resnet18", 32)[0], settings, device, 3).bf16
    print(
        f"\ndevice {device}, {'bf16 autocast' if bf16 else 'fp32'}, channels_last, batch {args.batch}, "
        f"{torch.get_num_threads()} threads; median ratio {np.median([r['ratio'] for r in rows]):.2f}"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"device": str(device), "bf16": bf16, "batch": args.batch, "rows": rows}, indent=2)
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
