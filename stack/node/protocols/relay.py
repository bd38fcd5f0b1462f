"""The relay protocols on the node's router, and dialing through a relay.

``/p2pstack/relay/hop/1`` is ``nat.relay.server.RelayServer`` (the relay service, when
``NodeConfig.relay_service`` is not ``off``). ``/p2pstack/relay/stop/1`` is
``RelayStopProtocol``: a relay we hold a reservation on brings us a circuit; we answer
OK and accept the QUIC connection that arrives over it (``QuicTransport.accept_path``),
which the node then trust-checks and serves like any inbound one. Stop CONNECTs from a
peer we hold no reservation on are refused PERMISSION_DENIED.

``dial_relayed`` is the dialer's side: CONNECT on the relay's hop protocol, then QUIC to
the target over the circuit (``QuicTransport.dial_path``), authenticated end to end: a
relay that tampers with packets or answers in the target's place fails the handshake
(``HandshakeFailed`` / ``PeerIdMismatch``). The connection's ``path`` is RELAYED with
the relay's peer id; when the relay ends the circuit (a limit), the connection closes
with the status in its reason and ``conn.path_socket.error`` (a ``CircuitSocket``'s) is
the ``RelayRefused``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from stack.base.identity import PeerId
from stack.base.interfaces import Connection, Path, PathKind, Stream
from nat.relay.circuit import CircuitSocket
from nat.relay.client import ReservationKeeper, answer_stop, connect, read_stop
from nat.relay.wire import PROTO_HOP, PROTO_STOP, Status
from stack.transport.quic import PathReceiver, QuicConn, QuicTransport

__all__ = ["PROTO_HOP", "PROTO_STOP", "RelayStopProtocol", "dial_relayed"]

log = structlog.get_logger("p2pstack.relay")

Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]


def _reason(sock: CircuitSocket) -> str:
    if sock.ended is None:
        return "relay circuit closed"
    return f"relay ended the circuit: {sock.ended.name}"


async def _pump(sock: CircuitSocket, receiver: PathReceiver) -> None:
    try:
        await sock.run(receiver)
    finally:
        receiver.close(_reason(sock))


class RelayStopProtocol:
    protocol_id = PROTO_STOP

    def __init__(self, *, keeper: ReservationKeeper,
                 accept_path: Callable[..., PathReceiver | None], timeout: float,
                 spawn: Spawn) -> None:
        self._keeper = keeper
        self._accept_path = accept_path
        self._timeout = timeout
        self._spawn = spawn
        self.refused = 0
        self.circuits = 0

    async def handle(self, conn: Connection, stream: Stream) -> None:
        msg = await read_stop(stream, self._timeout)
        if isinstance(msg, Status):
            self.refused += 1
            await answer_stop(stream, msg)
            return
        if not self._keeper.is_relay(conn.peer_id):
            self.refused += 1
            await answer_stop(stream, Status.PERMISSION_DENIED)
            return
        sock = CircuitSocket(stream, Path(PathKind.RELAYED, conn.remote_address, conn.peer_id))
        receiver = self._accept_path(sock, lambda c: self._spawn(sock.close()))
        if receiver is None:  # no QUIC on this node
            self.refused += 1
            await answer_stop(stream, Status.CONNECTION_FAILED)
            return
        await answer_stop(stream, Status.OK)
        self.circuits += 1
        log.debug("relay.circuit_in", relay=str(conn.peer_id),
                  initiator=str(PeerId(msg.peer)) if msg.peer else None)
        await _pump(sock, receiver)


async def dial_relayed(quic: QuicTransport, relay: Connection, target: PeerId, *,
                       timeout: float, spawn: Spawn) -> QuicConn:
    """QUIC to ``target`` through a circuit on ``relay``; ``RelayRefused`` if the relay
    refuses, the transport's errors if the end-to-end handshake fails. ``spawn`` runs
    the circuit's reader (the node's supervisor: its failure is logged, never lost)."""
    stream, _limit = await connect(relay, target, timeout)
    sock = CircuitSocket(stream, Path(PathKind.RELAYED, relay.remote_address, relay.peer_id))
    receiver = quic.path_receiver(sock)
    pump = spawn(_pump(sock, receiver))
    try:
        conn = await quic.dial_path(sock, target)
    except BaseException:
        await sock.close()
        pump.cancel()
        raise

    def closed(_conn: object) -> None:
        closer = asyncio.ensure_future(sock.close())  # FIN: the relay ends the circuit
        closer.add_done_callback(lambda _t: pump.cancel())

    conn.add_close_callback(closed)
    return conn
