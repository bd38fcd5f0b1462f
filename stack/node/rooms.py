"""The node's rooms (issue 13): what ``p2pstack room create|invite|join|list`` do.

A room this node is in: its name, id, whether we are its admin (we created it), the
rendezvous we use for it, who admitted us (and the signed admission), and the members we
admitted ourselves. ``rooms.json`` in the data directory holds them (atomically written,
0600; a corrupt file is a ``CorruptFileError`` for the room commands and is kept);
a node built with in-memory stores (a simulation) keeps them in memory only.

- ``create(name, rendezvous)``: we are the admin; with a rendezvous, our signed membership
  announcement is stored there (and refreshed by the ``room.announce NAME`` service).
- ``invite(name)``: an invite slot on the room's rendezvous (its number starts the code),
  a fresh code in our ``InviteBook`` and a task that serves the slot: the newcomer's PAKE
  (``rooms.admission``) runs through the rendezvous, which cannot read it. The outcome is
  a ``RoomAdmitted`` or ``RoomAdmissionFailed`` event (the failed attempt the inviter
  reports: ``reason`` ``wrong_code`` ...); an admitted newcomer enters the trust store
  with source ``invite``.
- ``join(name, code, rendezvous)``: the newcomer's side; on admission the inviter enters
  our trust store with source ``invite``, the room is saved with its admission, and we
  announce ourselves at the rendezvous.

What follows an admission (the newcomer reaching its inviter directly, introductions to
the other members and their own checks, the trust graph, kick) is ``stack.node.roomtrust``.
Not yet: the PIN flow. The shared state is ``stack.node.roomsync``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from stack.base.clock import Clock
from stack.base.errors import CorruptFileError, LocalError, StackError, UsageError
from stack.base.addresses import parse_address
from stack.base.files import atomic_write, read_regular
from stack.base.identity import Identity, PeerId
from stack.base.interfaces import Connection
from rooms.admission import AdmissionFailed, Admitted, ReplayGuard
from rooms.invites import InviteBook, parse_code
from rooms.membership import DEFAULT_MEMBER_TTL, MAX_MEMBER_ADDRS, sign_member
from rooms.names import normalize_room_name, room_id
from stack.node.events import EventBus, RoomAdmissionFailed, RoomAdmitted
from stack.node.protocols.rendezvous import (HostedInvite, announce, host_invite, join,
                                             serve_invite)
from stack.store.trust import TrustStore

__all__ = ["NodeRooms", "Room", "UnknownRoom", "RoomExists", "NoRendezvous", "ROOMS_FILE"]

log = structlog.get_logger("p2pstack.rooms")

ROOMS_FILE = "rooms.json"
MAX_ROOMS_FILE = 1 << 20
REFRESH = DEFAULT_MEMBER_TTL / 2  # seconds between membership announcements


class UnknownRoom(UsageError):
    """This node is not in a room of that name."""


class RoomExists(LocalError):
    """This node is already in a room of that name."""


class NoRendezvous(UsageError):
    """The room has no rendezvous, and this step needs one (``--rendezvous ADDR``)."""


@dataclass
class Room:
    name: str
    admin: bool
    rendezvous: str | None = None
    admitted_by: PeerId | None = None
    admission: bytes | None = None
    admitted: dict[PeerId, bytes] = field(default_factory=dict)  # by us: newcomer -> admission

    @property
    def room_id(self) -> bytes:
        return room_id(self.name)

    def report(self) -> dict[str, Any]:
        return {"room": self.name, "room_id": self.room_id.hex(), "admin": self.admin,
                "rendezvous": self.rendezvous,
                "admitted_by": None if self.admitted_by is None else str(self.admitted_by),
                "admitted": sorted(str(p) for p in self.admitted)}

    def to_json(self) -> dict[str, Any]:
        b64 = base64.b64encode
        return {"admin": self.admin, "rendezvous": self.rendezvous,
                "admitted_by": None if self.admitted_by is None else str(self.admitted_by),
                "admission": None if self.admission is None else b64(self.admission).decode(),
                "admitted": {str(p): b64(a).decode() for p, a in self.admitted.items()}}

    @classmethod
    def from_json(cls, name: str, obj: dict[str, Any]) -> Room:
        by = obj["admitted_by"]
        adm = obj["admission"]
        return cls(normalize_room_name(name), bool(obj["admin"]), obj["rendezvous"],
                   None if by is None else PeerId.parse(by),
                   None if adm is None else base64.b64decode(adm, validate=True),
                   {PeerId.parse(p): base64.b64decode(a, validate=True)
                    for p, a in obj["admitted"].items()})


def _check_address(text: object) -> None:
    """A rendezvous address must parse (``UsageError`` otherwise) before we dial it."""
    if not isinstance(text, str):
        raise UsageError("a rendezvous address is a multiaddr or HOST:PORT (text)")
    parse_address(text)


class NodeRooms:
    """The rooms of one node (see the module docstring)."""

    def __init__(self, *, identity: Identity, clock: Clock, events: EventBus,
                 trust: TrustStore, connect: Callable[[str], Awaitable[Connection]],
                 addrs: Callable[[], list[str]],
                 run_service: Callable[[str, Callable[[], Awaitable[None]]], None],
                 spawn: Callable[[Any], object], path: Path | None, timeout: float) -> None:
        self._identity = identity
        self._clock = clock
        self._events = events
        self._trust = trust
        self._connect = connect
        self._addrs = addrs
        self._run_service = run_service
        self._spawn = spawn
        self._path = path
        self._timeout = timeout
        self._rooms: dict[str, Room] | None = None  # loaded on first use
        self._refreshing: set[str] = set()
        self._saving = asyncio.Lock()
        self.book = InviteBook()
        self.guard = ReplayGuard()

    # ------------------------------------------------------------------- storage

    def _load(self) -> dict[str, Room]:
        if self._rooms is not None:
            return self._rooms
        rooms: dict[str, Room] = {}
        data = None if self._path is None else read_regular(self._path, MAX_ROOMS_FILE)
        if data is not None:
            try:
                obj = json.loads(data)
                if obj.get("version") != 1:
                    raise ValueError("unknown version")
                for name, entry in obj["rooms"].items():
                    room = Room.from_json(name, entry)
                    rooms[room.name] = room
            except (ValueError, KeyError, TypeError, AttributeError, StackError) as exc:
                assert self._path is not None
                raise CorruptFileError(self._path, f"not a rooms file ({exc}); it was left "
                                                   "untouched") from None
        self._rooms = rooms
        return rooms

    async def _save(self) -> None:
        """Write the rooms (off the event loop); one write at a time, each of the state
        as it is when its turn comes, so an older state never lands after a newer one."""
        if self._path is None or self._rooms is None:
            return
        async with self._saving:
            body = {"version": 1,
                    "rooms": {n: r.to_json() for n, r in sorted(self._rooms.items())}}
            data = (json.dumps(body, indent=2) + "\n").encode()
            await asyncio.to_thread(atomic_write, self._path, data)

    def _room(self, name: str) -> Room:
        room = self._load().get(normalize_room_name(name))
        if room is None:
            raise UnknownRoom(f"this node is in no room called {name!r}")
        return room

    def resume(self) -> None:
        """At node start: keep announcing ourselves in the rooms we were in (a corrupt
        rooms file is logged here and named again by every room command)."""
        try:
            rooms = self._load()
        except StackError as exc:
            log.warning("rooms.unusable", error=str(exc))
            return
        for room in rooms.values():
            self._refresh(room, now=True)

    # ------------------------------------------------------------------ commands

    def list(self) -> dict[str, Any]:
        return {"rooms": [r.report() for _, r in sorted(self._load().items())]}

    async def create(self, name: str, rendezvous: str | None = None) -> dict[str, Any]:
        text = normalize_room_name(name)
        if rendezvous is not None:
            _check_address(rendezvous)
        rooms = self._load()
        if text in rooms:
            raise RoomExists(f"this node is already in room {text!r}")
        room = Room(text, admin=True, rendezvous=rendezvous)
        if rendezvous is not None:
            await self._announce(room)
        rooms[text] = room
        await self._save()
        self._refresh(room)
        return room.report()

    async def invite(self, name: str, ttl: float | None = None) -> dict[str, Any]:
        room = self._room(name)
        if room.rendezvous is None:
            raise NoRendezvous(f"room {room.name!r} has no rendezvous: create or join it "
                               "with --rendezvous ADDR")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float))
                                or not 0 < ttl <= 3600):
            raise UsageError("an invite lives 0..3600 seconds")
        conn = await self._connect(room.rendezvous)
        await self._announce(room, conn)  # the rendezvous hosts invites for members only
        hosted = await host_invite(conn, room.room_id, self._timeout)
        now = self._clock.now()
        life = min(hosted.expires - now, ttl if ttl is not None else self.book.ttl)
        invite = self.book.create(room.room_id, now, number=hosted.number, ttl=life)
        self._spawn(self._serve(room, hosted))
        return {"room": room.name, "code": str(invite.code), "number": invite.number,
                "expires": invite.expires_at}

    async def _serve(self, room: Room, hosted: HostedInvite) -> None:
        result = await serve_invite(hosted, identity=self._identity, book=self.book,
                                    guard=self.guard, room_id=room.room_id, clock=self._clock)
        if isinstance(result, Admitted):
            await self._trust.check_peer_async(result.peer_id, source="invite")
            room.admitted[result.peer_id] = result.admission.raw
            await self._save()
            self._events.emit(RoomAdmitted(room.name, result.peer_id, "inviter",
                                           result.number))
        elif isinstance(result, AdmissionFailed):
            self._events.emit(RoomAdmissionFailed(room.name, result.number,
                                                  result.error.reason, "inviter"),
                              "warning")

    async def join(self, name: str, code: str, rendezvous: str) -> dict[str, Any]:
        text = normalize_room_name(name)
        parsed = parse_code(code)  # a typo is a usage error here, before any network
        _check_address(rendezvous)
        rooms = self._load()
        if text in rooms:
            raise RoomExists(f"this node is already in room {text!r}")
        conn = await self._connect(rendezvous)
        try:
            admitted = await join(conn, identity=self._identity, room_id=room_id(text),
                                  code=parsed, clock=self._clock, timeout=self._timeout,
                                  guard=self.guard)
        except StackError as exc:
            reason = getattr(exc, "reason", type(exc).__name__)
            self._events.emit(RoomAdmissionFailed(text, parsed.number, str(reason),
                                                  "newcomer"), "warning")
            raise
        await self._trust.check_peer_async(admitted.peer_id, source="invite")
        room = Room(text, admin=False, rendezvous=rendezvous, admitted_by=admitted.peer_id,
                    admission=admitted.admission.raw)
        rooms[text] = room
        await self._save()
        self._events.emit(RoomAdmitted(text, admitted.peer_id, "newcomer", parsed.number))
        with contextlib.suppress(StackError):  # admitted either way; the refresh retries
            await self._announce(room, conn)
        self._refresh(room)
        return room.report()

    # ------------------------------------------------------------- announcements

    async def _announce(self, room: Room, conn: Connection | None = None) -> None:
        assert room.rendezvous is not None
        if conn is None:
            conn = await self._connect(room.rendezvous)
        record = sign_member(self._identity, room.room_id, self._addrs()[:MAX_MEMBER_ADDRS],
                             self._clock.now())
        await announce(conn, record, self._timeout)

    def _refresh(self, room: Room, now: bool = False) -> None:
        if room.rendezvous is None or room.name in self._refreshing:
            return
        self._refreshing.add(room.name)
        first = [now]

        async def service() -> None:
            while True:
                if not first[0]:
                    await asyncio.sleep(REFRESH)  # the service's timer
                try:
                    await self._announce(room)
                except BaseException:
                    first[0] = True  # after the supervisor's backoff: retry at once
                    raise
                first[0] = False

        self._run_service(f"room.announce {room.name}", service)
