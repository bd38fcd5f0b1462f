"""A node's room documents on disk and in memory (issue 13 section 4), without the network.

``RoomDocs`` holds one ``rooms.state.RoomDoc`` per room we are in (``stack.node.roomsync``
syncs them with the members):

- **Where.** ``DATA_DIR/room_state/<room id hex>.bin`` (``RoomDoc.encode``; atomic, 0600).
  ``save`` writes at once (``room set`` returns once its change is on disk); ``touch``
  writes behind (a member's update: one write at a time per room); ``flush`` writes what
  is behind (at stop). A file that does not decode is a ``CorruptFileError`` naming it,
  raised by every use of the room's document; it is never written over. With no
  directory (a node with in-memory stores) the documents live in memory only.
- **Watch.** Every change (ours or a member's) is a ``RoomStateChanged`` event (debug
  level: a busy room changes many times a second) and a line in a per-room log of the
  last ``WATCH_LOG`` changes, numbered from 1 at node start; ``watch(name, after, wait)``
  is the control API's long poll over that log (``room watch``).
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from stack.base.errors import CorruptFileError, StackError, UsageError
from stack.base.files import atomic_write, read_regular
from stack.base.identity import PeerId
from rooms.state import MAX_UPDATE, Change, CorruptState, RoomDoc
from stack.node.events import EventBus, RoomStateChanged
from stack.node.rooms import NodeRooms

__all__ = ["RoomDocs", "STATE_DIR", "WATCH_LOG", "MAX_WAIT"]

log = structlog.get_logger("p2pstack.roomdocs")

STATE_DIR = "room_state"
MAX_STATE_FILE = MAX_UPDATE + 256 * 1024  # the document plus our admission chain
WATCH_LOG = 1024       # changes kept per room for ``watch``
MAX_WAIT = 60.0        # seconds one ``watch`` call may wait


class RoomDocs:
    """The documents of one node's rooms (see the module docstring)."""

    def __init__(self, *, events: EventBus, rooms: NodeRooms,
                 spawn: Callable[[Any], object], path: Path | None) -> None:
        self._events = events
        self._rooms = rooms
        self._spawn = spawn
        self._dir = path           # None: state in memory only
        self._docs: dict[str, RoomDoc] = {}
        self._dirty: set[str] = set()        # rooms whose file is behind their document
        self._writing: set[str] = set()      # rooms with a write-behind task
        self._locks: dict[str, asyncio.Lock] = {}
        self._log: dict[str, deque[tuple[int, Change]]] = {}
        self._seq: Counter[str] = Counter()  # per room: the number of its last change
        self._wake: dict[str, asyncio.Event] = {}

    def _file(self, room_id: bytes) -> Path | None:
        return None if self._dir is None else self._dir / f"{room_id.hex()}.bin"

    def get(self, name: str) -> tuple[str, RoomDoc]:
        """The room's canonical name and document (``UnknownRoom``; ``CorruptFileError``
        for a state file that does not decode, which stays as it is)."""
        room = self._rooms._room(name)
        doc = self._docs.get(room.name)
        if doc is not None:
            return room.name, doc
        path = self._file(room.room_id)
        data = None if path is None else read_regular(path, MAX_STATE_FILE)

        def observe(change: Change, name: str = room.name) -> None:
            self._changed(name, change)

        if data is None:
            doc = RoomDoc(room.room_id, [] if room.admission is None else [room.admission],
                          on_change=observe)
        else:
            assert path is not None
            try:
                doc = RoomDoc.decode(data, on_change=observe)
            except CorruptState as exc:
                raise CorruptFileError(path, f"{exc}; it was left untouched") from None
            if doc.room_id != room.room_id:
                raise CorruptFileError(path, "the state of another room; it was left "
                                             "untouched")
        self._docs[room.name] = doc
        return room.name, doc

    def _changed(self, name: str, change: Change) -> None:
        """pycrdt's observer: one key changed, by us or by a member's update."""
        self._seq[name] += 1
        self._log.setdefault(name, deque(maxlen=WATCH_LOG)).append((self._seq[name], change))
        origin = None if change.origin is None else PeerId.parse(change.origin)
        # debug: a busy room changes many times a second
        self._events.emit(RoomStateChanged(name, change.key, change.value, origin), "debug")
        wake = self._wake.pop(name, None)
        if wake is not None:
            wake.set()

    # ---------------------------------------------------------------- persistence

    def touch(self, doc: RoomDoc) -> None:
        """``doc`` changed (a member's update): write it behind."""
        name = next((n for n, held in self._docs.items() if held is doc), None)
        if self._dir is None or name is None:
            return
        self._dirty.add(name)
        if name in self._writing:
            return
        self._writing.add(name)

        async def writer() -> None:
            try:
                while name in self._dirty:
                    await self._write(name)
            finally:
                self._writing.discard(name)

        self._spawn(writer())

    async def _write(self, name: str) -> None:
        async with self._locks.setdefault(name, asyncio.Lock()):
            doc = self._docs.get(name)
            path = self._file(doc.room_id) if doc is not None else None
            if doc is None or path is None or name not in self._dirty:
                return
            self._dirty.discard(name)
            data = doc.encode()   # on the loop: a pycrdt document is not shared with threads
            try:
                await asyncio.to_thread(_store, path, data)
            except BaseException:
                self._dirty.add(name)
                raise

    async def save(self, name: str) -> None:
        """Write room ``name``'s document now (``room set`` returns once it is on disk)."""
        if self._dir is not None:
            self._dirty.add(name)
            await self._write(name)

    async def flush(self) -> None:
        """Write every document that is behind (at stop)."""
        for name in sorted(self._dirty):
            try:
                await self._write(name)
            except StackError as exc:
                log.warning("room.state_not_saved", room=name, error=str(exc))

    async def watch(self, name: str, after: int | None = None,
                    wait: float = 30.0) -> dict[str, Any]:
        """``room watch``'s long poll: the changes numbered above ``after`` (waiting up to
        ``wait`` seconds for one); ``after`` None: none, just the number to start from.
        ``missed``: changes that fell out of the log before this call saw them."""
        room, _ = self.get(name)
        if after is None:
            return {"room": room, "next": self._seq[room], "changes": [], "missed": 0}
        if (isinstance(after, bool) or not isinstance(after, int) or after < 0
                or isinstance(wait, bool) or not isinstance(wait, (int, float))
                or not 0 <= wait <= MAX_WAIT):
            raise UsageError(f"watch: after is a change number, wait 0..{MAX_WAIT:g} s")
        if self._seq[room] <= after and wait > 0:
            wake = self._wake.setdefault(room, asyncio.Event())
            try:
                async with asyncio.timeout(wait):
                    await wake.wait()
            except TimeoutError:
                pass
        changes = [(seq, c) for seq, c in self._log.get(room, ()) if seq > after]
        first = changes[0][0] if changes else self._seq[room] + 1
        return {"room": room, "next": self._seq[room], "missed": max(0, first - after - 1),
                "changes": [{"seq": seq, "key": c.key, "value": c.value, "origin": c.origin}
                            for seq, c in changes]}


def _store(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, exist_ok=True)
    atomic_write(path, data)
