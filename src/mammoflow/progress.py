"""Progress bars that stay readable in a Snakemake log file as well as on a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    # In a log file (not a TTY) every carriage-return update becomes a line: update rarely there.
    interactive = sys.stderr.isatty()
    return iter(
        tqdm(
            items,
            desc=desc,
            total=total,
            disable=not enabled,
            mininterval=0.5 if interactive else 15.0,
            ascii=not interactive,
            file=sys.stderr,
        )
    )


def say(message: str) -> None:
    """A line for the rule's log (stderr, so it interleaves with the progress bars)."""
    print(message, file=sys.stderr, flush=True)
