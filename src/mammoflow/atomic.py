"""Write-then-rename helpers, so a killed job never leaves a file that looks complete.

Every write here that runs out of disk space (or quota) fails with one line, ``DiskFullError``: the path,
"no space left on device", and how much is free, with the temporary file already removed, so that the same
command completes once space is freed. The writers do not all say so themselves: torch's zip writer reports
a full disk as ``RuntimeError: [enforce fail at inline_container.cc:...] unexpected pos``, so a failed write
is also taken for a full disk when the file system has (almost) nothing left at that moment.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from mammoflow.errors import DiskFullError

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# A failed write with less than this free on its file system is a full disk, whatever the writer said.
NEARLY_FULL_BYTES = 1 << 20


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only if the block succeeds.

    The temporary file is removed whatever happens; a write that ran out of space raises DiskFullError.
    """
    final = Path(final)
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, final)
    except DiskFullError:
        raise  # named already, by an inner write
    except Exception as exc:
        # Measured before the partial file is removed: that is what filled the disk.
        if out_of_space(exc, final.parent):
            raise DiskFullError(disk_full_message(final)) from exc
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def out_of_space(exc: BaseException, folder: str | os.PathLike) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a write that found no space left."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in NO_SPACE_ERRNOS:
            return True
        if "no space left on device" in str(seen).lower() or "disk quota exceeded" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    if not isinstance(exc, (OSError, RuntimeError)):  # a refusal of our own (DataError) is not the disk's
        return False
    free = free_bytes(folder)
    return free is not None and free < NEARLY_FULL_BYTES


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Bytes an unprivileged writer may still use on ``folder``'s file system (None if it cannot be told)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def disk_full_message(path: str | os.PathLike) -> str:
    free = free_bytes(Path(path).parent)
    where = f"{free / 2**20:.1f} MiB free there" if free is not None else "free space unknown"
    return f"{path}: no space left on device ({where}); nothing was kept: free space and run the same command"


def allocate_npy(path: str | os.PathLike, shape: tuple[int, ...], dtype) -> np.memmap:
    """A new ``.npy`` file of ``shape``, its disk blocks reserved before any is written, opened as a map.

    ``np.lib.format.open_memmap`` makes a sparse file: writing through the map into a full disk then kills
    the process with SIGBUS (exit 135) and no message. With the space reserved up front a full disk fails
    here, as ENOSPC (DiskFullError inside ``atomic_path``), before any work is done.
    """
    images = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        try:
            os.posix_fallocate(handle.fileno(), 0, size)
        except (AttributeError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
                raise
            _reserve_by_writing(handle, size)  # no fallocate here (macOS, some network file systems)
    return images


def _reserve_by_writing(handle, size: int, block: int = 1 << 24) -> None:
    """Reserve a new file's blocks the slow way: write its bytes (the header, then zeros) over it."""
    handle.seek(0)
    head = handle.read(min(size, block))
    handle.seek(0)
    handle.write(head)
    zeros = bytes(min(block, size))
    position = len(head)
    while position < size:
        count = min(len(zeros), size - position)
        handle.write(zeros[:count])
        position += count
    handle.flush()


def write_parquet(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def jsonable(value):
    """A value JSON can hold: numpy scalars as Python numbers, NaN as null (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_json(value, path: str | os.PathLike) -> None:
    write_text(json.dumps(jsonable(value), indent=2) + "\n", path)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 1 MiB blocks (weights and networks run to hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
