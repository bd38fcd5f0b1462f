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
- With no rendezvous (a node running the DHT): ``invite`` draws a random number and
  serves the code on our own connections (``serve_direct``, for
  ``protocols.roomadmit``); ``join(name, code)`` runs the admission with a member the
  room's DHT record lists (``direct``, wired to ``stack.node.roomdht``). Rooms we enter
  or admit someone to are passed to ``changed`` (the node: put the room's DHT record now).
- ``invite(name, pin=True)``: seed 002's PIN challenge (``rooms.pin``): after the
  newcomer's PAKE our node draws a PIN and shows it (a ``RoomPinIssued`` event, and
  ``invite_wait``, which ``room invite --pin`` uses to print it); we admit only if the
  newcomer's user types it. ``invite_wait(name, number, after)`` answers the invite's
  next state after ``after``: ``open`` -> ``pin`` -> ``admitted`` | ``failed`` (with the
  reason) | ``expired``.
- ``join`` of a PIN invite answers ``{"pin_required": true, "digits", "expires"}`` once the
  inviter's challenge arrives (a ``RoomPinRequested`` event) and keeps the admission
  waiting; ``pin(name, pin)`` sends what the user typed (``InvalidPin``: not the digits
  asked for, nothing sent, ask again; None: the user declined, ``NoPin``) and finishes the
  join as above, or raises the named refusal (``WrongPin`` ...).

What follows an admission (the newcomer reaching its inviter directly, introductions to
the other members and their own checks, the trust graph, kick) is ``stack.node.roomtrust``.
The shared state is ``stack.node.roomsync``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from stack.base.clock import Clock
from stack.base.errors import CorruptFileError, LocalError, StackError, UsageError
from stack.transport.errors import TransportClosed, TransportError
from stack.base.addresses import parse_address
from stack.base.files import atomic_write, read_regular
from stack.base.identity import Identity, PeerId
from stack.base.interfaces import Connection, Stream
from rooms.admission import AdmissionFailed, Admitted, InviterSession, ReplayGuard, peek_pake1
from rooms.invites import MAX_INVITE_NUMBER, InviteBook, InviteCode, parse_code
from rooms.membership import DEFAULT_MEMBER_TTL, MAX_MEMBER_ADDRS, sign_member
from rooms.names import normalize_room_name, room_id
from rooms.pin import PinIssued, PinRequested, normalize_pin
from stack.node.events import (EventBus, RoomAdmissionFailed, RoomAdmitted, RoomPinIssued,
                               RoomPinRequested)
from stack.node.protocols.rendezvous import (HostedInvite, announce, host_invite, join,
                                             serve_invite)
from stack.node.protocols.roomadmit import AskPin, drive
from stack.store.trust import TrustStore

__all__ = ["NodeRooms", "Room", "UnknownRoom", "RoomExists", "NoRendezvous", "NoPinAsked",
           "UnknownInvite", "ROOMS_FILE", "INVITE_STATES"]

log = structlog.get_logger("p2pstack.rooms")

ROOMS_FILE = "rooms.json"
MAX_ROOMS_FILE = 1 << 20
REFRESH = DEFAULT_MEMBER_TTL / 2  # seconds between membership announcements
INVITE_STATES = ("open", "pin", "admitted", "failed", "expired")
MAX_WATCHED_INVITES = 256  # invite states kept for invite_wait (the oldest ended go first)


class UnknownRoom(UsageError):
    """This node is not in a room of that name."""


class RoomExists(LocalError):
    """This node is already in a room of that name."""


class NoRendezvous(UsageError):
    """The room has no rendezvous, and this step needs one (``--rendezvous ADDR``)."""


class NoPinAsked(UsageError):
    """``room pin``: no join of that room is waiting for a PIN."""


class UnknownInvite(UsageError):
    """``invite_wait``: this node issued no invite of that number in that room."""


@dataclass
class _InviteState:
    """What happened so far to one invite we issued (for ``invite_wait``)."""

    state: str = "open"
    detail: dict[str, Any] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def move(self, state: str, **detail: Any) -> None:
        self.state, self.detail = state, detail
        old, self.changed = self.changed, asyncio.Event()
        old.set()


@dataclass
class _PendingJoin:
    """A join whose inviter asked for a PIN: the admission waits in ``task``."""

    code: InviteCode
    rendezvous: str | None
    conn: Connection | None
    request: PinRequested
    task: asyncio.Task[Admitted | StackError]
    answer: asyncio.Future[str | None]
    reported: bool = False


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
                 spawn: Callable[[Any], asyncio.Task[Any]], path: Path | None,
                 timeout: float) -> None:
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
        # admissions by role and outcome: "inviter.admitted", "inviter.wrong_pin", ...
        self.stats: Counter[str] = Counter()
        self.guard = ReplayGuard()
        self._invites: dict[tuple[str, int], _InviteState] = {}
        self._pending: dict[str, _PendingJoin] = {}
        # told the name of a room we entered or admitted someone to (the node wires it
        # to the room's DHT record)
        self.changed: Callable[[str], None] = lambda name: None
        # a join with no rendezvous: the admission with a member the room's DHT record
        # lists (the node wires it to ``RoomDht.admit``; None: no DHT, so no such join)
        self.direct: Callable[[str, InviteCode, AskPin], Awaitable[Admitted]] | None = None

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
        self.changed(text)
        return room.report()

    async def invite(self, name: str, ttl: float | None = None,
                     pin: bool = False) -> dict[str, Any]:
        room = self._room(name)
        if not isinstance(pin, bool):
            raise UsageError("pin is true or false")
        if room.rendezvous is None and self.direct is None:
            raise NoRendezvous(f"room {room.name!r} has no rendezvous and this node no DHT: "
                               "create or join it with --rendezvous ADDR")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float))
                                or not 0 < ttl <= 3600):
            raise UsageError("an invite lives 0..3600 seconds")
        conn = None if room.rendezvous is None else await self._reach(room, room.rendezvous)
        if conn is None:
            return self._direct_invite(room, ttl, pin)
        try:
            await self._announce(room, conn)  # the rendezvous hosts invites for members only
            hosted = await host_invite(conn, room.room_id, self._timeout)
        except (TransportError, TransportClosed, TimeoutError) as exc:
            # the connection we held went dead (a refusal by name is not caught here)
            if self.direct is None:
                raise
            self._unreachable(room.name, str(room.rendezvous), exc)
            return self._direct_invite(room, ttl, pin)
        now = self._clock.now()
        life = min(hosted.expires - now, ttl if ttl is not None else self.book.ttl)
        invite = self.book.create(room.room_id, now, number=hosted.number, ttl=life, pin=pin)
        self._watch_invite(room.name, invite.number)
        self._spawn(self._serve(room, hosted))
        return {"room": room.name, "code": str(invite.code), "number": invite.number,
                "expires": invite.expires_at, "pin": pin}

    async def _reach(self, room: Room | str, rendezvous: str) -> Connection | None:
        """A connection to ``rendezvous``; when it cannot be reached and we have a DHT,
        None: the invite or join goes through the room's DHT record instead (the
        rendezvous is a convenience, issue 13 section 1). Without a DHT its error."""
        try:
            return await self._connect(rendezvous)
        except (StackError, TimeoutError) as exc:
            if self.direct is None:
                raise
            self._unreachable(room if isinstance(room, str) else room.name, rendezvous, exc)
            return None

    def _unreachable(self, name: str, rendezvous: str, exc: BaseException) -> None:
        self.stats["rendezvous_unreachable"] += 1
        log.warning("room.rendezvous_unreachable", room=name, rendezvous=rendezvous,
                    error=f"{type(exc).__name__}: {exc}"[:200],
                    message="going through the room's DHT record instead")

    def _direct_invite(self, room: Room, ttl: float | None, pin: bool) -> dict[str, Any]:
        """An invite served on our own connections (``/p2pstack/room-admit/1``): the
        newcomer finds us through the room's DHT record. With no rendezvous to allocate
        numbers, ours is random, so members' open invites rarely share one (a newcomer
        whose number another member holds too meets that member's invite first: its code
        fails there as a wrong one, and the invite it meant stays open)."""
        now = self._clock.now()
        self.book.expire(now)
        taken = {i.number for i in self.book.open_invites(now) if i.room_id == room.room_id}
        number = next(n for n in iter(lambda: 1 + secrets.randbelow(MAX_INVITE_NUMBER), 0)
                      if n not in taken and self.book.get(room.room_id, n) is None)
        invite = self.book.create(room.room_id, now, number=number, ttl=ttl, pin=pin)
        state = self._watch_invite(room.name, number)
        # Our record is put again now, so the room's freshest record names us first: a
        # record lists the members its signer knows, and another's may not list us.
        self.changed(room.name)

        async def expire() -> None:  # nobody came: the invite's state says so
            await asyncio.sleep(max(0.0, invite.expires_at - self._clock.now()))
            if state.state == "open":
                state.move("expired")

        self._spawn(expire())
        return {"room": room.name, "code": str(invite.code), "number": number,
                "expires": invite.expires_at, "pin": pin}

    def has_invite(self, rid: bytes, number: int) -> bool:
        """An open invite of ours with that number in that room (``room-admit``)."""
        invite = self.book.get(rid, number)
        return invite is not None and not invite.used and invite.expires_at > self._clock.now()

    async def serve_direct(self, conn: Connection, stream: Stream, first: bytes) -> None:
        """A newcomer's PAKE1 for one of our invites on a direct connection."""
        peek = peek_pake1(first)
        room = next((r for r in self._load().values()
                     if peek is not None and r.room_id == peek[0]), None)
        if room is None:
            stream.reset()
            return
        session = InviterSession(self._identity, self.book, self.guard, first,
                                 self._clock.now(), room_id=room.room_id)
        await drive(session, stream, self._clock,
                    on_pin=lambda issued: self._pin_issued(room, issued))
        await self._settled(room, session.number, session.result)

    def _watch_invite(self, name: str, number: int) -> _InviteState:
        if len(self._invites) >= MAX_WATCHED_INVITES:
            ended = [k for k, s in self._invites.items() if s.state not in ("open", "pin")]
            for key in ended[:len(self._invites) - MAX_WATCHED_INVITES + 1]:
                del self._invites[key]
        state = self._invites[(name, number)] = _InviteState()
        return state

    async def invite_wait(self, name: str, number: int, after: str = "open") -> dict[str, Any]:
        """The state of our invite ``number`` once it is no longer ``after`` (see the
        module docstring); at once if it moved on already."""
        room = self._room(name)
        if after not in INVITE_STATES:
            raise UsageError(f"after is one of {', '.join(INVITE_STATES)}")
        state = self._invites.get((room.name, number)) if type(number) is int else None
        if state is None:
            raise UnknownInvite(f"this node issued no invite {number!r} in room {room.name!r}")
        while state.state == after and after in ("open", "pin"):
            await state.changed.wait()
        return {"room": room.name, "number": number, "state": state.state, **state.detail}

    def _pin_issued(self, room: Room, issued: PinIssued) -> None:
        state = self._invites.get((room.name, issued.number))
        if state is not None:
            state.move("pin", pin=issued.pin, newcomer=str(issued.newcomer),
                       expires=issued.expires)
        self._events.emit(RoomPinIssued(room.name, issued.number, issued.newcomer, issued.pin,
                                        issued.expires), "warning")

    async def _serve(self, room: Room, hosted: HostedInvite) -> None:
        state = self._invites.get((room.name, hosted.number)) or _InviteState()
        try:
            result = await serve_invite(hosted, identity=self._identity, book=self.book,
                                        guard=self.guard, room_id=room.room_id,
                                        clock=self._clock,
                                        on_pin=lambda issued: self._pin_issued(room, issued))
        except BaseException:
            state.move("failed", reason="aborted")
            raise
        await self._settled(room, hosted.number, result)

    async def _settled(self, room: Room, number: int,
                       result: Admitted | AdmissionFailed | None) -> None:
        """An invite's outcome: bookkeeping, the invite's state and our report."""
        state = self._invites.get((room.name, number)) or _InviteState()
        if result is None:
            state.move("expired")
        elif isinstance(result, AdmissionFailed):
            state.move("failed", reason=result.error.reason)
        if isinstance(result, Admitted):
            await self._trust.check_peer_async(result.peer_id, source="invite")
            room.admitted[result.peer_id] = result.admission.raw
            await self._save()
            self._events.emit(RoomAdmitted(room.name, result.peer_id, "inviter",
                                           result.number))
            state.move("admitted", peer_id=str(result.peer_id))
            self.stats["inviter.admitted"] += 1
            self.changed(room.name)
        elif isinstance(result, AdmissionFailed):
            self.stats[f"inviter.{result.error.reason}"] += 1
            self._events.emit(RoomAdmissionFailed(room.name, result.number,
                                                  result.error.reason, "inviter"),
                              "warning")

    async def join(self, name: str, code: str, rendezvous: str | None = None) -> dict[str, Any]:
        """Join with an invite code through ``rendezvous``, or with none through a member
        the room's DHT record lists (``NoRendezvous`` if this node has no DHT)."""
        text = normalize_room_name(name)
        parsed = parse_code(code)  # a typo is a usage error here, before any network
        if rendezvous is not None:
            _check_address(rendezvous)
        elif self.direct is None:
            raise NoRendezvous("this node has no DHT to find the room in: join with "
                               "--rendezvous ADDR")
        rooms = self._load()
        if text in rooms:
            raise RoomExists(f"this node is already in room {text!r}")
        waiting = self._pending.get(text)
        if waiting is not None and not waiting.task.done():
            raise RoomExists(f"a join of room {text!r} is waiting for its PIN ('room pin')")
        conn = None if rendezvous is None else await self._reach(text, rendezvous)
        loop = asyncio.get_running_loop()
        asked: asyncio.Future[PinRequested] = loop.create_future()
        answer: asyncio.Future[str | None] = loop.create_future()

        async def ask(request: PinRequested) -> str | None:
            if not asked.done():  # one challenge per join: one session gets that far
                asked.set_result(request)
            return await answer

        async def attempt() -> Admitted | StackError:
            try:
                if conn is None:
                    assert self.direct is not None
                    return await self.direct(text, parsed, ask)
                return await join(conn, identity=self._identity, room_id=room_id(text),
                                  code=parsed, clock=self._clock, timeout=self._timeout,
                                  guard=self.guard, ask=ask)
            except StackError as exc:  # the outcome, handed to whoever finishes the join
                return exc

        task = self._spawn(attempt())
        try:
            await asyncio.wait({task, asked}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the caller went away before a PIN was asked
            task.cancel()
            raise
        if task.done():
            return await self._finish_join(text, parsed, rendezvous, conn, task.result())
        request = asked.result()
        pending = self._pending[text] = _PendingJoin(parsed, rendezvous, conn, request, task,
                                                     answer)
        task.add_done_callback(lambda _: self._unanswered(text, pending))
        self._events.emit(RoomPinRequested(text, parsed.number, request.digits,
                                           request.expires), "warning")
        return {"room": text, "pin_required": True, "number": parsed.number,
                "digits": request.digits, "expires": request.expires}

    def _unanswered(self, name: str, pending: _PendingJoin) -> None:
        """A PIN-waiting join ended before anyone answered (timed out, the carrier went
        away): report it now; ``pin`` names it later."""
        outcome = pending.task.result() if not pending.task.cancelled() else None
        if self._pending.get(name) is pending and isinstance(outcome, StackError) \
                and not pending.answer.done():
            pending.reported = True
            self._failed(name, pending.code.number, outcome)

    def _failed(self, name: str, number: int, exc: StackError) -> None:
        reason = getattr(exc, "reason", type(exc).__name__)
        self.stats[f"newcomer.{reason}"] += 1
        self._events.emit(RoomAdmissionFailed(name, number, str(reason), "newcomer"),
                          "warning")

    async def pin(self, name: str, pin: str | None) -> dict[str, Any]:
        """Answer the PIN challenge of our waiting join of room ``name`` (see the module
        docstring); returns what ``join`` returns once admitted."""
        text = normalize_room_name(name)
        pending = self._pending.get(text)
        if pending is None:
            raise NoPinAsked(f"no join of room {text!r} is waiting for a PIN")
        typed = None if pin is None else normalize_pin(pin, pending.request.digits)
        del self._pending[text]
        if not pending.answer.done():
            pending.answer.set_result(typed)
        outcome = await asyncio.shield(pending.task)
        if isinstance(outcome, StackError) and pending.reported:
            raise outcome
        return await self._finish_join(text, pending.code, pending.rendezvous, pending.conn,
                                       outcome)

    async def _finish_join(self, text: str, parsed: InviteCode, rendezvous: str | None,
                           conn: Connection | None,
                           outcome: Admitted | StackError) -> dict[str, Any]:
        if isinstance(outcome, StackError):
            self._failed(text, parsed.number, outcome)
            raise outcome
        admitted = outcome
        rooms = self._load()
        await self._trust.check_peer_async(admitted.peer_id, source="invite")
        room = Room(text, admin=False, rendezvous=rendezvous, admitted_by=admitted.peer_id,
                    admission=admitted.admission.raw)
        rooms[text] = room
        await self._save()
        self.stats["newcomer.admitted"] += 1
        self._events.emit(RoomAdmitted(text, admitted.peer_id, "newcomer", parsed.number))
        if conn is not None:  # None: the rendezvous was down; the refresh retries it
            with contextlib.suppress(StackError):  # admitted either way; the refresh retries
                await self._announce(room, conn)
        self._refresh(room)
        self.changed(text)
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
