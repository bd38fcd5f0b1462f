"""Files p2pstack owns in its data directory: where they live and how they are written.

Rules (DESIGN.md section 9): writes are atomic (temp file, fsync, rename, fsync of the
directory), secrets get mode 0600, and a file that cannot be used is reported and kept.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from stack.base.errors import DataFileError

__all__ = ["resolve_data_dir", "ensure_data_dir", "atomic_write", "create_exclusive"]

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


def _write_temp(path: Path, data: bytes, mode: int) -> str:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


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
        tmp = _write_temp(path, data, mode)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
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
        tmp = _write_temp(path, data, mode)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise DataFileError(path, f"cannot write: {exc.strerror}") from None
    return True
