"""The cross-process file lock the stores take around a read-modify-write of one file in
the data directory (``NAME.lock`` beside ``NAME``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import filelock

from stack.base.errors import DataFileError, LocalError

__all__ = ["data_file_lock", "LOCK_TIMEOUT"]

LOCK_TIMEOUT = 30.0  # seconds; another p2pstack process holding the lock longer is stuck


@contextmanager
def data_file_lock(data_dir: Path, name: str) -> Iterator[None]:
    """Hold ``data_dir/NAME.lock``: ``LocalError`` after ``LOCK_TIMEOUT``, ``DataFileError``
    when the lock file cannot be made (a directory in its place, say)."""
    lock = filelock.FileLock(str(data_dir / f"{name}.lock"), timeout=LOCK_TIMEOUT,
                             mode=0o600)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise LocalError(f"{data_dir / name}: locked by another process for "
                         f"{LOCK_TIMEOUT:.0f} s") from None
    except OSError as exc:  # e.g. a directory where the lock file goes
        raise DataFileError(lock.lock_file, f"cannot take the lock: {exc.strerror}") from None
    try:
        yield
    finally:
        lock.release()
