"""Run a function over items in supervised child processes that may crash.

Native decoders (dicomsdl, openjpeg, CharLS) can die with a segmentation fault on damaged files; seen
here: dicomsdl on a truncated uncompressed DICOM. A plain process pool then breaks as a whole and cannot
say which file was to blame. Here each worker takes one item at a time over its own pipe, so the parent
always knows which item a dead worker held: it reports that item as crashed, starts a new worker and goes
on. Results come back in input order, so the output does not depend on the number of workers.

``ChildLimits`` bound each item: the worker's data may grow by ``memory_mb`` over what it held when it
started (RLIMIT_DATA, set in the worker; a decoder that asks for more gets MemoryError or dies), and
the parent stops a worker that holds one item longer than ``timeout_s`` (SIGKILL) and reports ``TimedOut``.
"""

from __future__ import annotations

import contextlib
import faulthandler
import multiprocessing as mp
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

from mammoflow.progress import progress

Task = TypeVar("Task")


@dataclass(frozen=True)
class ChildLimits:
    """Per worker: memory (data) it may add, MiB; per item: seconds. None or 0: no bound."""

    memory_mb: int | None = None
    timeout_s: float | None = None


@dataclass(frozen=True)
class Crashed:
    """The worker died while holding this item (exit code < 0 is the signal number)."""

    exitcode: int | None
    memory_mb: int | None = None  # the worker's memory bound, when it had one

    def __str__(self) -> str:
        if self.exitcode is not None and self.exitcode < 0:
            text = f"decoder process crashed (signal {-self.exitcode})"
        else:
            text = f"decoder process died (exit code {self.exitcode})"
        if self.memory_mb:
            # A native decoder that cannot allocate often aborts instead of raising: say what it may use.
            text += f"; it may use {self.memory_mb} MiB (decode.max_memory_mb)"
        return text


@dataclass(frozen=True)
class TimedOut(Crashed):
    """The worker held this item longer than its time limit and was stopped."""

    seconds: float = 0.0

    def __str__(self) -> str:
        return f"decoder process stopped after {self.seconds:g} s on this file (decode.timeout_s)"


_memory_budget_mb: int | None = None  # in a worker: the bound it was given


def memory_budget_mb() -> int | None:
    """In a worker, the MiB its data may grow by (None: unbounded, or not a worker)."""
    return _memory_budget_mb


def _limit_memory(memory_mb: int | None) -> None:
    """RLIMIT_DATA at the worker's data size now plus ``memory_mb`` (Linux; elsewhere no bound is set).

    The data limit counts the heap and private writable mappings (every large array), not address space
    that is only reserved: a thread's malloc arena (64 MB each, one per OpenCV thread on a many-core
    machine) or CUDA's reservations in a process that has touched a GPU would take an address-space bound.
    Relative to the worker's own size, because a forked worker starts as large as its parent: a few hundred
    MB after pandas and OpenCV, more in a process that has loaded torch."""
    global _memory_budget_mb
    if not memory_mb:
        return
    import resource

    try:
        with open("/proc/self/status") as handle:
            data_kb = next(int(line.split()[1]) for line in handle if line.startswith("VmData:"))
    except (OSError, StopIteration, ValueError):
        return
    limit = data_kb * 1024 + memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    _memory_budget_mb = memory_mb


def _serve(func: Callable[[Any], Any], conn: Connection, memory_mb: int | None = None) -> None:
    # A crash is reported by the parent against its item; a traceback dump of the dying child (inherited
    # from pytest or python -X faulthandler) would only bury that line in the log.
    faulthandler.disable()
    _limit_memory(memory_mb)
    while True:
        message = conn.recv()
        if message is None:
            return
        index, item = message
        conn.send((index, func(item)))


class _Worker:
    def __init__(self, func: Callable[[Any], Any], context, limits: ChildLimits) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(func, child, limits.memory_mb), daemon=True)
        self.process.start()
        child.close()
        self.holding: int | None = None
        self.since = 0.0

    def give(self, index: int, item: Any) -> None:
        self.holding = index
        self.since = time.monotonic()
        self.conn.send((index, item))

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send(None)
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()


def imap_isolated(
    func: Callable[[Any], Any], items: Iterable[Any], workers: int = 1, limits: ChildLimits | None = None
) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, func(item) or Crashed)`` in input order. ``func`` must be picklable by reference."""
    limits = limits or ChildLimits()
    context = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    todo = list(enumerate(items))
    todo.reverse()  # pop() from the end takes items in order
    done: dict[int, Any] = {}
    next_out = 0
    pool = [_Worker(func, context, limits) for _ in range(max(1, min(workers, len(todo))))]
    try:
        for worker in pool:
            if todo:
                worker.give(*todo.pop())
        while any(w.holding is not None for w in pool):
            busy = {w.conn: w for w in pool if w.holding is not None}
            for worker in _ready_or_late(busy, limits.timeout_s):
                index, result = _collect(worker, limits)
                if isinstance(result, Crashed):
                    pool[pool.index(worker)] = worker = _Worker(func, context, limits)
                done[index] = result
                worker.holding = None
                if todo:
                    worker.give(*todo.pop())
            while next_out in done:
                yield next_out, done.pop(next_out)
                next_out += 1
    finally:
        for worker in pool:
            worker.stop()


def _ready_or_late(busy: dict[Connection, _Worker], timeout_s: float | None) -> list[_Worker]:
    """The busy workers with an answer (or dead), and those past their time; waits until there is one."""
    deadline = None
    if timeout_s:
        deadline = min(w.since for w in busy.values()) + timeout_s
    wait_s = None if deadline is None else max(0.0, deadline - time.monotonic())
    ready = [busy[conn] for conn in wait(list(busy), timeout=wait_s)]
    if timeout_s:
        now = time.monotonic()
        ready += [w for w in busy.values() if w not in ready and now - w.since >= timeout_s]
    return ready


def _collect(worker: _Worker, limits: ChildLimits) -> tuple[int, Any]:
    """The worker's answer; Crashed when it died, TimedOut (after stopping it) when it ran out of time."""
    if limits.timeout_s and not worker.conn.poll() and time.monotonic() - worker.since >= limits.timeout_s:
        worker.process.kill()
        worker.process.join()
        return worker.holding, TimedOut(worker.process.exitcode, limits.memory_mb, limits.timeout_s)
    try:
        return worker.conn.recv()
    except (EOFError, ConnectionResetError):
        worker.process.join()
        return worker.holding, Crashed(worker.process.exitcode, limits.memory_mb)


def imap_with_fallback(
    func: Callable[[Task], Any],
    tasks: dict[int, Task],
    workers: int,
    decoders_of: Callable[[Task], tuple[str, ...]],
    with_decoders: Callable[[Task, tuple[str, ...]], Task],
    description: str,
    limits: ChildLimits | None = None,
) -> Iterator[tuple[int, Any]]:
    """``imap_isolated`` with the decode stage's rule for crashes: a task whose worker died (or ran out of
    time) is given again with the next decoder in its chain. Yields ``(key, result)``: ``func``'s result,
    or a ``str`` reason that names every decoder that crashed before (a failure's reason is a str too).
    Keys come first in order, then the retried ones in order, so the output does not depend on the number
    of workers."""
    tasks = dict(tasks)
    reasons: dict[int, list[str]] = {}
    pending = sorted(tasks)
    while pending:
        retry = []
        results = imap_isolated(func, [tasks[key] for key in pending], workers, limits)
        for local, result in progress(results, description, total=len(pending)):
            key = pending[local]
            if isinstance(result, Crashed):
                left = decoders_of(tasks[key])
                reasons.setdefault(key, []).append(f"{left[0]}: {result}")
                if len(left) > 1:
                    tasks[key] = with_decoders(tasks[key], left[1:])
                    retry.append(key)
                    continue
                result = "; ".join(reasons[key])
            elif isinstance(result, str) and key in reasons:
                result = "; ".join([*reasons[key], result])
            yield key, result
        pending = retry
