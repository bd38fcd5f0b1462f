"""Running a ``rooms.admission`` session over one stream, and ``/p2pstack/room-admit/1``:
the same admission on a direct connection to a member, with no rendezvous (issue 13).

``drive`` moves messages between a session and a stream until the session ends (the
rendezvous's pairings use it too); a PIN step goes to the inviter's ``on_pin`` (show it)
or the newcomer's ``ask`` (ask the user).

``/p2pstack/room-admit/1``: a newcomer that found a room through its DHT record
(``stack.node.roomdht``) dials a member it lists, by peer id, opens this protocol and
sends its PAKE1 (``rooms.admission``); the messages then run as through a rendezvous.
A member that issued no open invite of that room and number answers
``[0, "invite_unknown"]`` (ABORT) and FIN, without running a session, reporting nothing
and spending nothing: the newcomer tries the next member. The member that did runs the
inviter's side (``RoomAdmitProtocol``'s ``serve`` callback, ``stack.node.rooms``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from stack.base.clock import Clock
from stack.base.identity import Identity
from stack.base.interfaces import Connection, Stream
from rooms.admission import (MAX_MESSAGE, AdmissionFailed, Admitted, AdmissionSession,
                             Kind, NewcomerSession, ReplayGuard, peek_pake1)
from rooms.errors import AdmissionAborted, AdmissionError, InvalidPin, InviteUnknown
from rooms.invites import InviteCode
from rooms.pin import PinIssued, PinRequested
from rooms.signed import pack
from stack.node.router import open_protocol
from stack.transport.errors import TransportError

__all__ = ["PROTO_ROOM_ADMIT", "AskPin", "drive", "run_newcomer", "RoomAdmitProtocol",
           "admit_direct"]

PROTO_ROOM_ADMIT = b"/p2pstack/room-admit/1"

#: the newcomer's user, asked for the PIN the inviter's node shows: the PIN, or None
AskPin = Callable[[PinRequested], Awaitable[str | None]]


async def ask_user(session: NewcomerSession, ask: AskPin | None, request: PinRequested,
                   clock: Clock) -> None:
    """Wait for our user's PIN until the session's deadline. ``ask`` checks what the
    user types (``rooms.pin.normalize_pin``) and asks again itself; one that still is
    no PIN here ends the admission as none (``NoPin``)."""
    deadline = session.next_timer() or clock.now()
    try:
        async with asyncio.timeout(max(0.0, deadline - clock.now())):
            pin = None if ask is None else await ask(request)
    except TimeoutError:
        session.handle_timer(max(clock.now(), deadline))
        return
    try:
        if pin is None:
            raise InvalidPin("no PIN")
        session.answer_pin(pin, clock.now())
    except InvalidPin:
        session.decline_pin()


async def drive(session: AdmissionSession, stream: Stream, clock: Clock, *,
                on_pin: Callable[[PinIssued], None] | None = None,
                ask: AskPin | None = None) -> None:
    """Move messages between a session and a stream until the session ends; a PIN step
    goes to ``on_pin`` (the inviter's: show it) or ``ask`` (the newcomer's: ask the user)."""
    while True:
        while (event := session.next_event()) is not None:
            if isinstance(event, PinIssued) and on_pin is not None:
                on_pin(event)
            elif isinstance(event, PinRequested) and isinstance(session, NewcomerSession):
                await ask_user(session, ask, event, clock)
        for out in session.outgoing():
            try:
                await stream.write_message(out)
            except TransportError:
                session.connection_lost()
        if session.done:
            with contextlib.suppress(TransportError):
                await stream.close()
            return
        deadline = session.next_timer()
        if deadline is None:  # not done, so it has a deadline; be safe anyway
            deadline = clock.now()
        try:
            async with asyncio.timeout(max(0.0, deadline - clock.now())):
                data = await stream.next_message(MAX_MESSAGE)
        except TimeoutError:  # the loop's timer may fire a hair before the wall clock's
            session.handle_timer(max(clock.now(), deadline))
            continue
        except TransportError:
            session.connection_lost()
            continue
        if data is None:
            session.connection_lost()
        else:
            session.receive(data, clock.now())


#: the member's side: (connection, the stream, its first message) -> None, for a PAKE1
#: naming an invite we issued; ``has_invite(room_id, number)`` says whether we did
Serve = Callable[[Connection, Stream, bytes], Awaitable[None]]


class RoomAdmitProtocol:
    """The member's side of ``/p2pstack/room-admit/1`` (see the module docstring)."""

    protocol_id = PROTO_ROOM_ADMIT

    def __init__(self, serve: Serve, has_invite: Callable[[bytes, int], bool],
                 timeout: float) -> None:
        self._serve = serve
        self._has_invite = has_invite
        self._timeout = timeout
        self.stats: dict[str, int] = {"served": 0, "invite_unknown": 0}

    async def handle(self, conn: Connection, stream: Stream) -> None:
        async with asyncio.timeout(self._timeout):
            first = await stream.read_message(MAX_MESSAGE)
        peek = peek_pake1(first)
        if peek is None or not self._has_invite(*peek):
            # not ours (or not a PAKE1): the newcomer asks the next member; nothing spent
            self.stats["invite_unknown"] += 1
            await stream.write_message(pack((Kind.ABORT.value, InviteUnknown.reason)))
            await stream.close()
            return
        self.stats["served"] += 1
        await self._serve(conn, stream, first)


async def admit_direct(conn: Connection, *, identity: Identity, room_id: bytes,
                       code: InviteCode, clock: Clock, guard: ReplayGuard | None = None,
                       ask: AskPin | None = None) -> Admitted:
    """The newcomer's side on a direct connection to a member. Returns ``Admitted``;
    raises the named ``AdmissionError`` (``InviteUnknown``: this member issued no such
    invite, try the next)."""
    stream = await open_protocol(conn, PROTO_ROOM_ADMIT)
    return await run_newcomer(stream, identity=identity, room_id=room_id, code=code,
                              clock=clock, guard=guard, ask=ask)


async def run_newcomer(stream: Stream, *, identity: Identity, room_id: bytes,
                       code: InviteCode, clock: Clock, guard: ReplayGuard | None,
                       ask: AskPin | None) -> Admitted:
    """The newcomer's session on ``stream`` (to a member, or paired by a rendezvous):
    ``Admitted``, or its named ``AdmissionError`` raised."""
    session = NewcomerSession(identity, room_id, code, clock.now(), guard=guard)
    await drive(session, stream, clock, ask=ask)
    result = session.result
    if isinstance(result, Admitted):
        return result
    error: AdmissionError = result.error if isinstance(result, AdmissionFailed) \
        else AdmissionAborted("no result")
    raise error
