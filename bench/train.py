"""Training throughput of a cell's loop with fastai's recipe against a bare timm loop of the same network.

- cell loop: ``Trainer.train_epoch`` exactly as a training cell runs it, in ``fine_tune``'s unfrozen phase
  (where all but one epoch go): batches gathered from a memory-mapped uint8 store (one fancy-index per
  batch, prefetched in a thread), normalised and flipped on the batch tensor, fastai's per-step rate and
  momentum for each parameter group set on the fused AdamW, the body under the precision rule's autocast
  and the head in fp32, channels_last;
- bare loop: the same classifier (timm body, fastai head), shapes and precision, with a plain AdamW over
  all parameters at a fixed rate, on tensors made once up front: what the network alone costs. The goal is
  a ratio of at least 0.9.

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
from torch import nn

from mammoflow.classify.data import CellData, epoch_batches
from mammoflow.classify.models import PAPER_MODELS, build_model, normalize_batch
from mammoflow.classify.precision import resolve_precision
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
    trainer = Trainer(model, settings, device, steps_per_epoch=steps, pretrained=settings.pretrained)
    trainer.start_epoch(1)  # fine_tune's first unfrozen epoch: the whole network trains
    batches = epoch_batches(np.arange(batch * steps), batch, seed=0)
    trainer.train_epoch(data, batches[:2], flip_seed=0)  # warm-up (allocator, autotuning)
    trainer.start_epoch(1)
    _sync(device)
    started = time.perf_counter()
    _, seen = trainer.train_epoch(data, batches, flip_seed=1)
    _sync(device)
    return seen / (time.perf_counter() - started), trainer.bf16


def bare_loop(name: str, res: int, batch: int, steps: int, device: torch.device, settings: TrainSettings):
    """No mammoflow loop: the classifier, one AdamW, cross-entropy, one batch made up front."""
    model, _ = build_model(name, res)
    precision = resolve_precision(device, settings.precision)
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    fused = device.type in ("cpu", "cuda") or None
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.99), eps=1e-5, fused=fused)
    loss_function = nn.CrossEntropyLoss()
    x = normalize_batch(torch.randint(0, 256, (batch, res, res), dtype=torch.uint8)).to(device)
    x = x.contiguous(memory_format=memory_format)
    y = (torch.arange(batch) % 5 == 0).long().to(device)

    def step():
        with precision.autocast(device):
            features = model.forward_features(x)
        with torch.autocast(device.type, enabled=False):  # the head in fp32, as the cell runs it
            loss = loss_function(model.forward_head(features.float()), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

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
    parser.add_argument("--repeats", type=int, default=3, help="alternations of the two loops (best kept)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    settings = TrainSettings.configured(
        precision=args.precision, lr=1e-4, recipe="fine_tune", pretrained=False
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="mammoflow-bench-train-") as tmp:
        for res in args.resolutions:
            for name in args.models:
                # Alternate the two loops and keep each one's best: the machine may be shared.
                cells, bares = [], []
                for _ in range(args.repeats):
                    cells.append(cell_loop(name, res, args.batch, args.steps, device, settings, tmp)[0])
                    bares.append(bare_loop(name, res, args.batch, args.steps, device, settings))
                cell, bare = max(cells), max(bares)
                rows.append(
                    {"model": name, "res": res, "cell_img_s": cell, "bare_img_s": bare, "ratio": cell / bare}
                )
                line = f"{name:20s} {res:4d}px  cell {cell:8.1f} img/s  bare {bare:8.1f} img/s"
                print(f"{line}  ratio {cell / bare:.2f}", flush=True)
    bf16 = resolve_precision(device, settings.precision).name == "bf16"
    print(
        f"\ndevice {device}, fastai's fine_tune (unfrozen phase), {'bf16 autocast' if bf16 else 'fp32'}, "
        f"channels_last, batch {args.batch}, "
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
