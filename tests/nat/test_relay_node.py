"""Relay fallback on real nodes (127.0.0.1, real QUIC): A reserves on R, B reaches A
through R by relayed multiaddr and by peer id; limits are named refusals; a relay that
tampers or impersonates fails the end-to-end handshake."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path as FsPath

import pytest

from nat.errors import RelayRefused
from nat.relay.client import connect as relay_connect
from nat.relay.client import reserve
from nat.relay.limits import RelayLimits
from nat.relay.circuit import CircuitSocket, FrameReader
from nat.relay.wire import (PROTO_HOP, PROTO_STOP, HopMessage, HopType, Limit, Reservation,
                            Status,
                            StopMessage, StopType, decode_hop, decode_stop, encode_frame,
                            encode_hop, encode_stop, end_frame)
from stack.base.identity import PeerId
from stack.base.interfaces import Path, PathKind
from stack.node import AnnouncementPublished, Node, RelayReservation, ServiceFailed
from stack.node.config import NodeConfig
from stack.transport.errors import HandshakeFailed, PeerIdMismatch, TransportError

T = 10.0


@pytest.fixture
async def nodes(tmp_path: FsPath):
    created: list[Node] = []

    async def make(**overrides) -> Node:
        overrides.setdefault("listen", ("127.0.0.1", 0))
        overrides.setdefault("dial_back_timeout", 2.0)
        overrides.setdefault("tls", False)
        overrides.setdefault("dht", False)
        node = Node(NodeConfig(data_dir=tmp_path / f"n{len(created)}", **overrides))
        await node.start()
        created.append(node)
        return node

    yield make
    for node in reversed(created):
        await node.stop(grace=0.1)


def quic_addr(node: Node) -> str:
    return f"/ip4/127.0.0.1/udp/{node.udp_address[1]}/quic-v1/p2p/{node.peer_id}"


async def reserved(node: Node) -> list[str]:
    """Our relayed addresses once the first reservation is held (the event, registered
    before looking, so one that already happened is not waited for)."""
    waiter = node.next_event(RelayReservation, held=True, timeout=T)
    if not node.relays.addrs():
        event = await waiter
        assert event.renewals == 0 and event.expires_in > 3000
    waiter.cancel()
    return node.relays.addrs()


async def test_reserve_and_connect_by_relayed_multiaddr(nodes) -> None:
    r = await nodes(relay_service="limited")
    a = await nodes(relays=(quic_addr(r),))
    b = await nodes()
    [relayed] = await reserved(a)
    assert relayed == f"{quic_addr(r)}/p2p-circuit/p2p/{a.peer_id}"
    assert relayed in a.announced_addrs()
    conn, reply, _ = await b.echo(relayed, b"through the relay")
    assert reply == b"through the relay"
    assert conn.path.kind is PathKind.RELAYED and conn.path.relay == r.peer_id
    assert conn.peer_id == a.peer_id
    _, rtt = await b.ping(conn)
    assert rtt > 0
    assert r.relay_server.stats["granted.circuits"] == 1


async def test_connect_by_peer_id_when_the_announcement_has_only_a_relayed_address(nodes) -> None:
    r = await nodes(relay_service="limited", dht=True)
    boot = (f"127.0.0.1:{r.udp_address[1]}",)
    a = await nodes(dht=True, bootstrap=boot, relays=(quic_addr(r),), advertise=())
    b = await nodes(dht=True, bootstrap=boot)
    published = asyncio.ensure_future(_published_with_relay(a))
    await a.join(timeout=T)
    await b.join(timeout=T)
    [relayed] = await reserved(a)
    assert (await asyncio.wait_for(published, T)).addrs == (relayed,)
    conn, reply, _ = await b.echo(a.peer_id, b"by peer id")
    assert reply == b"by peer id" and conn.peer_id == a.peer_id
    assert conn.path.kind is PathKind.RELAYED and conn.path.relay == r.peer_id
    # the relayed address is what B's trust store now knows of A
    assert b.trust.get(a.peer_id).addresses[-1] == relayed


async def _published_with_relay(node: Node) -> AnnouncementPublished:
    while True:
        event = await node.next_event(AnnouncementPublished, timeout=2 * T)
        if any("p2p-circuit" in text for text in event.addrs):
            return event


# ------------------------------------------------------------------------ refusals

async def test_no_reservation_is_a_named_refusal_and_counted(nodes) -> None:
    r = await nodes(relay_service="limited")
    a, b = await nodes(), await nodes()  # A never reserved
    with pytest.raises(RelayRefused) as info:
        await b.connect(f"{quic_addr(r)}/p2p-circuit/p2p/{a.peer_id}")
    assert info.value.status is Status.NO_RESERVATION and info.value.relay == r.peer_id
    assert "NO_RESERVATION" in str(info.value)
    assert r.relay_server.stats["refused.no_reservation"] == 1


async def test_a_node_without_the_relay_service_does_not_serve_hop(nodes) -> None:
    r = await nodes()  # relay_service="off": the NodeConfig default
    assert r.relay_server is None and r.router.get(b"/p2pstack/relay/hop/1") is None
    a = await nodes(relays=(quic_addr(r),))
    failed = await a.next_event(ServiceFailed, timeout=T)
    assert failed.service.startswith("relay.reservation") and not a.relays.addrs()


async def test_too_many_reservations(nodes) -> None:
    r = await nodes(relay_service="limited", relay_limits=RelayLimits(max_reservations=1))
    a = await nodes(relays=(quic_addr(r),))
    await reserved(a)
    c = await nodes()
    conn = await c.connect(quic_addr(r), identify=False)
    with pytest.raises(RelayRefused) as info:
        await reserve(conn, T)
    assert info.value.status is Status.RESERVATION_REFUSED
    assert r.relay_server.stats["refused.reservations"] == 1
    # a configured relay that refuses is a named service failure, retried with backoff
    d = await nodes(relays=(quic_addr(r),))
    failed = await d.next_event(ServiceFailed, timeout=T)
    assert "RESERVATION_REFUSED" in failed.error
    # and the relay keeps serving the reservation it holds
    _, reply, _ = await c.echo(a.relays.addrs()[0], b"still serving")
    assert reply == b"still serving"


async def test_too_many_circuits(nodes) -> None:
    r = await nodes(relay_service="limited", relay_limits=RelayLimits(max_circuits=1))
    a = await nodes(relays=(quic_addr(r),))
    [relayed] = await reserved(a)
    b, c = await nodes(), await nodes()
    first = await b.connect(relayed)
    with pytest.raises(RelayRefused) as info:
        await c.connect(relayed)
    assert info.value.status is Status.RESOURCE_LIMIT_EXCEEDED
    assert r.relay_server.stats["refused.circuits"] == 1
    await first.close(0.1)  # the slot comes back once the circuit ends
    async def freed() -> None:
        while r.relay_server.table.circuits:
            await asyncio.sleep(0.02)
    await asyncio.wait_for(freed(), T)
    _, reply, _ = await c.echo(relayed, b"a slot again")
    assert reply == b"a slot again"


async def _closed_by_relay(conn) -> None:
    await asyncio.wait_for(conn.wait_closed(), T)
    assert "RESOURCE_LIMIT_EXCEEDED" in conn.close_reason
    error = conn.path_socket.error
    assert isinstance(error, RelayRefused) and error.status is Status.RESOURCE_LIMIT_EXCEEDED


async def test_data_limit_ends_the_circuit_with_a_named_status(nodes) -> None:
    r = await nodes(relay_service="limited", relay_limits=RelayLimits(circuit_data=48 * 1024))
    a = await nodes(relays=(quic_addr(r),))
    [relayed] = await reserved(a)
    b = await nodes()
    conn, reply, _ = await b.echo(relayed, b"small")
    assert reply == b"small"
    with pytest.raises(TransportError):
        await b.echo(conn, b"x" * 60000)
    await _closed_by_relay(conn)
    assert r.relay_server.stats["refused.data_limit"] == 1
    assert r.relay_server.stats["ended.data_limit"] == 1
    _, reply, _ = await b.echo(relayed, b"next circuit")  # the relay keeps serving
    assert reply == b"next circuit"


async def test_duration_limit_ends_the_circuit_with_a_named_status(nodes) -> None:
    r = await nodes(relay_service="limited", relay_limits=RelayLimits(circuit_duration=1.0))
    a = await nodes(relays=(quic_addr(r),))
    [relayed] = await reserved(a)
    b = await nodes()
    conn, reply, _ = await b.echo(relayed, b"quick")
    assert reply == b"quick"
    await _closed_by_relay(conn)
    assert r.relay_server.stats["refused.duration_limit"] == 1
    _, reply, _ = await b.echo(relayed, b"next circuit")
    assert reply == b"next circuit"


async def test_stop_from_a_peer_we_hold_no_reservation_on_is_refused(nodes) -> None:
    a, evil = await nodes(), await nodes()
    conn = await evil.connect(quic_addr(a), identify=False)
    stream = await conn.open_stream()
    await stream.write_message(PROTO_STOP)
    await stream.write_message(encode_stop(StopMessage(StopType.CONNECT, evil.peer_id.multihash)))
    reply = decode_stop(await asyncio.wait_for(stream.read_message(), T))
    assert reply.status is Status.PERMISSION_DENIED


# ----------------------------------------------------------- a relay that misbehaves

class EvilRelay:
    """A hop service that grants everything, then either flips a bit in every datagram
    it forwards (``tamper``) or ends the circuit itself, answering QUIC with its own
    identity (``impersonate``). Built from the public codec only."""

    protocol_id = PROTO_HOP

    def __init__(self, node: Node, mode: str) -> None:
        self.node = node
        self.mode = mode
        self.reserved: dict[PeerId, object] = {}
        self.forwarded = 0

    async def handle(self, conn, stream) -> None:
        msg = decode_hop(await stream.read_message())
        if msg.type is HopType.RESERVE:
            self.reserved[conn.peer_id] = conn
            await stream.write_message(encode_hop(HopMessage(
                HopType.STATUS, reservation=Reservation(int(time.time()) + 3600),
                status=Status.OK)))
            await stream.close()
            return
        await stream.write_message(encode_hop(HopMessage(HopType.STATUS, status=Status.OK)))
        if self.mode == "impersonate":
            sock = CircuitSocket(stream, Path(PathKind.RELAYED, conn.remote_address))
            await sock.run(self.node.quic.accept_path(sock))
            return
        target = self.reserved[PeerId.from_bytes(msg.peer)]
        stop = await target.open_stream()
        await stop.write_message(PROTO_STOP)
        await stop.write_message(encode_stop(StopMessage(StopType.CONNECT, conn.peer_id.multihash)))
        assert decode_stop(await stop.read_message()).status is Status.OK
        await asyncio.gather(self._flip(stream, stop), self._flip(stop, stream))

    async def _flip(self, src, dst) -> None:
        reader = FrameReader()
        while data := await src.read():
            for datagram in reader.feed(data):
                self.forwarded += 1
                # the middle byte: inside a packet (a datagram may end in bytes that
                # belong to none), so in what AEAD protects
                mid = len(datagram) // 2
                spoiled = datagram[:mid] + bytes([datagram[mid] ^ 1]) + datagram[mid + 1:]
                await dst.write(encode_frame(spoiled))


@pytest.mark.parametrize("mode, error", [("tamper", HandshakeFailed),
                                         ("impersonate", PeerIdMismatch)])
async def test_a_misbehaving_relay_fails_the_end_to_end_handshake(nodes, mode, error) -> None:
    r = await nodes()
    evil = EvilRelay(r, mode)
    r.router.add(evil)
    a = await nodes(relays=(quic_addr(r),))
    [relayed] = await reserved(a)
    b = await nodes(handshake_timeout=2.0)
    with pytest.raises(error):
        await b.connect(relayed)
    assert not [c for c in b.connections if c.peer_id == a.peer_id]
    assert not [c for c in a.connections if c.peer_id == b.peer_id]
    if mode == "tamper":
        assert evil.forwarded > 0  # it did carry (and spoil) the handshake


# -------------------------------------------------------------- the relay's other rules

async def test_full_relay_has_no_data_cap_and_drops_over_its_rate(nodes) -> None:
    assert RelayLimits.for_mode("full").limit == Limit(0, 0)
    r = await nodes(relay_service="full", relay_limits=RelayLimits(
        circuit_duration=0, circuit_data=0, circuit_rate=64 * 1024))
    a = await nodes(relays=(quic_addr(r),))
    [relayed] = await reserved(a)
    b = await nodes()
    conn, _, _ = await b.echo(relayed, b"hello")
    for i in range(3):  # 3 x 50 KB each way: past the limited relay's 128 KiB
        _, reply, _ = await asyncio.wait_for(b.echo(conn, bytes([i]) * 50000), 3 * T)
        assert reply == bytes([i]) * 50000
    stats = r.relay_server.stats
    assert "refused.data_limit" not in stats and not conn.closed
    assert r.relay_server.rate_dropped > 0  # QUIC inside backed off and recovered


async def test_reservations_are_refused_while_we_are_not_publicly_reachable(nodes) -> None:
    r = await nodes(relay_service="limited")
    r.publicly_reachable = False  # what a failed dial-back probe in join() concludes
    c = await nodes()
    conn = await c.connect(quic_addr(r), identify=False)
    with pytest.raises(RelayRefused) as info:
        await reserve(conn, T)
    assert info.value.status is Status.RESERVATION_REFUSED
    assert r.relay_server.stats["refused.not_public"] == 1


@pytest.mark.parametrize("body, status, reason", [
    (b"\x93\x00\x00\x00", Status.MALFORMED_MESSAGE, "malformed"),
    (encode_hop(HopMessage(HopType.STATUS, status=Status.OK)), Status.UNEXPECTED_MESSAGE,
     "unexpected"),
    (encode_hop(HopMessage(HopType.CONNECT)), Status.UNEXPECTED_MESSAGE, "unexpected"),
])
async def test_malformed_and_unexpected_hop_messages(nodes, body, status, reason) -> None:
    r, c = await nodes(relay_service="limited"), await nodes()
    conn = await c.connect(quic_addr(r), identify=False)
    for _ in range(2):  # answered each time: the relay keeps serving
        stream = await conn.open_stream()
        await stream.write_message(PROTO_HOP)
        await stream.write_message(body)
        reply = decode_hop(await asyncio.wait_for(stream.read_message(), T))
        assert (reply.type, reply.status) == (HopType.STATUS, status)
    assert r.relay_server.stats[f"refused.{reason}"] == 2


async def test_a_relayed_address_in_the_trust_store_is_used_by_peer_id_without_a_dht(
        nodes) -> None:
    """B reached A through R once; later ``connect(A's peer id)`` (no DHT on B) uses the
    relayed address its trust store recorded. (No hole punching: on loopback it would
    upgrade the first connection, and the second would reuse that direct path.)"""
    r = await nodes(relay_service="limited")
    a = await nodes(relays=(quic_addr(r),), hole_punch=False)
    [relayed] = await reserved(a)
    b = await nodes(hole_punch=False)
    first = await b.connect(relayed)
    await first.close(0.1)
    conn, reply, _ = await b.echo(a.peer_id, b"again, by peer id")
    assert reply == b"again, by peer id" and conn.path.kind is PathKind.RELAYED


async def test_no_reservations_or_circuits_over_a_relayed_connection(nodes) -> None:
    r = await nodes(relay_service="limited")
    r2 = await nodes(relay_service="limited", relays=(quic_addr(r),))  # a relay behind a relay
    [relayed] = await reserved(r2)
    b = await nodes()
    conn = await b.connect(relayed, identify=False)
    assert conn.path.kind is PathKind.RELAYED
    with pytest.raises(RelayRefused) as info:
        await reserve(conn, T)
    assert info.value.status is Status.PERMISSION_DENIED
    assert r2.relay_server.stats["refused.relayed"] == 1


async def test_garbage_stop_message_is_answered_malformed(nodes) -> None:
    a, evil = await nodes(), await nodes()
    conn = await evil.connect(quic_addr(a), identify=False)
    stream = await conn.open_stream()
    await stream.write_message(PROTO_STOP)
    await stream.write_message(b"\xff\x00garbage")
    assert decode_stop(await asyncio.wait_for(stream.read_message(), T)).status is \
        Status.MALFORMED_MESSAGE


async def test_garbage_on_a_circuit_is_dropped_and_everyone_keeps_serving(nodes) -> None:
    r = await nodes(relay_service="limited")
    a = await nodes(relays=(quic_addr(r),))
    [relayed] = await reserved(a)
    b = await nodes()
    to_relay = await b.connect(quic_addr(r), identify=False)
    # datagrams that are no QUIC A can use: dropped and counted by A's transport
    stream, _ = await relay_connect(to_relay, a.peer_id, T)
    dropped = a.quic.dropped
    await stream.write(b"".join(encode_frame(bytes([0xC0 | i]) + b"\x00" * 50)
                                for i in range(8)))
    async def counted() -> None:
        while a.quic.dropped < dropped + 8:
            await asyncio.sleep(0.02)
    await asyncio.wait_for(counted(), T)
    stream.reset()
    # an end frame is the relay's word alone: sent by an end, it ends the circuit
    stream, _ = await relay_connect(to_relay, a.peer_id, T)
    await stream.write(end_frame(Status.OK))
    reader = FrameReader()
    while (data := await asyncio.wait_for(stream.read(), T)) and reader.ended is None:
        reader.feed(data)
    assert reader.ended is Status.CONNECTION_FAILED
    assert r.relay_server.stats["ended.malformed"] == 1
    _, reply, _ = await b.echo(relayed, b"still fine")
    assert reply == b"still fine"
