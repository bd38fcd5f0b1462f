"""Where the announcement verifier's replay state lives: a file or memory.

The verifier itself (``stack.base.replay.Verifier``) is a sans-I/O core; its persistent
state is ``Verifier.dump()`` bytes (unexpired nonces, highest seq per peer; msgpack,
version 1). ``ReplayStore`` keeps those bytes:

- ``load(config)``: a verifier restored from the stored state (a fresh one if none).
- ``save(verifier)``: store its state (durable on return, for the file).
- ``open(config)``: a context manager: load under the store's lock, yield the verifier,
  save when the block exits normally (not on an exception), so two users at once never
  lose a nonce.

``FileReplayStore`` is ``replay_state.msgpack`` in the data directory, saved atomically
(temp + fsync + rename, mode 0600) under ``replay_state.msgpack.lock``; a file that does
not parse raises ``CorruptFileError`` naming it, and is left untouched.
``MemoryReplayStore`` keeps the bytes in memory (simulations, unit tests), so a load
still gives an independent verifier, as with the file.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol


from stack.base.errors import CorruptFileError
from stack.store.locking import data_file_lock
from stack.base.files import atomic_write, ensure_data_dir, read_regular
from stack.base.replay import Verifier, VerifierConfig

__all__ = ["STATE_FILE_NAME", "ReplayStore", "FileReplayStore", "MemoryReplayStore",
           "open_verifier", "load_verifier", "save_verifier"]

STATE_FILE_NAME = "replay_state.msgpack"

MAX_REPLAY_FILE = 64 << 20  # bytes



class ReplayStore(Protocol):
    """See the module docstring for the contract."""

    def load(self, config: VerifierConfig | None = None) -> Verifier: ...

    def save(self, verifier: Verifier) -> None: ...

    def open(self, config: VerifierConfig | None = None
             ) -> AbstractContextManager[Verifier]: ...


class MemoryReplayStore:
    """A ``ReplayStore`` in memory."""

    def __init__(self) -> None:
        self._data: bytes | None = None
        self._lock = threading.Lock()

    def load(self, config: VerifierConfig | None = None) -> Verifier:
        data = self._data
        return Verifier(config) if data is None else Verifier.restore(data, config)

    def save(self, verifier: Verifier) -> None:
        self._data = verifier.dump()

    @contextmanager
    def open(self, config: VerifierConfig | None = None) -> Iterator[Verifier]:
        with self._lock:
            verifier = self.load(config)
            yield verifier
            self.save(verifier)


class FileReplayStore:
    """``replay_state.msgpack`` in ``data_dir`` (see the module docstring)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / STATE_FILE_NAME

    def load(self, config: VerifierConfig | None = None) -> Verifier:
        return load_verifier(self.path, config)

    def save(self, verifier: Verifier) -> None:
        ensure_data_dir(self.data_dir)
        save_verifier(verifier, self.path)

    @contextmanager
    def open(self, config: VerifierConfig | None = None) -> Iterator[Verifier]:
        ensure_data_dir(self.data_dir)
        with data_file_lock(self.data_dir, STATE_FILE_NAME):
            verifier = load_verifier(self.path, config)
            yield verifier
            save_verifier(verifier, self.path)


def load_verifier(path: Path, config: VerifierConfig | None = None) -> Verifier:
    """A verifier with the state saved at ``path`` (fresh if there is no file).

    Raises ``CorruptFileError`` naming the file if it does not parse; the file is kept.
    """
    data = read_regular(path, MAX_REPLAY_FILE)  # DataFileError for a FIFO, a device...
    if data is None:
        return Verifier(config)
    try:
        return Verifier.restore(data, config)
    except ValueError as exc:
        raise CorruptFileError(path, f"corrupt replay state ({exc}); it was left untouched") \
            from None


def save_verifier(verifier: Verifier, path: Path) -> None:
    """Write the verifier's replay state to ``path`` atomically (mode 0600)."""
    atomic_write(path, verifier.dump(), 0o600)


def open_verifier(data_dir: Path, config: VerifierConfig | None = None
                  ) -> AbstractContextManager[Verifier]:
    """The data directory's verifier, loaded under its file lock and saved when the
    block exits normally (``FileReplayStore(data_dir).open(config)``)."""
    return FileReplayStore(Path(data_dir)).open(config)
