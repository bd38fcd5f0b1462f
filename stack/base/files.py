"""Files p2pstack owns in its data directory: where they live and how they are written.

Rules (DESIGN.md section 9): writes are atomic (temp file, fsync, rename, fsync of the
directory), secrets get mode 0600, and a file that cannot be used is reported and kept.

A writer holds an exclusive ``flock`` on its temp file (``.NAME.XXXX.tmp``) until the
rename, so ``remove_stale_temps`` can tell the leftover of a writer killed mid-write
(no lock: removed) from a write in progress in another process (locked: kept). Reads go
through ``read_regular``: a FIFO or a device in a file's place is an error, not a hang.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import tempfile
import time
from pathlib import Path

from stack.base.errors import DataFileError

__all__ = ["resolve_data_dir", "ensure_data_dir", "atomic_write", "create_exclusive",
           "read_regular", "remove_stale_temps"]

DEFAULT_DATA_DIR = Path("~/.local/share/p2pstack")


def resolve_data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--data-dir`` if given, else ``$P2PSTACK_HOME``, else ``~/.local/share/p2pstack``."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("P2PSTACK_HOME")
    if env:
        return Path(env).expanduser()
    return DEFAULT_DATA_DIR.expanduser()


def ensure_data_dir(path: Path) -> Path:
    """Create the data directory (mode 0700) if missing; return it.

    ``DataFileError`` naming the path if it cannot be one (a file is in the way, a parent
    is not a directory, no permission).
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise DataFileError(path, "cannot use as data directory: not a directory") from None
    except OSError as exc:
        raise DataFileError(path, f"cannot use as data directory: {exc.strerror}") from None
    return path


def _write_temp(path: Path, data: bytes, mode: int) -> tuple[int, str]:
    """A locked temp file beside ``path`` holding ``data``, fsynced; the caller renames
    or links it, then closes the descriptor (which drops the lock)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.unlink(tmp)
        os.close(fd)
        raise
    return fd, tmp


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file.

    ``DataFileError`` naming ``path`` if it cannot be written (missing directory, a
    directory in the way, no permission); the old file, if any, is then untouched.
    """
    try:
        fd, tmp = _write_temp(path, data, mode)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        finally:
            os.close(fd)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise DataFileError(path, f"cannot write: {exc.strerror}") from None


def create_exclusive(path: Path, data: bytes, mode: int = 0o600) -> bool:
    """Create ``path`` with ``data`` atomically, only if it does not exist yet.

    Returns False (and writes nothing) when another writer got there first, so two
    processes creating the same key at once end up sharing one. ``DataFileError``
    naming ``path`` if it cannot be written at all.
    """
    try:
        fd, tmp = _write_temp(path, data, mode)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
            os.close(fd)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise DataFileError(path, f"cannot write: {exc.strerror}") from None
    return True


def read_regular(path: Path, max_size: int) -> bytes | None:
    """The content of ``path``; None when it does not exist.

    ``DataFileError`` naming ``path`` when it is not a regular file (a FIFO would block
    ``open`` forever: it is opened non-blocking and checked before any read), a symlink,
    larger than ``max_size`` bytes, or unreadable. The file is never changed.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        reason = ("is a symlink" if exc.errno == errno.ELOOP
                  else f"cannot open: {exc.strerror}")
        raise DataFileError(path, f"{reason}; it was left untouched") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DataFileError(path, "is not a regular file (a FIFO, device or directory?);"
                                      " it was left untouched")
        if info.st_size > max_size:
            raise DataFileError(path, f"is {info.st_size} bytes, more than the {max_size} it "
                                      "may hold; it was left untouched")
        chunks = []
        left = max_size + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 16))):
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise DataFileError(path, f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_size:  # it grew while we read
        raise DataFileError(path, f"is more than the {max_size} bytes it may hold")
    return data


STALE_AFTER = 2.0  # seconds: younger temp files may be a writer's before it took its lock


def remove_stale_temps(directory: Path, now: float | None = None) -> list[Path]:
    """Remove the temp files writers killed mid-write left in ``directory`` (one can
    hold a copy of a private key); returns what was removed. A temp file whose writer
    still runs is locked and kept, and so is one younger than ``STALE_AFTER`` (created,
    not yet locked)."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        candidates = [p for p in directory.iterdir()
                      if p.name.startswith(".") and p.name.endswith(".tmp")]
    except OSError:
        return removed
    for path in candidates:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue  # gone already, or a symlink: not ours
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or now - info.st_mtime < STALE_AFTER:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer
            path.unlink(missing_ok=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed
