"""``/p2pstack/rendezvous/1``: room membership announcements and invite slots (issue 13).

Any public node can serve it (``NodeConfig(rendezvous=True)``, ``p2pstack node
--rendezvous``). It keeps what members announce and carries the admission messages of
``rooms.admission`` between an inviter and a newcomer, as opaque bytes: it sees room ids
(hashes of names), invite numbers and peer ids, never a code, a key or a room's data, so
a compromised rendezvous can deny service and nothing else (its forgeries fail the PAKE).

One request per stream, a msgpack array, the verb first:

===============================  ============================================================
request                          answer
===============================  ============================================================
``["announce", record]``         ``["ok"]`` or ``["error", reason]`` (``rooms.membership``
                                 rules: ``bad_signature``, ``expired``, ``expiry_too_far``,
                                 ``malformed_message``, ``room_full``); FIN
``["members", room_id]``         ``["members", [record, ...]]``: the unexpired signed
                                 announcements as they were signed (callers verify them
                                 again: the rendezvous is not trusted); FIN
``["host", room_id]``            ``["number", n, expires]`` (Unix seconds): an invite slot,
                                 held as long as this stream (at most ``invite_ttl``); n is
                                 the lowest number of the room neither held nor released
                                 in the last ``invite_ttl`` (a late try with an old code
                                 must not meet a new invite).
                                 Refused (``["error", reason]``, FIN) with ``not_member``
                                 unless the caller has an unexpired announcement in the
                                 room, ``slots_full`` beyond the bounds. Once a newcomer
                                 joins the slot, its messages arrive on this stream and
                                 ours go to it
``["join", room_id, n]``         ``["paired"]`` then the two streams carry each other's
                                 messages (``invite_unknown`` if no slot has that number;
                                 a slot pairs once, then it is gone)
===============================  ============================================================

A pairing forwards at most ``max_forwarded`` messages each way of at most
``rooms.admission.MAX_MESSAGE`` bytes, for at most ``pair_timeout`` seconds, then closes
both streams. Every forwarded message passes ``forward(data, to_inviter)``, which returns
it unchanged (a test subclass that alters it plays the compromised rendezvous). Refusals
and forwards are counted in ``stats``.

The client side (``announce``, ``members``, ``host_invite`` + ``serve_invite``, ``join``)
runs the ``rooms`` cores over these streams; a failed admission raises its named
``rooms.errors`` error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from stack.base.clock import Clock
from stack.base.identity import Identity, PeerId
from stack.base.interfaces import Connection, Stream
from rooms.admission import (MAX_MESSAGE, AdmissionFailed, Admitted, InviterSession,
                             ReplayGuard)
from rooms.pin import DEFAULT_PIN_TIMEOUT, PinIssued
from rooms.errors import (ABORT_REASONS, AdmissionAborted, InviteUnknown,
                          MalformedMessage, MembershipError, RoomError)
from rooms.invites import DEFAULT_INVITE_TTL, MAX_INVITE_NUMBER, InviteBook, InviteCode
from rooms.membership import MAX_MEMBER_SIZE, MemberAnnouncement, MemberDirectory, verify_member
from rooms.names import ROOM_ID_LENGTH
from rooms.signed import pack, unpack_verb
from stack.node.protocols.roomadmit import AskPin, drive, run_newcomer
from stack.node.router import open_protocol
from stack.transport.errors import TransportError

__all__ = ["PROTO_RENDEZVOUS", "RendezvousService", "RendezvousLimits", "RendezvousRefused",
           "announce", "members", "host_invite", "serve_invite", "join", "HostedInvite"]

log = structlog.get_logger("p2pstack.rendezvous")

PROTO_RENDEZVOUS = b"/p2pstack/rendezvous/1"
MAX_REQUEST = 64 * 1024  # bytes: a members answer carries up to 64 records of <= 1000


class RendezvousRefused(RoomError):
    """The rendezvous refused a request; ``reason`` is its word for why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the rendezvous refused: {reason}")


@dataclass(frozen=True)
class RendezvousLimits:
    """Bounds of one rendezvous. Times in seconds."""

    max_rooms: int = 1024
    max_members: int = 64          # announcements per room
    max_slots: int = 256           # invite slots held at once
    max_slots_per_peer: int = 8
    invite_ttl: float = DEFAULT_INVITE_TTL
    # a PIN invite waits for a person to read out and type a PIN (rooms.pin)
    pair_timeout: float = DEFAULT_PIN_TIMEOUT + 60.0
    max_forwarded: int = 8         # messages each way in one pairing


@dataclass
class _Slot:
    room_id: bytes
    number: int
    host: PeerId
    stream: Stream
    expires: float
    paired: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)



class RendezvousService:
    """The server side: a router protocol handler (see the module docstring)."""

    protocol_id = PROTO_RENDEZVOUS

    def __init__(self, *, clock: Clock, timeout: float,
                 limits: RendezvousLimits | None = None) -> None:
        self.limits = limits or RendezvousLimits()
        self.directory = MemberDirectory(self.limits.max_rooms, self.limits.max_members)
        self._clock = clock
        self._timeout = timeout
        self._slots: dict[tuple[bytes, int], _Slot] = {}
        # numbers whose slot ended, with when: not handed out again within invite_ttl,
        # so a late try with an old code cannot spend someone's new invite
        self._released: dict[tuple[bytes, int], float] = {}
        self.stats: Counter[str] = Counter()

    def forward(self, data: bytes, to_inviter: bool) -> bytes:
        """Every message of a pairing passes here (the seam a tampering test overrides)."""
        return data

    def listed(self, room_id: bytes) -> list[bytes]:
        """The records a ``members`` request answers with (a forging test overrides it)."""
        return [a.raw for a in self.directory.members(room_id, self._clock.now())]

    async def _answer(self, stream: Stream, *fields: object) -> None:
        await stream.write_message(pack(fields))

    async def _refuse(self, stream: Stream, reason: str) -> None:
        self.stats[f"refused.{reason}"] += 1
        await self._answer(stream, "error", reason)
        await stream.close()

    async def handle(self, conn: Connection, stream: Stream) -> None:
        async with asyncio.timeout(self._timeout):
            raw = await stream.read_message(MAX_REQUEST)
        try:
            req = unpack_verb(raw, "rendezvous")
        except MalformedMessage:
            await self._refuse(stream, "malformed_message")
            return
        verb = req[0]
        if verb == "announce" and len(req) == 2 and type(req[1]) is bytes:
            await self._announce(conn, stream, req[1])
        elif verb == "members" and len(req) == 2 and type(req[1]) is bytes:
            self.stats["members"] += 1
            await self._answer(stream, "members", self.listed(req[1]))
            await stream.close()
        elif verb == "host" and len(req) == 2 and type(req[1]) is bytes \
                and len(req[1]) == ROOM_ID_LENGTH:
            await self._host(conn, stream, req[1])
        elif verb == "join" and len(req) == 3 and type(req[1]) is bytes \
                and type(req[2]) is int:
            await self._join(stream, req[1], req[2])
        else:
            await self._refuse(stream, "malformed_message")

    async def _announce(self, conn: Connection, stream: Stream, record: bytes) -> None:
        try:
            ann = verify_member(record, self._clock.now())
            if ann.peer_id != conn.peer_id:
                # anyone may carry a signed record, but a rendezvous keeps only first-hand
                # ones: the connection proves the announcer is the member
                raise MalformedMessage("an announcement of another peer")
            self.directory.put(record, self._clock.now())
        except (MembershipError, MalformedMessage) as exc:
            await self._refuse(stream, exc.reason)
            return
        self.stats["announced"] += 1
        await self._answer(stream, "ok")
        await stream.close()

    def _expire(self, now: float) -> None:
        for key, slot in list(self._slots.items()):
            if slot.expires <= now and not slot.paired.is_set():
                del self._slots[key]
                slot.done.set()

    async def _host(self, conn: Connection, stream: Stream, room_id: bytes) -> None:
        now = self._clock.now()
        self._expire(now)
        if not any(a.peer_id == conn.peer_id for a in self.directory.members(room_id, now)):
            await self._refuse(stream, "not_member")
            return
        if (len(self._slots) >= self.limits.max_slots or sum(
                1 for s in self._slots.values() if s.host == conn.peer_id)
                >= self.limits.max_slots_per_peer):
            await self._refuse(stream, "slots_full")
            return
        for key, at in list(self._released.items()):
            if at + self.limits.invite_ttl <= now:
                del self._released[key]
        taken = {n for (r, n) in (*self._slots, *self._released) if r == room_id}
        number = next(n for n in range(1, MAX_INVITE_NUMBER + 2) if n not in taken)
        if number > MAX_INVITE_NUMBER:
            await self._refuse(stream, "slots_full")
            return
        slot = _Slot(room_id, number, conn.peer_id, stream, now + self.limits.invite_ttl)
        self._slots[(room_id, number)] = slot
        self.stats["hosted"] += 1
        try:
            await self._answer(stream, "number", number, slot.expires)
            await self._hold(conn, slot)
        finally:
            if self._slots.get((room_id, number)) is slot:
                del self._slots[(room_id, number)]
            if len(self._released) < 16 * self.limits.max_slots:  # bounded; oldest age out
                self._released[(room_id, number)] = self._clock.now()

    async def _hold(self, conn: Connection, slot: _Slot) -> None:
        """Until a newcomer pairs with the slot (then until the pairing ends), the invite
        expires (FIN: the host learns it) or the host's connection goes away."""
        closed = asyncio.ensure_future(conn.wait_closed())
        try:
            paired = asyncio.ensure_future(slot.paired.wait())
            try:
                await asyncio.wait({closed, paired}, timeout=self.limits.invite_ttl,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                paired.cancel()
            if not slot.paired.is_set():
                self._slots.pop((slot.room_id, slot.number), None)
                self.stats["expired" if not closed.done() else "host_gone"] += 1
                if not closed.done():
                    await slot.stream.close()
                return
            done = asyncio.ensure_future(slot.done.wait())
            try:
                await asyncio.wait({closed, done}, timeout=self.limits.pair_timeout + 1,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                done.cancel()
        finally:
            closed.cancel()

    async def _join(self, stream: Stream, room_id: bytes, number: int) -> None:
        self._expire(self._clock.now())
        slot = self._slots.pop((room_id, number), None)
        if slot is None:
            await self._refuse(stream, InviteUnknown.reason)
            return
        slot.paired.set()
        self.stats["paired"] += 1
        try:
            await self._answer(stream, "paired")
            async with asyncio.timeout(self.limits.pair_timeout):
                await asyncio.gather(self._pipe(stream, slot.stream, True),
                                     self._pipe(slot.stream, stream, False))
        except (TimeoutError, TransportError):
            self.stats["pair_failed"] += 1
            stream.reset()
            slot.stream.reset()
        finally:
            slot.done.set()

    async def _pipe(self, src: Stream, dst: Stream, to_inviter: bool) -> None:
        for _ in range(self.limits.max_forwarded):
            data = await src.next_message(MAX_MESSAGE)
            if data is None:
                break
            self.stats["forwarded"] += 1
            await dst.write_message(self.forward(data, to_inviter))
        await dst.close()


# ------------------------------------------------------------------------ client side

async def _request(conn: Connection, timeout: float, *fields: object) -> tuple[Stream,
                                                                              tuple[Any, ...]]:
    stream = await open_protocol(conn, PROTO_RENDEZVOUS)
    await stream.write_message(pack(fields))
    async with asyncio.timeout(timeout):
        answer = unpack_verb(await stream.read_message(MAX_REQUEST), "rendezvous")
    if answer[0] == "error":
        reason = answer[1] if len(answer) > 1 and type(answer[1]) is str else "?"
        raise RendezvousRefused(reason[:64])
    return stream, answer


async def announce(conn: Connection, record: bytes, timeout: float) -> None:
    """Store our signed membership announcement; ``RendezvousRefused`` with its reason."""
    if len(record) > MAX_MEMBER_SIZE:
        raise MalformedMessage("a membership announcement is at most 1000 bytes")
    stream, _ = await _request(conn, timeout, "announce", record)
    await stream.close()


async def members(conn: Connection, room_id: bytes, now: float, timeout: float,
                  ) -> list[MemberAnnouncement]:
    """The room's members as the rendezvous has them, each verified here again (a record
    that does not verify, or is of another room, is dropped: the rendezvous is untrusted)."""
    stream, answer = await _request(conn, timeout, "members", room_id)
    await stream.close()
    out = []
    records = answer[1] if len(answer) > 1 and type(answer[1]) is tuple else ()
    for raw in records:
        with contextlib.suppress(MembershipError, MalformedMessage):
            ann = verify_member(raw if type(raw) is bytes else b"", now)
            if ann.room_id == room_id:
                out.append(ann)
    return out


@dataclass
class HostedInvite:
    """An invite slot held on a rendezvous: ``number`` goes into the code."""

    number: int
    expires: float
    stream: Stream


async def host_invite(conn: Connection, room_id: bytes, timeout: float) -> HostedInvite:
    stream, answer = await _request(conn, timeout, "host", room_id)
    if (answer[0] != "number" or len(answer) != 3 or type(answer[1]) is not int
            or not 1 <= answer[1] <= MAX_INVITE_NUMBER
            or type(answer[2]) not in (int, float)):
        stream.reset()
        raise MalformedMessage("rendezvous: not an invite slot")
    return HostedInvite(answer[1], float(answer[2]), stream)


async def serve_invite(hosted: HostedInvite, *, identity: Identity, book: InviteBook,
                       guard: ReplayGuard, room_id: bytes, clock: Clock,
                       on_event: Callable[[Admitted | AdmissionFailed], None] | None = None,
                       on_pin: Callable[[PinIssued], None] | None = None,
                       ) -> Admitted | AdmissionFailed | None:
    """Wait on the slot for a newcomer's first message (until the invite expires), then
    run the inviter's side (a PIN invite's PIN goes to ``on_pin``, for our user to read
    out). Returns the outcome (None: nobody came)."""
    stream = hosted.stream
    try:
        async with asyncio.timeout(max(0.0, hosted.expires - clock.now())):
            first = await stream.next_message(MAX_MESSAGE)
    except (TimeoutError, TransportError):
        stream.reset()
        return None
    if first is None:
        return None
    session = InviterSession(identity, book, guard, first, clock.now(), room_id=room_id)
    await drive(session, stream, clock, on_pin=on_pin)
    result = session.result
    if result is not None and on_event is not None:
        on_event(result)
    return result


async def join(conn: Connection, *, identity: Identity, room_id: bytes, code: InviteCode,
               clock: Clock, timeout: float, guard: ReplayGuard | None = None,
               ask: AskPin | None = None) -> Admitted:
    """Run the newcomer's side through the rendezvous on ``conn``; if the inviter asks
    for a PIN, ``ask`` gets it from our user (None, or no ``ask``: ``NoPin``). Returns
    ``Admitted``; raises the named ``AdmissionError`` (``InviteUnknown`` if no slot has the
    number, ``WrongCode``, ``WrongPin``, ``ForgedAdmission``, ...)."""
    try:
        stream, answer = await _request(conn, timeout, "join", room_id, code.number)
    except RendezvousRefused as exc:
        cls = ABORT_REASONS.get(exc.reason)
        raise (cls(str(exc)) if cls is not None else AdmissionAborted(exc.reason)) from None
    if answer[0] != "paired":
        stream.reset()
        raise MalformedMessage("rendezvous: not a pairing")
    return await run_newcomer(stream, identity=identity, room_id=room_id, code=code,
                              clock=clock, guard=guard, ask=ask)
