"""A relayed path for the transport conformance suite: QUIC end to end over a circuit.

Each peer gets its own relay and an uplink: a separate QUIC transport (default options)
holding the peer's connection to the relay, so the peer's own transport, the one under
test with its options and limits, carries nothing but the relayed connections. A dial
opens a stream from the dialer's uplink to the listener's relay, which opens one to the
listener over the listener's uplink and splices the two (``nat.relay.circuit.splice``,
no limits); both ends frame QUIC datagrams onto their stream (``CircuitSocket``): the
listener's transport accepts over it (``accept_path``), the dialer's dials over it
(``dial_path``). No hop/stop messages: this exercises the path, not the relay protocol
(tests/nat/test_relay_node.py does that).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from nat.relay.circuit import CircuitSocket, splice
from nat.relay.wire import Limit
from stack.base.errors import RemoteError
from stack.base.identity import Identity, PeerId
from stack.base.interfaces import Path, PathKind
from stack.transport.options import TransportOptions
from tests.stack.transport.helpers import QuicPeer, quic_peer

T = 5.0


@dataclass
class RelayedPeer:
    """A conformance peer (``identity``, ``transport``, ``incoming``, ``aclose``) whose
    connections travel through its relay."""

    main: QuicPeer
    uplink: QuicPeer
    relay: QuicPeer
    relay_side: Any                  # the relay's end of our uplink connection
    uplink_conn: Any                 # our end of it
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _to_relays: dict[PeerId, Any] = field(default_factory=dict)

    identity = property(lambda self: self.main.identity)
    transport = property(lambda self: self.main.transport)
    incoming = property(lambda self: self.main.incoming)

    @property
    def address(self) -> tuple[str, int]:
        """Where our relayed connections' packets go: our relay."""
        return self.relay.address

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def aclose(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.main.aclose()
        await self.uplink.aclose()
        await self.relay.aclose()


def _path(relay: QuicPeer) -> Path:
    return Path(PathKind.RELAYED, relay.address, relay.identity.peer_id)


async def relayed_peer(identity: Identity | None = None,
                       options: TransportOptions | None = None) -> RelayedPeer:
    main = await quic_peer(identity, options)
    uplink, relay = await quic_peer(), await quic_peer()
    conn = await asyncio.wait_for(uplink.transport.dial(relay.address, relay.identity.peer_id), T)
    relay_side = await asyncio.wait_for(relay.incoming.get(), T)
    peer = RelayedPeer(main, uplink, relay, relay_side, conn)
    peer.spawn(_listen(peer))
    peer.spawn(_relay(peer))
    return peer


async def _listen(peer: RelayedPeer) -> None:
    """The listener's end: every stream the relay opens on our uplink is a circuit."""
    with contextlib.suppress(RemoteError):
        while True:
            stream = await peer.uplink_conn.accept_stream()
            sock = CircuitSocket(stream, _path(peer.relay))
            receiver = peer.main.transport.accept_path(
                sock, lambda c, sock=sock: peer.spawn(sock.close()))
            peer.spawn(_pump(sock, receiver))


async def _pump(sock: CircuitSocket, receiver: Any) -> None:
    try:
        await sock.run(receiver)
    finally:
        receiver.close("circuit closed")


async def _relay(peer: RelayedPeer) -> None:
    """The relay: every connection a dialer makes to it carries circuits to ``peer``."""
    with contextlib.suppress(RemoteError, asyncio.CancelledError):
        while True:
            conn = await peer.relay.incoming.get()
            peer.spawn(_circuits(peer, conn))


async def _circuits(peer: RelayedPeer, conn: Any) -> None:
    with contextlib.suppress(RemoteError):
        while True:
            down = await conn.accept_stream()
            up = await peer.relay_side.open_stream()
            peer.spawn(splice(down, up, Limit(), monotonic=time.monotonic))


async def relayed_dial(dialer: RelayedPeer, listener: RelayedPeer,
                       expected: PeerId | None) -> Any:
    relay = listener.relay
    to_relay = dialer._to_relays.get(relay.identity.peer_id)
    if to_relay is None or to_relay.closed:
        to_relay = await dialer.uplink.transport.dial(relay.address, relay.identity.peer_id)
        dialer._to_relays[relay.identity.peer_id] = to_relay
    stream = await to_relay.open_stream()
    sock = CircuitSocket(stream, _path(relay))
    receiver = dialer.main.transport.path_receiver(sock)
    dialer.spawn(_pump(sock, receiver))
    try:
        conn = await dialer.main.transport.dial_path(sock, expected)
    except BaseException:
        await sock.close()
        raise
    conn.add_close_callback(lambda c: dialer.spawn(sock.close()))
    return conn
