"""Where the trust store's records live: a small interface, a file and a memory version.

``TrustStorage`` is an atomic read-modify-write of the whole ``TrustState``:

- ``read()`` returns a private copy of the current state (callers may mutate it).
- ``update(apply)`` calls ``apply(state)`` on the current state and makes the result
  the stored state when ``apply`` returns; if it raises, nothing is stored. For the
  file storage "stored" means durable: on return the file (and its directory entry) is
  fsync'd. Concurrent ``update`` calls, in any threads or processes sharing the
  storage, are serialised: none loses another's change.
- ``blocking`` says whether ``update`` does blocking I/O (the file storage: lock,
  re-read, rewrite, fsync, ~1-15 ms); asyncio callers must then run it off the loop.

``FileTrustStorage`` is ``trusted_peers.json`` (format in ``stack.store.trust``):
``update`` takes ``trusted_peers.json.lock`` (``filelock``), re-reads the file, applies,
writes it with ``atomic_write`` (temp + fsync + rename + directory fsync) if anything
changed, and releases the lock, so a crash (even ``kill -9``) leaves the old or the new
file and two processes never lose each other's entries. A corrupt file is moved aside
(see ``stack.store.trust``), never silently replaced. ``MemoryTrustStorage`` keeps the
state in memory with the same semantics minus durability (simulations, unit tests).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import filelock
import structlog

from stack.base.clock import Clock, SystemClock
from stack.base.errors import DataFileError
from stack.base.files import atomic_write, ensure_data_dir, read_regular
from stack.store.trust_model import (
    FORMAT_VERSION,
    TRUST_FILE_NAME,
    AddressPin,
    TrustEntry,
    TrustStoreLockedError,
)

__all__ = ["TrustState", "TrustStorage", "FileTrustStorage", "MemoryTrustStorage",
           "LOCK_TIMEOUT"]

LOCK_TIMEOUT = 10.0         # seconds to wait for another process's update
_LOCK_POLL = 0.005          # seconds between lock attempts (filelock's default is 50 ms)

log = structlog.get_logger("stack.store.trust")
_T = TypeVar("_T")

MAX_TRUST_FILE = 64 << 20  # bytes; ~100x what 10,000 peers take



@dataclass
class TrustState:
    """The whole store, parsed: peers by peer-id text, pins by address. Mutated only
    inside a storage's ``update``.

    ``lines`` memoises each record's serialised line, keyed by the record object (they
    are frozen), so a write re-encodes only the records that changed.
    """

    peers: dict[str, TrustEntry]
    pins: dict[str, AddressPin]
    lines: dict[str, tuple[object, str]]

    @classmethod
    def empty(cls) -> TrustState:
        return cls({}, {}, {})

    def copy(self) -> TrustState:
        return TrustState(dict(self.peers), dict(self.pins), self.lines)

    @classmethod
    def from_bytes(cls, data: bytes) -> TrustState:
        try:
            obj = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON ({exc})") from None
        except RecursionError:  # a hand-edited or hostile file: "[[[[..." thousands deep
            raise ValueError("JSON nested too deeply") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("peers"), dict):
            raise ValueError('no "peers" object at the top level')
        version = obj.get("version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"unsupported version {version!r}")
        pins = obj.get("addresses", {})
        if not isinstance(pins, dict):
            raise ValueError('"addresses" must be an object')
        return cls({k: TrustEntry.from_json(k, v) for k, v in obj["peers"].items()},
                   {a: AddressPin.from_json(a, v) for a, v in pins.items()}, {})

    def to_bytes(self) -> bytes:
        """Indented JSON with one record per line: readable, diffable, and cheap to
        rewrite (C encoder per record; unchanged records reuse their memoised line)."""
        memo: dict[str, tuple[object, str]] = {}

        def section(tag: str, records: dict[str, Any]) -> str:
            out = []
            for key, record in records.items():
                cached = self.lines.get(tag + key)
                if cached is None or cached[0] is not record:
                    cached = (record, f"    {json.dumps(key)}: "
                                      f"{json.dumps(record.to_json(), sort_keys=True)}")
                memo[tag + key] = cached
                out.append(cached[1])
            return "{\n" + ",\n".join(out) + "\n  }" if out else "{}"

        text = (f'{{\n  "version": {FORMAT_VERSION},\n'
                f'  "peers": {section("p", self.peers)},\n'
                f'  "addresses": {section("a", self.pins)}\n}}\n')
        self.lines = memo
        return text.encode()



class TrustStorage(Protocol):
    """See the module docstring for the contract."""

    @property
    def blocking(self) -> bool: ...

    @property
    def corrupt_backups(self) -> list[Path]: ...

    def read(self) -> TrustState: ...

    def update(self, apply: Callable[[TrustState], _T]) -> _T: ...


class MemoryTrustStorage:
    """A ``TrustStorage`` in memory: nothing survives the process; nothing blocks.

    ``update`` applies to a copy and swaps it in, so an ``apply`` that raises stores
    nothing, as with the file. Thread-safe.
    """

    blocking = False

    def __init__(self) -> None:
        self._state = TrustState.empty()
        self._lock = threading.Lock()
        self.corrupt_backups: list[Path] = []   # memory is never corrupt

    def read(self) -> TrustState:
        with self._lock:
            return self._state.copy()

    def update(self, apply: Callable[[TrustState], _T]) -> _T:
        with self._lock:
            state = self._state.copy()
            result = apply(state)
            self._state = state
            return result


class FileTrustStorage:
    """``trusted_peers.json`` in ``data_dir`` (see the module docstring).

    ``clock`` names the moved-aside copies of a corrupt file; ``lock_timeout`` (seconds)
    bounds the wait for another process's update (then ``TrustStoreLockedError``).
    Reads take no lock (a rename is atomic) unless the file is corrupt. The last parse
    is cached keyed by the file's exact bytes, so unchanged files are not re-parsed.
    """

    blocking = True

    def __init__(self, data_dir: Path, *, clock: Clock | None = None,
                 lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / TRUST_FILE_NAME
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.corrupt_backups: list[Path] = []
        self._cached: tuple[bytes | None, TrustState] = (None, TrustState.empty())
        self._lock = filelock.FileLock(self.data_dir / (TRUST_FILE_NAME + ".lock"),
                                       timeout=lock_timeout, mode=0o600,
                                       poll_interval=_LOCK_POLL)

    def read(self) -> TrustState:
        data = read_regular(self.path, MAX_TRUST_FILE)  # DataFileError: a FIFO, too big...
        if data is None:
            return TrustState.empty()
        try:
            return self._parse(data)
        except ValueError:
            with self._locked():       # only one process may move the file aside
                return self._load_locked()[0]

    def update(self, apply: Callable[[TrustState], _T]) -> _T:
        """Lock, re-read, apply, write if anything changed, unlock."""
        with self._locked():
            state, on_disk = self._load_locked()
            result = apply(state)
            if on_disk is None and not state.peers and not state.pins:
                return result      # nothing to store: create no file
            after = state.to_bytes()
            if after != on_disk:
                atomic_write(self.path, after, mode=0o600)
                self._cached = (after, state.copy())
            return result

    def _load_locked(self) -> tuple[TrustState, bytes | None]:
        """The state, and the file's bytes (None if there is no file, or it was corrupt
        and has just been moved aside)."""
        data = read_regular(self.path, MAX_TRUST_FILE)
        if data is None:
            return TrustState.empty(), None
        try:
            return self._parse(data), data
        except ValueError as exc:
            self._move_aside(str(exc))
            return TrustState.empty(), None

    def _parse(self, data: bytes) -> TrustState:
        """Parse the file, reusing the last parse when the bytes are identical (exact,
        so never stale: another process's write changes the bytes)."""
        cached = self._cached          # one read: other threads may replace it
        if data != cached[0]:
            cached = (data, TrustState.from_bytes(data))
            self._cached = cached
        return cached[1].copy()

    def _move_aside(self, problem: str) -> None:
        stamp = datetime.fromtimestamp(self.clock.now(), UTC).strftime("%Y%m%dT%H%M%SZ")
        backup = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while backup.exists():
            backup = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        os.rename(self.path, backup)
        self.corrupt_backups.append(backup)
        log.error("trust.store_corrupt", path=str(self.path), moved_to=str(backup),
                  problem=problem,
                  message=f"corrupt trust store {self.path} ({problem}); moved to"
                          f" {backup}; continuing with an empty trust store")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        ensure_data_dir(self.data_dir)
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise TrustStoreLockedError(
                f"{self._lock.lock_file}: trust store locked by another process for"
                f" more than {self._lock.timeout:g} s") from None
        except OSError as exc:  # e.g. a directory where the lock file goes
            raise DataFileError(self._lock.lock_file,
                                f"cannot take the lock: {exc.strerror}") from None
        try:
            yield
        finally:
            self._lock.release()
