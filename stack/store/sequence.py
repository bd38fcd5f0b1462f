"""Our own announcement sequence numbers (seed 004: each record's seq must exceed the last).

``SequenceStore`` hands out numbers 1, 2, ...:

- ``next()`` returns a number greater than every number it returned before, and never
  one that any store on the same data (in any process, before or after a restart)
  returned. It is synchronous and, while numbers are reserved, does no I/O.
- ``prefetch()`` starts reserving more numbers in the background if few are left
  (never blocks); ``await ready()`` waits for a reservation in flight (off the loop).

``FileSequence`` keeps the high-water mark in ``sequence`` in the data directory (text,
one decimal number and a newline, as before). It reserves ``block`` numbers at a time:
under ``sequence.lock`` it reads the mark M, writes M + block atomically (temp + fsync +
rename) and only then hands out M+1 .. M+block from memory. So a crash or ``kill -9``
at any moment loses at most the unused rest of a block (numbers are skipped, never
repeated, never smaller: a restart continues above the mark). When ``block // 2`` or
fewer reserved numbers are left, ``next()`` starts the next reservation on a
background thread; only if every reserved number is used before it finishes does
``next()`` wait for it (or, with nothing reserved and nothing in flight, reserve in the
calling thread). ``waits`` counts those blocking calls. ``block=1`` is the old
one-write-per-number behaviour, with no background thread (``next_sequence``,
used by one-shot CLI commands).

Across processes, numbers never collide, but with ``block > 1`` they are not handed out
in time order: a process reserving after a node reserved gets numbers above the node's
whole block, and the node's later numbers are then below them. When a reservation finds
the mark above its own previous block, the unused rest of that block is dropped, which
bounds the overlap to one block. Publish for one identity from one process at a time
(the running node; the CLI talks to it through the control API).

``MemorySequence`` counts in memory (simulations, unit tests); reuse one object across
a simulated restart to keep its numbers growing.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Protocol


from stack.base.errors import CorruptFileError, LocalError
from stack.store.locking import data_file_lock
from stack.base.files import atomic_write, ensure_data_dir, read_regular
from stack.base.records import MAX_SEQ

__all__ = ["SEQUENCE_FILE_NAME", "SequenceStore", "FileSequence", "MemorySequence",
           "next_sequence", "DEFAULT_BLOCK"]

SEQUENCE_FILE_NAME = "sequence"
DEFAULT_BLOCK = 64


class SequenceStore(Protocol):
    """See the module docstring for the contract."""

    def next(self) -> int: ...

    def prefetch(self) -> None: ...

    async def ready(self) -> None: ...


class MemorySequence:
    """A ``SequenceStore`` in memory, starting after ``last``."""

    def __init__(self, last: int = 0) -> None:
        self._last = last
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            if self._last >= MAX_SEQ:
                raise LocalError("sequence numbers exhausted")
            self._last += 1
            return self._last

    def prefetch(self) -> None:
        pass

    async def ready(self) -> None:
        pass


class FileSequence:
    """``sequence`` in ``data_dir``, reserved ``block`` numbers at a time (module docstring).

    ``CorruptFileError`` (naming the file, which is kept) if it holds anything but a
    number below ``MAX_SEQ``; it is raised by the ``next()`` that needed the
    reservation (a failed background reservation is retried, and its error raised by
    the ``next()`` that has to wait for it, or by ``ready()``).
    """

    def __init__(self, data_dir: Path, *, block: int = DEFAULT_BLOCK) -> None:
        if block < 1:
            raise ValueError("block must be at least 1")
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / SEQUENCE_FILE_NAME
        self.block = block
        self.waits = 0                      # next() calls that had to wait for a write
        self._lock = threading.Lock()       # guards everything below; never held
                                            # during file I/O
        self._next = 1                      # the next number to hand out ...
        self._limit = 0                     # ... if it is <= this (reserved, on disk)
        self._pending: tuple[int, int] | None = None   # reserved, not yet in use
        self._refill: Future[None] | None = None

    def next(self) -> int:
        with self._lock:
            while True:
                self._take_pending_locked()
                if self._next <= self._limit:
                    break
                # every reserved number is used: wait for the reservation in flight,
                # or make one here (blocking; counted)
                self.waits += 1
                refill = self._refill
                self._lock.release()
                try:
                    if refill is None:
                        self._reserve_into_pending()
                    else:
                        refill.result()   # a failed background reservation raises here
                finally:
                    self._lock.acquire()
                    if refill is not None and self._refill is refill:
                        self._refill = None
            seq = self._next
            self._next += 1
            self._maybe_prefetch_locked()
            return seq

    def prefetch(self) -> None:
        with self._lock:
            self._maybe_prefetch_locked()

    async def ready(self) -> None:
        with self._lock:
            refill = self._refill
        if refill is not None:
            await asyncio.wrap_future(refill)

    # ---------------------------------------------------------------- internals

    def _maybe_prefetch_locked(self) -> None:
        refill = self._refill
        if refill is not None and refill.done():
            self._refill = None   # a failure is retried; next() raises it if it must wait
        left = self._limit - self._next + 1
        if (self.block > 1 and self._refill is None and self._pending is None
                and left <= self.block // 2):
            fut: Future[None] = Future()
            self._refill = fut

            def run() -> None:
                try:
                    self._reserve_into_pending()
                except BaseException as exc:
                    fut.set_exception(exc)
                else:
                    fut.set_result(None)

            threading.Thread(target=run, name="sequence-reserve", daemon=True).start()

    def _take_pending_locked(self) -> None:
        if self._pending is not None and self._next > self._limit:
            self._next, self._limit = self._pending
            self._pending = None

    def _reserve_into_pending(self) -> None:
        """Reserve the next block on disk (blocking; call without ``_lock``) and queue
        it for use after the current one."""
        first, last = self._reserve()
        with self._lock:
            if first > self._limit + 1:
                # another process reserved above our block: the rest of ours would go
                # backwards relative to its numbers, so drop it
                self._limit = min(self._limit, self._next - 1)
            self._pending = (first, last)

    def _reserve(self) -> tuple[int, int]:
        """Under the file lock: read the mark, write mark + block; the new range."""
        ensure_data_dir(self.data_dir)
        with data_file_lock(self.data_dir, SEQUENCE_FILE_NAME):
            mark = read_mark(self.path)
            # a mark above our block (another process reserved) drops our unused rest
            new = min(mark + self.block, MAX_SEQ)
            if new <= mark:
                raise LocalError(f"{self.path}: sequence numbers exhausted")
            atomic_write(self.path, b"%d\n" % new, 0o600)
            return mark + 1, new


def read_mark(path: Path) -> int:
    """The number in a ``sequence`` file (0 if there is none). ``CorruptFileError``."""
    text = read_regular(path, 64)  # DataFileError for a FIFO or a 5,000-digit file
    if text is None:
        return 0
    body = text.strip()
    # 20 digits hold MAX_SEQ; checked first, as int() refuses more than 4,300 digits
    if not body.isdigit() or len(body) > 20 or int(body) >= MAX_SEQ:
        raise CorruptFileError(path, "not a sequence number; it was left untouched")
    return int(body)


def next_sequence(data_dir: Path) -> int:
    """Reserve our next announcement sequence number (1, 2, ...) and persist it before
    returning, under a file lock: no two calls, in any processes, across restarts, ever
    return the same number. Blocking (one fsync'd write per call): for one-shot
    commands; a running node uses a ``FileSequence``. ``CorruptFileError`` if the
    ``sequence`` file is damaged."""
    return FileSequence(Path(data_dir), block=1).next()
