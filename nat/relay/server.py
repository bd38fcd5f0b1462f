"""The relay service: ``/p2pstack/relay/hop/1`` (a router protocol handler).

RESERVE: the ``RelayTable`` decides; OK carries the reservation (expiry in Unix seconds,
our addresses) and the per-circuit limit. The reservation lives as long as the
connection it was made on (and at most its TTL).

CONNECT to a peer: the table decides (reservation, circuit counts); then we open
``/p2pstack/relay/stop/1`` on the target's reserved connection with CONNECT(initiator,
limit). The target's OK makes the two streams one circuit (``circuit.splice``) and we
answer the initiator OK with the limit; any failure there is CONNECTION_FAILED. Every
refusal is answered with its status and counted in ``table.refused`` by reason; a splice
that hits a limit counts ``data_limit`` / ``duration_limit`` too. The relay keeps
serving: nothing one client does ends the service.

The relay sees only what the circuit carries: QUIC packets between initiator and
target, encrypted end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable

from stack.base.clock import Clock
from stack.base.errors import RemoteError
from stack.base.identity import InvalidPeerId, PeerId
from stack.base.interfaces import Connection, PathKind, Stream

from nat.relay.circuit import SpliceResult, splice
from nat.relay.limits import Decision, RelayLimits, RelayTable
from nat.relay.wire import (MAX_MESSAGE, PROTO_HOP, PROTO_STOP, HopMessage, HopType,
                            Limit, MalformedMessage, Reservation, Status, StopMessage,
                            StopType, decode_hop, decode_stop, encode_hop, encode_stop)

__all__ = ["RelayServer"]


class RelayServer:
    """The hop protocol handler. ``addrs()`` gives our public multiaddrs (with
    ``/p2p/<us>``) for reservations; ``accepting()`` says whether we take reservations
    now (the node: unless AutoNAT found us unreachable)."""

    protocol_id = PROTO_HOP

    def __init__(self, limits: RelayLimits, *, clock: Clock, timeout: float,
                 addrs: Callable[[], list[str]],
                 accepting: Callable[[], bool] = lambda: True) -> None:
        self.limits = limits
        self.table: RelayTable[Connection] = RelayTable(limits)
        self._clock = clock
        self._timeout = timeout
        self._addrs = addrs
        self._accepting = accepting
        self._watched: set[Connection] = set()
        self.ended: Counter[str] = Counter()    # circuits by how they ended
        self._rate_dropped = 0                   # by the circuits that ended
        self._live: set[SpliceResult] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def rate_dropped(self) -> int:
        """Datagrams dropped over the per-circuit rate limit, live circuits included."""
        return self._rate_dropped + sum(r.rate_dropped for r in self._live)

    @property
    def stats(self) -> dict[str, int]:
        return {**{f"refused.{k}": v for k, v in self.table.refused.items()},
                **{f"granted.{k}": v for k, v in self.table.granted.items()},
                **{f"ended.{k}": v for k, v in self.ended.items()},
                "circuits": self.table.circuits, "rate_dropped": self.rate_dropped,
                "reservations": self.table.reservations(self._clock.monotonic())}

    async def _reply(self, stream: Stream, status: Status, *,
                     reservation: Reservation | None = None,
                     limit: Limit | None = None) -> None:
        await stream.write_message(encode_hop(HopMessage(HopType.STATUS, None, reservation,
                                                         limit, status)))

    async def _refuse(self, stream: Stream, decision: Decision) -> None:
        with contextlib.suppress(RemoteError):
            await self._reply(stream, decision.status)
            await stream.close()

    def _limit(self) -> Limit | None:
        limit = self.limits.limit
        return limit if limit.duration or limit.data else None

    async def handle(self, conn: Connection, stream: Stream) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                msg = decode_hop(await stream.read_message(MAX_MESSAGE))
        except MalformedMessage:
            await self._refuse(stream, self.table.refuse(Status.MALFORMED_MESSAGE, "malformed"))
            return
        if conn.path.kind is PathKind.RELAYED and msg.type is not HopType.STATUS:
            # no reservations or circuits over a circuit (circuit v2: relays refuse them)
            await self._refuse(stream, self.table.refuse(Status.PERMISSION_DENIED, "relayed"))
        elif msg.type is HopType.RESERVE:
            await self._reserve(conn, stream)
        elif msg.type is HopType.CONNECT and msg.peer is not None:
            await self._connect(conn, stream, msg.peer)
        else:
            await self._refuse(stream, self.table.refuse(Status.UNEXPECTED_MESSAGE,
                                                         "unexpected"))

    # ------------------------------------------------------------------ RESERVE

    def _watch(self, conn: Connection) -> None:
        if conn in self._watched:
            return
        self._watched.add(conn)

        async def gone() -> None:
            await conn.wait_closed()
            self._watched.discard(conn)
            self.table.connection_closed(conn)

        task = asyncio.ensure_future(gone())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reserve(self, conn: Connection, stream: Stream) -> None:
        if not self._accepting():
            await self._refuse(stream, self.table.refuse(Status.RESERVATION_REFUSED,
                                                         "not_public"))
            return
        decision = self.table.reserve(conn.peer_id, conn, conn.remote_address[0],
                                      self._clock.monotonic())
        if not decision.ok:
            await self._refuse(stream, decision)
            return
        self._watch(conn)
        expire = int(self._clock.now() + self.limits.reservation_ttl)
        await self._reply(stream, Status.OK, reservation=Reservation(expire, tuple(self._addrs())),
                          limit=self._limit())
        await stream.close()

    # ------------------------------------------------------------------ CONNECT

    async def _connect(self, conn: Connection, stream: Stream, peer: bytes) -> None:
        try:
            target = PeerId.from_bytes(peer)
        except InvalidPeerId:
            await self._refuse(stream, self.table.refuse(Status.MALFORMED_MESSAGE, "malformed"))
            return
        now = self._clock.monotonic()
        decision = self.table.open_circuit(conn.peer_id, target, now)
        if not decision.ok:
            await self._refuse(stream, decision)
            return
        try:
            stop = await self._stop(conn.peer_id, target, now)
            if stop is None:
                await self._refuse(stream, self.table.refuse(Status.CONNECTION_FAILED,
                                                             "connection_failed"))
                return
            limit = self._limit()
            try:
                await self._reply(stream, Status.OK, limit=limit)
            except RemoteError:
                stop.reset()
                raise
            result = SpliceResult()
            self._live.add(result)
            try:
                await splice(stream, stop, limit or Limit(), rate=self.limits.circuit_rate,
                             monotonic=self._clock.monotonic, result=result)
            finally:
                self._live.discard(result)
                self._rate_dropped += result.rate_dropped
            self.ended[result.reason] += 1
            if result.reason in ("data_limit", "duration_limit"):
                self.table.refuse(Status.RESOURCE_LIMIT_EXCEEDED, result.reason)
        finally:
            self.table.close_circuit(conn.peer_id, target)

    async def _stop(self, initiator: PeerId, target: PeerId, now: float) -> Stream | None:
        """Open the stop stream to ``target`` over its newest reserved connection; None
        when that fails or the target refuses."""
        for conn in self.table.reserved_on(target, now):
            if conn.closed:
                continue
            stream: Stream | None = None
            try:
                stream = await conn.open_stream()
                await stream.write_message(PROTO_STOP)
                await stream.write_message(encode_stop(StopMessage(
                    StopType.CONNECT, initiator.multihash, self._limit())))
                async with asyncio.timeout(self._timeout):
                    reply = decode_stop(await stream.read_message(MAX_MESSAGE))
                if reply.type is StopType.STATUS and reply.status is Status.OK:
                    return stream
            except (RemoteError, MalformedMessage, TimeoutError):
                pass
            if stream is not None:
                stream.reset()
            return None
        return None
