"""What a long GAN stage needs around its loop: how it runs, per-part step timing, a clean stop on SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from mammoflow.progress import say


class StepTimer:
    """Seconds per part of a step (only when asked: it synchronises the GPU at every boundary)."""

    def __init__(self, enabled: bool, device: torch.device):
        self.enabled, self.device = enabled, device
        self.totals: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        started = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.totals[name] += time.perf_counter() - started


class _Termination:
    """SIGTERM (SLURM's warning before a time-limit kill) -> checkpoint at the end of the step, then exit."""

    def __init__(self) -> None:
        self.requested = False
        self.previous = None

    def __enter__(self) -> _Termination:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


class Interrupted(RuntimeError):
    """The stage stopped early (SIGTERM, or a test's ``stop_after_step``); its checkpoint is on disk."""


@dataclass(frozen=True)
class RunOptions:
    """How a stage runs, as opposed to what it trains (StageSettings): none of this changes the result."""

    device: str | None = None  # cuda or cpu (None: cuda when present)
    meta: dict = field(default_factory=dict)  # recorded in network.pt; its "label" titles snapshots.png
    stop_after_step: int | None = None  # tests: stop as a kill would, after this step
    profile: bool = False  # time each part of a step (synchronises a GPU at every boundary)
    show_progress: bool = True
    log: Callable[[str], None] = say
