"""Run a function over items in supervised child processes that may crash.

Native decoders (dicomsdl, openjpeg, CharLS) can die with a segmentation fault on damaged files; seen
here: dicomsdl on a truncated uncompressed DICOM. A plain process pool then breaks as a whole and cannot
say which file was to blame. Here each worker takes one item at a time over its own pipe, so the parent
always knows which item a dead worker held: it reports that item as crashed, starts a new worker and goes
on. Results come back in input order, so the output does not depend on the number of workers.
"""

from __future__ import annotations

import contextlib
import faulthandler
import multiprocessing as mp
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

from mammoflow.progress import progress

Task = TypeVar("Task")


@dataclass(frozen=True)
class Crashed:
    """The worker died while holding this item (exit code < 0 is the signal number)."""

    exitcode: int | None

    def __str__(self) -> str:
        if self.exitcode is not None and self.exitcode < 0:
            return f"decoder process crashed (signal {-self.exitcode})"
        return f"decoder process died (exit code {self.exitcode})"


def _serve(func: Callable[[Any], Any], conn: Connection) -> None:
    # A crash is reported by the parent against its item; a traceback dump of the dying child (inherited
    # from pytest or python -X faulthandler) would only bury that line in the log.
    faulthandler.disable()
    while True:
        message = conn.recv()
        if message is None:
            return
        index, item = message
        conn.send((index, func(item)))


class _Worker:
    def __init__(self, func: Callable[[Any], Any], context) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(func, child), daemon=True)
        self.process.start()
        child.close()
        self.holding: int | None = None

    def give(self, index: int, item: Any) -> None:
        self.holding = index
        self.conn.send((index, item))

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send(None)
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()


def imap_isolated(
    func: Callable[[Any], Any], items: Iterable[Any], workers: int = 1
) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, func(item) or Crashed)`` in input order. ``func`` must be picklable by reference."""
    context = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    todo = list(enumerate(items))
    todo.reverse()  # pop() from the end takes items in order
    done: dict[int, Any] = {}
    next_out = 0
    pool = [_Worker(func, context) for _ in range(max(1, min(workers, len(todo))))]
    try:
        for worker in pool:
            if todo:
                worker.give(*todo.pop())
        while any(w.holding is not None for w in pool):
            busy = {w.conn: w for w in pool if w.holding is not None}
            for conn in wait(list(busy)):
                worker = busy[conn]
                try:
                    index, result = conn.recv()
                except (EOFError, ConnectionResetError):
                    worker.process.join()
                    index, result = worker.holding, Crashed(worker.process.exitcode)
                    pool[pool.index(worker)] = worker = _Worker(func, context)
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


def imap_with_fallback(
    func: Callable[[Task], Any],
    tasks: dict[int, Task],
    workers: int,
    decoders_of: Callable[[Task], tuple[str, ...]],
    with_decoders: Callable[[Task, tuple[str, ...]], Task],
    description: str,
) -> Iterator[tuple[int, Any]]:
    """``imap_isolated`` with the decode stage's rule for crashes: a task whose worker died is given again
    with the next decoder in its chain. Yields ``(key, result)``: ``func``'s result, or a ``str`` reason
    that names every decoder that crashed before (a failure's reason is a str too). Keys come first in
    order, then the retried ones in order, so the output does not depend on the number of workers."""
    tasks = dict(tasks)
    reasons: dict[int, list[str]] = {}
    pending = sorted(tasks)
    while pending:
        retry = []
        results = imap_isolated(func, [tasks[key] for key in pending], workers)
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
