"""The relay client: reserve a slot, open a circuit, answer a relay's stop CONNECT, and
keep reservations alive (``ReservationKeeper``).

Every refusal is a ``RelayRefused`` carrying the relay's ``Status``; a reply that is not
a well-formed STATUS is RelayRefused(MALFORMED_MESSAGE), one of another type
RelayRefused(UNEXPECTED_MESSAGE), so a caller never parses text.

Renewal: a reservation is renewed when a quarter of its lifetime is left (at least
``MIN_RENEW`` seconds after it was made), on the same connection; if that connection
closes, the reservation is gone (circuit v2): the service raises, and its supervisor
dials the relay again after its backoff. The lifetime is the relay's ``expire`` (Unix
seconds) less our wall clock, at least ``MIN_RENEW``, and then runs on the monotonic
clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from stack.base.addresses import PeerAddress
from stack.base.clock import Clock
from stack.base.errors import RemoteError
from stack.base.identity import PeerId
from stack.base.interfaces import Connection, Stream

from nat.errors import RelayRefused
from nat.relay.wire import (MAX_MESSAGE, PROTO_HOP, HopMessage, HopType, Limit,
                            MalformedMessage, Reservation, Status, StopMessage, StopType,
                            decode_hop, decode_stop, encode_hop, encode_stop)

__all__ = ["reserve", "connect", "read_stop", "answer_stop", "ActiveReservation",
           "ReservationKeeper", "MIN_RENEW"]

MIN_RENEW = 10.0  # seconds: the soonest a reservation is renewed


async def _open(conn: Connection, protocol_id: bytes) -> Stream:
    stream = await conn.open_stream()
    await stream.write_message(protocol_id)
    return stream


async def _status(stream: Stream, relay: PeerId, timeout: float) -> HopMessage:
    async with asyncio.timeout(timeout):
        raw = await stream.read_message(MAX_MESSAGE)
    try:
        reply = decode_hop(raw)
    except MalformedMessage as exc:
        raise RelayRefused(Status.MALFORMED_MESSAGE, f"malformed reply: {exc}", relay) from None
    if reply.type is not HopType.STATUS or reply.status is None:
        raise RelayRefused(Status.UNEXPECTED_MESSAGE, f"{reply.type.name} instead of STATUS",
                           relay)
    if reply.status is not Status.OK:
        raise RelayRefused(reply.status, "", relay)
    return reply


async def reserve(conn: Connection, timeout: float) -> tuple[Reservation, Limit | None]:
    """RESERVE on the relay at the other end of ``conn``."""
    stream = await _open(conn, PROTO_HOP)
    try:
        await stream.write_message(encode_hop(HopMessage(HopType.RESERVE)))
        reply = await _status(stream, conn.peer_id, timeout)
    finally:
        with contextlib.suppress(RemoteError):
            await stream.close()
    if reply.reservation is None:
        raise RelayRefused(Status.MALFORMED_MESSAGE, "OK without a reservation", conn.peer_id)
    return reply.reservation, reply.limit


async def connect(conn: Connection, target: PeerId,
                  timeout: float) -> tuple[Stream, Limit | None]:
    """CONNECT through the relay at the other end of ``conn`` to ``target``; returns the
    circuit stream (speaking the circuit framing) and the relay's limit."""
    stream = await _open(conn, PROTO_HOP)
    try:
        await stream.write_message(encode_hop(HopMessage(HopType.CONNECT, target.multihash)))
        reply = await _status(stream, conn.peer_id, timeout)
    except BaseException:
        stream.reset()
        raise
    return stream, reply.limit


async def read_stop(stream: Stream, timeout: float) -> StopMessage | Status:
    """The relay's stop CONNECT, or the status to refuse it with."""
    try:
        async with asyncio.timeout(timeout):
            msg = decode_stop(await stream.read_message(MAX_MESSAGE))
    except MalformedMessage:
        return Status.MALFORMED_MESSAGE
    if msg.type is not StopType.CONNECT or msg.peer is None:
        return Status.UNEXPECTED_MESSAGE
    return msg


async def answer_stop(stream: Stream, status: Status) -> None:
    await stream.write_message(encode_stop(StopMessage(StopType.STATUS, status=status)))
    if status is not Status.OK:
        await stream.close()


@dataclass
class ActiveReservation:
    relay: PeerId
    conn: Connection
    address: str            # our relayed multiaddr through this relay
    renew_at: float         # monotonic
    expires_at: float       # monotonic
    limit: Limit | None
    renewals: int = 0


class ReservationKeeper:
    """Keeps a reservation on each configured relay (one supervised service each:
    ``service(relay)``). ``addrs()`` are our relayed multiaddrs through the relays that
    hold a live reservation; ``on_change(reservation, held)`` runs after each reservation
    or renewal (``held`` True) and when one is lost (False); a connection
    lost while ``running()`` says False (the node is stopping) is no failure."""

    def __init__(self, *, me: PeerId, dial: Callable[[str], Awaitable[Connection]],
                 clock: Clock, timeout: float,
                 on_change: Callable[[ActiveReservation, bool], None],
                 running: Callable[[], bool] = lambda: True) -> None:
        self._me = me
        self._dial = dial
        self._clock = clock
        self._timeout = timeout
        self._on_change = on_change
        self._running = running
        self.active: dict[str, ActiveReservation] = {}   # configured address -> reservation

    def addrs(self) -> list[str]:
        now = self._clock.monotonic()
        return [r.address for r in self.active.values()
                if r.expires_at > now and not r.conn.closed]

    def is_relay(self, peer: PeerId) -> bool:
        """Do we hold a live reservation on ``peer`` (so its stop CONNECTs are ours)?"""
        now = self._clock.monotonic()
        return any(r.relay == peer and r.expires_at > now and not r.conn.closed
                   for r in self.active.values())

    def _drop(self, relay: str) -> None:
        lost = self.active.pop(relay, None)
        if lost is not None:
            self._on_change(lost, False)

    def _lifetime(self, reservation: Reservation) -> float:
        return max(MIN_RENEW, reservation.expire - self._clock.now())

    async def service(self, relay: str) -> None:
        """Reserve on ``relay`` and keep it; raises (for the supervisor to restart with
        backoff) when the relay cannot be reached or refuses."""
        try:
            conn = await self._dial(relay)
            while not conn.closed:
                reservation, limit = await reserve(conn, self._timeout)
                now = self._clock.monotonic()
                lifetime = self._lifetime(reservation)
                current = self.active.get(relay)
                host, port = conn.remote_address
                address = PeerAddress(host, port, conn.transport, self._me,
                                      relay=conn.peer_id).multiaddr()
                renewals = current.renewals + 1 if current is not None else 0
                held = self.active[relay] = ActiveReservation(
                    conn.peer_id, conn, address, now + max(MIN_RENEW, lifetime * 0.75),
                    now + lifetime, limit, renewals)
                self._on_change(held, True)
                wait = held.renew_at - now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(conn.wait_closed(), wait)
            if self._running():  # else: we are shutting down, nothing failed
                raise ConnectionError(f"connection to relay {conn.peer_id} closed")
        finally:
            self._drop(relay)
