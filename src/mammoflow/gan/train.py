"""One progressive stage: the training loop, and the stage folder it writes.

The loop follows StyleGAN-XL's ``training/training_loop.py``; the losses are in ``losses`` and everything
the stage carries from step to step (networks, optimisers, progress; checkpoint and resume) in
``stage_state``. A step is one batch of ``batch`` real images and four phases (``losses``): the generator's
loss, its regulariser when due, the discriminator's loss, its regulariser when due; each phase zeroes its
player's gradients, back-propagates, replaces non-finite gradients (NaN by 0, infinities by +-1e5, as
StyleGAN does) and steps that player's Adam. Only the parameters a stage trains are switched on, and
only during their own player's phases: the new head alone in a grown stage (``freeze``), the heads alone
in a projected discriminator. Then the EMA generator moves toward the generator: half-life ``ema_kimg``,
ramped up over the first ``ema_rampup`` of the images, beta from the images shown before the step, as
StyleGAN's loop computes it. kimg counts the real images the discriminator has seen.

Resuming gives the same result as an uninterrupted run (CPU; on a GPU up to cuDNN's own
nondeterminism): every step draws its randomness from torch's generator seeded by (seed, step), and its
real images from a permutation seeded by (seed, epoch), so no random state has to survive an interruption.

Stage folder (``out_dir``)::

    network.pt            the EMA generator, its layer table, what it was trained on, the discriminator
    stats.jsonl           one line per tick: step, kimg, seconds, losses, mean logits, regularisers, blur,
                          EMA beta, the discriminator
    snapshots.png         fixed latents drawn by the EMA generator over training (the paper's Figure 1)
    training_images.parquet  every real image the discriminator was shown, and how often (leakage audit)
    resume.pt             the last checkpoint while the stage runs; removed when it has finished
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mammoflow.atomic import atomic_path, file_sha256, write_parquet, write_text
from mammoflow.devices import pick_device
from mammoflow.gan.data import Positives
from mammoflow.gan.network_io import generator_payload, to_uint8
from mammoflow.gan.settings import StageSettings
from mammoflow.gan.snapshots import shrink_for_sheet, write_snapshot_figure
from mammoflow.gan.stage_runtime import Interrupted, RunOptions, StepTimer, _Termination
from mammoflow.gan.stage_state import StageState, is_stem
from mammoflow.gan.stylegan_xl import ArchSpec
from mammoflow.progress import progress

GRID_SEED = 20230321  # the snapshot latents: the same in every stage, so the grids can be compared
PHASES = 4  # latents are drawn for Gmain, Greg, Dmain, Dreg at every step, used or not (as StyleGAN does)


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


def resolve_feature_weights(settings: StageSettings, given: dict[str, Path]) -> dict[str, Path | None]:
    """Feature network -> its weights file (None: random), in the discriminator's order; refuses what
    cannot be meant: missing files for ``pretrained``, files for ``random`` or for networks not configured."""
    if not settings.projected:
        if given:
            raise ValueError(
                f"feature network weights given ({', '.join(given)}) to a residual discriminator"
            )
        return {}
    unknown = sorted(set(given) - set(settings.feature_networks))
    if unknown:
        raise ValueError(
            f"weights given for {unknown}, not in gan.feature_networks {list(settings.feature_networks)}"
        )
    if settings.feature_weights == "random":
        if given:
            raise ValueError(
                f"gan.feature_weights is random, yet weights files were given for {sorted(given)}"
            )
        return dict.fromkeys(settings.feature_networks)
    missing = [n for n in settings.feature_networks if n not in given]
    if missing:
        raise ValueError(
            f"the projected discriminator needs the pretrained weights of {missing} (--feature-weights "
            "NAME=PATH; the workflow's weights step fills them) and never downloads them; to train against "
            "randomly initialised feature networks on purpose, set gan.feature_weights: random"
        )
    return {n: Path(given[n]) for n in settings.feature_networks}


def describe_discriminator(settings: StageSettings, features: dict[str, Path | None]) -> dict:
    """What ran, for network.pt, stats.jsonl and the report."""
    if not settings.projected:
        return {
            "kind": "residual",
            "label": "residual (StyleGAN2, trained from scratch)",
            "feature_networks": [],
        }
    networks = [
        {"name": n, "weights": str(p) if p else None, "sha256": file_sha256(p) if p else None}
        for n, p in features.items()
    ]
    names = ", ".join(features)
    random = settings.feature_weights == "random"
    label = (
        f"projected on RANDOM features ({names}; gan.feature_weights: random)"
        if random
        else f"projected ({names})"
    )
    return {"kind": "projected", "label": label, "random_features": random, "feature_networks": networks}


def ema_beta(settings: StageSettings, nimg: int) -> float:
    ema_nimg = settings.ema_kimg * 1000
    if settings.ema_rampup is not None:
        ema_nimg = min(ema_nimg, nimg * settings.ema_rampup)
    return 0.5 ** (settings.batch / max(ema_nimg, 1e-8))


# ------------------------------------------------------------------------------------------- one step


def run_phase(params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer, loss) -> dict:
    """Switch one player's trained parameters on, back-propagate ``loss()``, clean the gradients, step."""
    for p in params:
        p.requires_grad_(True)
    optimizer.zero_grad(set_to_none=True)
    try:
        stats = loss()
    finally:
        for p in params:
            p.requires_grad_(False)
    if stats is None:  # the phase had nothing to do (a regulariser not yet due)
        return {}
    for p in params:
        if p.grad is not None:
            torch.nan_to_num(p.grad, nan=0.0, posinf=1e5, neginf=-1e5, out=p.grad)
    optimizer.step()
    return stats


def training_step(
    state: StageState, settings: StageSettings, real: torch.Tensor, step: int, timer: StepTimer
) -> dict:
    loss, nimg = state.loss, step * settings.batch
    z = torch.randn(PHASES, settings.batch, state.G.z_dim, device=real.device)
    stats: dict = {}
    with timer("generator"):
        stats |= run_phase(state.g_params, state.opt_g, lambda: loss.g_main(z[0], nimg))
    if loss.g_reg_interval and step % loss.g_reg_interval == 0:
        with timer("regularisers"):
            stats |= run_phase(state.g_params, state.opt_g, lambda: loss.g_reg(z[1], nimg))
    with timer("discriminator"):
        stats |= run_phase(state.d_params, state.opt_d, lambda: loss.d_main(real, z[2], nimg))
    if loss.d_reg_interval and step % loss.d_reg_interval == 0:
        with timer("regularisers"):
            stats |= run_phase(state.d_params, state.opt_d, lambda: loss.d_reg(real, nimg))
    with timer("ema"):
        beta = ema_beta(settings, nimg)
        state.update_ema(beta)
    return stats | loss.schedule(nimg) | {"ema_beta": torch.tensor(beta)}


# ------------------------------------------------------------------------------------------- the stage


def train_stage(
    positives: Positives,
    spec: ArchSpec,
    settings: StageSettings,
    out_dir: str | Path,
    previous: str | Path | None = None,
    feature_weights: dict[str, Path] | None = None,
    options: RunOptions | None = None,
) -> StageResult:
    """Train the last stage of ``spec`` (the generator's layer table: the stem, or the stem and its heads, the
    last of which this stage adds) on ``positives`` and write the stage folder (see module doc).

    ``feature_weights``: the projected discriminator's weights file per feature network.
    """
    options = options or RunOptions()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = pick_device(options.device)
    res = spec.img_resolution
    previous = Path(previous) if previous else None
    if positives.images.shape[1:] != (res, res):
        raise ValueError(f"positives are {positives.images.shape[1:]} px, the stage is {res} px")
    if (previous is None) != is_stem(spec):
        raise ValueError(
            f"stage {res}: a previous stage's network is needed exactly when the stage grows a head"
        )
    features = resolve_feature_weights(settings, feature_weights or {})
    discriminator = describe_discriminator(settings, features)
    amp, precision = gan_precision(settings.mixed_precision, dev)
    options.log(f"stage {res}: {precision}; discriminator {discriminator['label']}")

    def autocast():
        return torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp)

    state = StageState.build(spec, settings, previous, features, positives, dev, autocast)
    resume_path = out_dir / "resume.pt"
    for stale in out_dir.glob(".*.tmp*"):  # a write cut short by a kill; the last complete one is kept
        stale.unlink(missing_ok=True)
    if state.restore(resume_path, options.log):
        options.log(f"stage {res}: resumed from {resume_path} at step {state.step}/{settings.steps()}")
    start_step = state.step
    timer = StepTimer(options.profile, dev)
    seconds = _run_steps(state, positives, settings, discriminator["label"], resume_path, timer, options)
    ran = {"precision": precision, "discriminator": discriminator, "meta": options.meta}
    network = _write_stage(state, positives, spec, settings, out_dir, ran)
    resume_path.unlink(missing_ok=True)
    kimg = round(settings.steps() * settings.batch / 1000, 3)
    rate = 3600 * kimg / max(seconds, 1e-9)
    options.log(
        f"stage {res}: {settings.steps()} steps, {kimg} kimg in {seconds:.1f} s ({rate:.1f} kimg/h); "
        f"{len(positives.images)} real positives -> {network}"
    )
    return StageResult(network, settings.steps(), kimg, seconds, start_step, dict(timer.totals))


def _snapshot(state: StageState, grid_z: torch.Tensor, kimg: float) -> None:
    if any(k == kimg for k, _ in state.snapshots):
        return
    with torch.no_grad():
        drawn = state.G_ema(grid_z, noise_mode="const")
    state.snapshots.append((kimg, shrink_for_sheet(to_uint8(drawn))))


def _run_steps(state, positives, settings, label, resume_path, timer, options) -> float:
    """Steps from ``state.step`` to the end, with ticks, snapshots and checkpoints; the seconds trained."""
    dev = next(state.G.parameters()).device
    total, batch, res = settings.steps(), settings.batch, positives.images.shape[-1]
    checkpoint_steps = max(1, round(settings.checkpoint_kimg * 1000 / batch))
    tick_steps = max(1, total // 100)
    count = max(2, settings.snapshots)
    snapshot_steps = sorted({round(i * total / (count - 1)) for i in range(count)})
    grid_z = torch.randn(settings.grid, state.G.z_dim, generator=torch.Generator().manual_seed(GRID_SEED)).to(
        dev
    )
    images = torch.from_numpy(positives.images).to(dev)
    started = time.perf_counter()

    def elapsed() -> float:
        return state.seconds_before + time.perf_counter() - started

    tick: dict[str, list[torch.Tensor]] = defaultdict(list)
    steps = range(state.step, total)
    with _Termination() as termination:
        for step in progress(steps, f"stage {res}px", total=len(steps), enabled=options.show_progress):
            if step in snapshot_steps:
                _snapshot(state, grid_z, round(step * batch / 1000, 3))
            torch.manual_seed(step_seed(settings.seed, step))
            with timer("data"):
                rows = batch_indices(len(images), batch, step, settings.seed)
                np.add.at(state.shown, rows, 1)
                real = to_unit(images[torch.from_numpy(rows).to(dev)]).contiguous(
                    memory_format=torch.channels_last
                )
            stats = training_step(state, settings, real, step, timer)
            with timer("bookkeeping"):
                # Tensors until the tick ends: .item() every step would stall a GPU every step.
                for key, value in stats.items():
                    tick[key].append(value.detach().float())
                state.step = done = step + 1
                if done % tick_steps == 0 or done == total:
                    record = {"stage": res, "step": done, "kimg": round(done * batch / 1000, 3)}
                    record |= {k: round(torch.stack(v).mean().item(), 6) for k, v in sorted(tick.items())}
                    record |= {"seconds": round(elapsed(), 2), "discriminator": label}
                    state.stats.append(record)
                    tick.clear()
                if done < total and (done % checkpoint_steps == 0 or termination.requested):
                    state.save(resume_path, elapsed())
                if termination.requested:
                    raise Interrupted(
                        f"stage {res}: SIGTERM at step {done}; checkpoint written to {resume_path}"
                    )
                stop = options.stop_after_step
                if stop is not None and stop <= done < total:
                    raise Interrupted(f"stage {res}: stopped after step {done} (stop_after_step)")
    _snapshot(state, grid_z, round(total * batch / 1000, 3))
    return elapsed()


def _write_stage(state, positives, spec, settings, out_dir, ran: dict) -> Path:
    """network.pt (plus ``ran``: precision, discriminator, meta), stats.jsonl, snapshots.png, images shown."""
    res, meta = spec.img_resolution, ran["meta"]
    payload = generator_payload(
        state.G_ema,
        kimg=round(settings.steps() * settings.batch / 1000, 3),
        settings=settings.to_dict(),
        training_images=len(positives.images),
        **ran,
    )
    network = out_dir / "network.pt"
    with atomic_path(network) as tmp:
        torch.save(payload, tmp)
    write_text("".join(json.dumps(r) + "\n" for r in state.stats), out_dir / "stats.jsonl")
    title = f"{meta.get('label', '')} stage {res} px: EMA generator, fixed latents"
    write_snapshot_figure(state.snapshots, out_dir / "snapshots.png", title)
    write_parquet(
        pd.DataFrame({"image_id": positives.image_ids, "shown": state.shown}),
        out_dir / "training_images.parquet",
    )
    return network
