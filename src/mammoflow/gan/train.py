"""One progressive stage: train, checkpoint, resume, and write the stage folder.

Losses are StyleGAN2's: non-saturating logistic for both players, R1 on real images applied lazily (every
``r1_interval`` steps, scaled by the interval, with Adam's lr and betas adjusted as in StyleGAN2), an
exponential moving average of the generator (half-life ``ema_kimg``, ramped up over the first 5 % of the
images) that is what the stage hands on. A step is one generator update and one discriminator update,
each on ``batch`` images; kimg counts the real images the discriminator has seen.

Resuming gives the same result as an uninterrupted run (CPU; on a GPU up to cuDNN's own
nondeterminism): every step draws its randomness from torch's generator seeded by (seed, step), and its
real images from a permutation seeded by (seed, epoch), so nothing random has to survive an interruption;
the checkpoint holds the networks, the optimisers' moments, the step, and what was logged so far.

Stage folder (``out_dir``)::

    network.pt            the EMA generator, its spec, and what it was trained on (the next stage's input)
    stats.jsonl           one line per tick: step, kimg, seconds, losses, logits, R1, EMA beta
    snapshots.png         fixed latents drawn by the EMA generator over training (the paper's Figure 1)
    training_images.parquet  every real image the discriminator was shown, and how often (leakage audit)
    resume.pt             the last checkpoint while the stage runs; removed when it has finished
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from mammoflow.atomic import atomic_path, file_sha256, write_parquet, write_text
from mammoflow.devices import pick_device
from mammoflow.gan.augment import POLICIES, diff_augment
from mammoflow.gan.data import Positives
from mammoflow.gan.network_io import FORMAT, to_uint8
from mammoflow.gan.networks import Discriminator, GeneratorSpec, build_generator, grow_generator
from mammoflow.gan.snapshots import shrink_for_sheet, write_snapshot_figure
from mammoflow.gan.stage_runtime import Interrupted, StepTimer, _Termination
from mammoflow.progress import progress, say

GRID_SEED = 20230321  # the snapshot latents: the same in every stage, so the grids can be compared


@dataclass(frozen=True)
class TrainSettings:
    kimg: float
    batch: int = 32
    glr: float = 0.0025
    dlr: float = 0.002
    r1_gamma: float | None = None  # None: 0.0002 * res**2 / batch (StyleGAN2-ADA's heuristic)
    r1_interval: int = 16
    ema_kimg: float = 10.0
    ema_rampup: float | None = 0.05
    freeze: bool = True
    augment: tuple[str, ...] = POLICIES
    mixed_precision: bool = True
    seed: int = 0
    snapshots: int = 6
    grid: int = 8
    checkpoint_kimg: float = 50.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "augment", tuple(self.augment))
        unknown = set(self.augment) - set(POLICIES)
        if unknown:
            raise ValueError(f"unknown augmentation {sorted(unknown)}; known: {', '.join(POLICIES)}")

    def gamma(self, res: int) -> float:
        return self.r1_gamma if self.r1_gamma is not None else 0.0002 * res * res / self.batch

    def steps(self) -> int:
        return max(1, math.ceil(self.kimg * 1000 / self.batch))


@dataclass
class StageResult:
    network: Path
    steps: int
    kimg: float
    seconds: float
    resumed_from_step: int
    timings: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- helpers


def step_seed(seed: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0] % (2**63))


def batch_indices(n: int, batch: int, step: int, seed: int) -> np.ndarray:
    """Rows of the real images for ``step``: consecutive slices of one seeded permutation per epoch."""
    out: list[np.ndarray] = []
    position, wanted = step * batch, batch
    while wanted:
        epoch, offset = divmod(position, n)
        take = np.random.default_rng([seed, epoch]).permutation(n)[offset : offset + wanted]
        out.append(take)
        position += len(take)
        wanted -= len(take)
    return np.concatenate(out)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) -> float (N, 1, H, W) in [-1, 1]."""
    return images.unsqueeze(1).float() / 127.5 - 1.0


def gan_precision(mixed_precision: bool, device: torch.device) -> tuple[bool, str]:
    """(bf16 autocast on?, what ran). bf16 only where the GPU computes it natively: the GAN has no fp16
    loss scaling, and emulated bf16 (V100, T4) is slower than fp32."""
    if not mixed_precision:
        return False, "fp32 (gan.mixed_precision is false)"
    if device.type != "cuda":
        return False, "fp32 (CPU)"
    if not torch.cuda.is_bf16_supported(including_emulation=False):
        return False, f"fp32: {torch.cuda.get_device_name(device)} has no native bf16"
    return True, "bf16 autocast"


# ------------------------------------------------------------------------------------------- training


def train_stage(
    positives: Positives,
    spec: GeneratorSpec,
    settings: TrainSettings,
    out_dir: str | Path,
    previous: str | Path | None = None,
    device: str | None = None,
    meta: dict | None = None,
    stop_after_step: int | None = None,
    profile: bool = False,
    show_progress: bool = True,
    log: Callable[[str], None] = say,
) -> StageResult:
    """Train the last stage of ``spec`` on ``positives`` and write the stage folder (see module doc)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    res = spec.resolution
    if positives.images.shape[1:] != (res, res):
        raise ValueError(f"positives are {positives.images.shape[1:]} px, the stage is {res} px")
    if (previous is None) != (len(spec.stages) == 1):
        raise ValueError(
            f"stage {res}: a previous stage's network is needed exactly when stages > 1 ({spec.stages})"
        )
    amp, precision = gan_precision(settings.mixed_precision, dev)
    log(f"stage {res}: {precision}")
    autocast = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp)
    # channels_last: faster convolutions on GPUs (tensor cores) and, measured here, on CPUs too (oneDNN).
    memory_format = torch.channels_last

    # What this run is; a checkpoint of anything else is not resumed.
    identity = hashlib.sha256(
        json.dumps(
            {
                "spec": spec.to_dict(),
                "settings": asdict(settings),
                "previous": file_sha256(previous) if previous else None,
                "images": hashlib.sha256(positives.images.tobytes()).hexdigest(),
                "ids": positives.image_ids.tolist(),
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()

    torch.manual_seed(settings.seed)
    if previous is not None:
        previous_payload = torch.load(previous, map_location="cpu", weights_only=True)
        previous_spec = GeneratorSpec.from_dict(previous_payload["spec"])
        if previous_spec.grown(res) != spec:
            raise ValueError(f"{previous}: its generator ({previous_spec}) does not grow into {spec}")
        generator = grow_generator(previous_payload["state"], previous_spec, res)
    else:
        generator = build_generator(spec)
    generator.set_frozen(settings.freeze)
    discriminator = Discriminator(res, spec.cbase, spec.cmax)
    generator.to(dev, memory_format=memory_format)
    discriminator.to(dev, memory_format=memory_format)
    g_ema = copy.deepcopy(generator).eval().requires_grad_(False)

    trainable = generator.trainable_parameters()
    fused = dev.type in ("cpu", "cuda") or None  # one kernel for all parameters (bench/optimizer.py)
    opt_g = torch.optim.Adam(trainable, lr=settings.glr, betas=(0.0, 0.99), eps=1e-8, fused=fused)
    ratio = settings.r1_interval / (settings.r1_interval + 1)
    opt_d = torch.optim.Adam(
        discriminator.parameters(), lr=settings.dlr * ratio, betas=(0.0, 0.99**ratio), eps=1e-8, fused=fused
    )

    total_steps = settings.steps()
    batch = settings.batch
    n_real = len(positives.images)
    gamma = settings.gamma(res)
    checkpoint_steps = max(1, round(settings.checkpoint_kimg * 1000 / batch))
    tick_steps = max(1, total_steps // 100)
    count = max(2, settings.snapshots)
    snapshot_steps = sorted({round(i * total_steps / (count - 1)) for i in range(count)})
    grid_z = torch.randn(settings.grid, spec.z_dim, generator=torch.Generator().manual_seed(GRID_SEED))

    start_step, stats, snapshots, seconds_before = 0, [], [], 0.0
    shown = np.zeros(n_real, np.int64)
    resume_path = out_dir / "resume.pt"
    for stale in out_dir.glob(".*.tmp*"):  # a write cut short by a kill; the last complete one is kept
        stale.unlink(missing_ok=True)
    if resume_path.exists():
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        if state.get("identity") == identity:
            generator.load_state_dict(state["G"])
            g_ema.load_state_dict(state["G_ema"])
            discriminator.load_state_dict(state["D"])
            opt_g.load_state_dict(state["opt_G"])
            opt_d.load_state_dict(state["opt_D"])
            start_step, stats, seconds_before = state["step"], state["stats"], state["seconds"]
            snapshots = [(kimg, tiles.numpy()) for kimg, tiles in state["snapshots"]]
            shown = state["shown"].numpy().copy()
            log(f"stage {res}: resumed from {resume_path} at step {start_step}/{total_steps}")
        else:
            log(f"stage {res}: {resume_path} belongs to other settings or data; starting afresh")

    images_dev = torch.from_numpy(positives.images).to(dev)
    timer = StepTimer(profile, dev)
    started = time.perf_counter()

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - started

    def snapshot(step: int) -> None:
        with torch.no_grad():
            drawn = g_ema(grid_z.to(dev), noise_mode="const")
        snapshots.append((round(step * batch / 1000, 3), shrink_for_sheet(to_uint8(drawn))))

    def save_checkpoint(step: int) -> None:
        state = {
            "identity": identity,
            "step": step,
            "G": generator.state_dict(),
            "G_ema": g_ema.state_dict(),
            "D": discriminator.state_dict(),
            "opt_G": opt_g.state_dict(),
            "opt_D": opt_d.state_dict(),
            "stats": stats,
            "snapshots": [(kimg, torch.from_numpy(tiles)) for kimg, tiles in snapshots],
            "shown": torch.from_numpy(shown),
            "seconds": elapsed(),
        }
        with atomic_path(resume_path) as tmp:
            torch.save(state, tmp)

    tick: dict[str, list[torch.Tensor]] = defaultdict(list)
    steps = range(start_step, total_steps)
    with _Termination() as termination:
        for step in progress(steps, f"stage {res}px", total=len(steps), enabled=show_progress):
            if step in snapshot_steps and not any(k == round(step * batch / 1000, 3) for k, _ in snapshots):
                snapshot(step)
            torch.manual_seed(step_seed(settings.seed, step))
            with timer("data"):
                rows = batch_indices(n_real, batch, step, settings.seed)
                np.add.at(shown, rows, 1)
                real = to_unit(images_dev[torch.from_numpy(rows).to(dev)]).contiguous(
                    memory_format=memory_format
                )

            # Generator: non-saturating logistic loss.
            discriminator.requires_grad_(False)
            with timer("networks"), autocast:
                z = torch.randn(batch, spec.z_dim, device=dev)
                fake = generator(z, update_w_avg=True)
            with timer("augment"), autocast:
                fake_aug = diff_augment(fake, settings.augment)
            with timer("networks"), autocast:
                loss_g = F.softplus(-discriminator(fake_aug)).mean()
            with timer("networks"):
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
            with timer("optimizer"):
                opt_g.step()

            # Discriminator: logistic loss on generated and real images.
            discriminator.requires_grad_(True)
            with timer("networks"), torch.no_grad(), autocast:
                z = torch.randn(batch, spec.z_dim, device=dev)
                fake = generator(z)
            with timer("augment"), autocast:
                fake_aug = diff_augment(fake, settings.augment)
                real_aug = diff_augment(real, settings.augment)
            with timer("networks"), autocast:
                logits_fake = discriminator(fake_aug)
                logits_real = discriminator(real_aug)
                loss_d = F.softplus(logits_fake).mean() + F.softplus(-logits_real).mean()
            with timer("networks"):
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
            with timer("optimizer"):
                opt_d.step()

            # Lazy R1 on real images (full precision: a gradient penalty is sensitive to rounding).
            if gamma > 0 and step % settings.r1_interval == 0:
                with timer(
                    "r1"
                ):  # the networks' passes of the penalty, timed apart (bench/gan.py amortises it)
                    real_in = real.detach().requires_grad_(True)
                    logits = discriminator(diff_augment(real_in, settings.augment))
                    (grad,) = torch.autograd.grad(logits.sum(), real_in, create_graph=True)
                    penalty = grad.square().sum(dim=[1, 2, 3]).mean()
                    opt_d.zero_grad(set_to_none=True)
                    (penalty * (gamma / 2) * settings.r1_interval).backward()
                with timer("optimizer"):
                    opt_d.step()
                tick["r1"].append(penalty.detach())

            # Exponential moving average of the generator.
            with timer("ema"), torch.no_grad():
                nimg = (step + 1) * batch
                ema_nimg = settings.ema_kimg * 1000
                if settings.ema_rampup:
                    ema_nimg = min(ema_nimg, nimg * settings.ema_rampup)
                beta = 0.5 ** (batch / max(ema_nimg, 1e-8))
                for p_ema, p in zip(g_ema.parameters(), generator.parameters(), strict=True):
                    if p.requires_grad:
                        p_ema.copy_(p.detach().lerp(p_ema, beta))
                for b_ema, b in zip(g_ema.buffers(), generator.buffers(), strict=True):
                    b_ema.copy_(b)

            with timer("bookkeeping"):
                # Tensors until the tick ends: .item() every step would stall a GPU every step.
                tick["loss_g"].append(loss_g.detach().float())
                tick["loss_d"].append(loss_d.detach().float())
                tick["d_real"].append(logits_real.detach().float().mean())
                tick["d_fake"].append(logits_fake.detach().float().mean())
                done = step + 1
                if done % tick_steps == 0 or done == total_steps:
                    record = {"stage": res, "step": done, "kimg": round(done * batch / 1000, 3)}
                    record.update(
                        {k: round(torch.stack(v).mean().item(), 5) for k, v in sorted(tick.items())}
                    )
                    record.update({"ema_beta": round(beta, 6), "seconds": round(elapsed(), 2)})
                    stats.append(record)
                    tick.clear()
                if done < total_steps and (done % checkpoint_steps == 0 or termination.requested):
                    save_checkpoint(done)
                if termination.requested:
                    raise Interrupted(
                        f"stage {res}: SIGTERM at step {done}; checkpoint written to {resume_path}"
                    )
                if stop_after_step is not None and done >= stop_after_step and done < total_steps:
                    raise Interrupted(f"stage {res}: stopped after step {done} (stop_after_step)")

    if not any(k == round(total_steps * batch / 1000, 3) for k, _ in snapshots):
        snapshot(total_steps)
    seconds = elapsed()
    kimg = round(total_steps * batch / 1000, 3)
    payload = {
        "format": FORMAT,
        "spec": spec.to_dict(),
        "state": {k: v.detach().cpu() for k, v in g_ema.state_dict().items()},
        "stage": res,
        "kimg": kimg,
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()},
        "training_images": int(n_real),
        "precision": precision,
        "meta": meta or {},
    }
    network = out_dir / "network.pt"
    with atomic_path(network) as tmp:
        torch.save(payload, tmp)
    write_text("".join(json.dumps(r) + "\n" for r in stats), out_dir / "stats.jsonl")
    label = (meta or {}).get("label", "")
    write_snapshot_figure(
        snapshots, out_dir / "snapshots.png", f"{label} stage {res} px: EMA generator, fixed latents"
    )
    write_parquet(
        pd.DataFrame({"image_id": positives.image_ids, "shown": shown}), out_dir / "training_images.parquet"
    )
    resume_path.unlink(missing_ok=True)
    log(
        f"stage {res}: {total_steps} steps, {kimg} kimg in {seconds:.1f} s "
        f"({3600 * kimg / max(seconds, 1e-9):.1f} kimg/h); {n_real} real positives -> {network}"
    )
    return StageResult(network, total_steps, kimg, seconds, start_step, dict(timer.totals))
