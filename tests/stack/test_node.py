"""Node pair tests on 127.0.0.1 (both transports) and on the simulator (QUIC): trust
outcomes, dial-back both ways, refusals, garbage, shutdown."""

from __future__ import annotations

import asyncio
import os
import random
import socket
from pathlib import Path

import pytest

from stack.node.config import NodeConfig
from stack.store.stores import Stores
from stack.base.identity import Identity
from stack.node import (ConnectionClosed, ConnectionOpened, DialbackResult, IdentityReceived,
                        Node, TrustChecked)
from stack.base.errors import UsageError
from stack.transport.errors import ConnectionClosed as ConnectionClosedError
from stack.transport.errors import PeerIdMismatch, TrustRefused

T = 5.0


async def wait_event(queue: asyncio.Queue, kind: type, timeout: float = T, **match):
    """The next event of ``kind`` whose fields equal ``match``."""
    async def find():
        while True:
            event = await queue.get()
            if isinstance(event, kind) and all(getattr(event, k) == v for k, v in match.items()):
                return event
    return await asyncio.wait_for(find(), timeout)


@pytest.fixture
async def nodes(tmp_path: Path):
    """A factory of started nodes on 127.0.0.1 (own data dirs), all stopped afterwards."""
    created: list[Node] = []

    async def make(**overrides) -> Node:
        overrides.setdefault("listen", ("127.0.0.1", 0))
        overrides.setdefault("dial_back_timeout", 2.0)
        node = Node(NodeConfig(data_dir=tmp_path / f"n{len(created)}", **overrides))
        await node.start()
        created.append(node)
        return node

    yield make
    for node in reversed(created):
        await node.stop(grace=0.1)


def addr(node: Node) -> str:
    return f"127.0.0.1:{node.udp_address[1]}"


@pytest.mark.parametrize("transport", ["quic", "tls"])
async def test_pair_echo_and_ping(nodes, transport: str) -> None:
    a, b = await nodes(), await nodes()
    events = a.subscribe()
    conn, reply, rtt = await b.echo(addr(a), b"hello", transport=transport)
    assert reply == b"hello" and rtt > 0
    assert conn.peer_id == a.peer_id and conn.transport == transport
    opened = await wait_event(events, ConnectionOpened, peer_id=b.peer_id, transport=transport)
    assert opened.inbound
    _, rtt = await b.ping(conn)
    assert rtt > 0


async def test_multiaddrs_and_peer_id_enforcement(nodes) -> None:
    a, b, c = await nodes(), await nodes(), await nodes()
    quic_addr, tls_addr = a.addrs()
    assert quic_addr.endswith(f"/quic-v1/p2p/{a.peer_id}") and "/tcp/" in tls_addr
    for multiaddr in a.addrs():
        conn = await b.connect(multiaddr)
        assert conn.peer_id == a.peer_id
    wrong = quic_addr.replace(str(a.peer_id), str(c.peer_id))
    with pytest.raises(PeerIdMismatch):
        await b.connect(wrong)
    # a peer id alone dials the addresses the trust store learnt
    assert (await b.connect(a.peer_id)).peer_id == a.peer_id


async def test_a_dial_backs_source_port_is_not_kept_as_the_peers_address(nodes) -> None:
    # b dials a back from a fresh UDP port; a must not later dial that dead port when it
    # connects to b by peer id (it did: the whole handshake timeout, then failure).
    a, b = await nodes(), await nodes()
    verdict = a.next_event(DialbackResult, role="dialer", timeout=T)
    await a.connect(addr(b))
    assert (await verdict).ok is True
    entry = a.trust.get(b.peer_id)
    assert entry is not None and entry.addresses == (addr(b),)
    async with asyncio.timeout(T):
        assert (await a.connect(b.peer_id)).peer_id == b.peer_id


async def test_tofu_new_then_verified(nodes) -> None:
    a, b = await nodes(), await nodes()
    events = b.subscribe()
    await b.connect(addr(a))
    first = await wait_event(events, TrustChecked, inbound=False)
    assert (first.outcome, first.allowed) == ("new", True)
    await b.connect(addr(a))
    second = await wait_event(events, TrustChecked, inbound=False)
    assert (second.outcome, second.allowed) == ("verified", True)


async def test_tofu_changed_key_is_refused_with_the_seed_warning(nodes) -> None:
    a, b = await nodes(), await nodes()
    await b.connect(addr(a))
    port = a.udp_address[1]
    await a.stop(grace=0.1)
    impostor = await nodes(listen=("127.0.0.1", port))  # a different key at the same address
    with pytest.raises(TrustRefused) as info:
        await b.connect(f"127.0.0.1:{port}")
    assert info.value.outcome == "changed"
    assert "Certificate changed" in str(info.value)
    # the user re-trusts: the next dial is accepted
    b.trust.approve(impostor.peer_id)
    assert (await b.connect(f"127.0.0.1:{port}")).peer_id == impostor.peer_id


async def test_manual_policy_pending_until_approved(nodes) -> None:
    a = await nodes()
    b = await nodes(trust_policy="manual")
    with pytest.raises(TrustRefused) as info:
        await b.connect(addr(a))
    assert info.value.outcome == "pending"
    b.trust.approve(a.peer_id)
    assert (await b.connect(addr(a))).peer_id == a.peer_id


async def test_inbound_refused_under_manual_policy(nodes) -> None:
    a = await nodes(trust_policy="manual")
    b = await nodes()
    events = a.subscribe()
    # the refusal itself, not a timeout: a closes the connection and says why
    with pytest.raises(ConnectionClosedError, match="trust refused: pending"):
        await asyncio.wait_for(b.echo(addr(a), b"x"), T)
    refused = await wait_event(events, TrustChecked, peer_id=b.peer_id)
    assert (refused.outcome, refused.allowed) == ("pending", False)


@pytest.mark.parametrize("transport", ["quic", "tls"])
async def test_dial_back_success_reaches_both_sides(nodes, transport: str) -> None:
    a, b = await nodes(), await nodes()
    a_events, b_events = a.subscribe(), b.subscribe()
    await b.connect(addr(a), transport=transport)
    ident = await wait_event(a_events, IdentityReceived, peer_id=b.peer_id)
    assert any(f"/p2p/{b.peer_id}" in x for x in ident.addrs)
    mine = await wait_event(a_events, DialbackResult, peer_id=b.peer_id, role="listener")
    assert mine.ok and mine.address == addr(b)
    told = await wait_event(b_events, DialbackResult, peer_id=a.peer_id, role="dialer")
    assert told.ok and b.reachability[a.peer_id].ok
    entry = a.trust.get(b.peer_id)
    assert entry is not None and entry.reachable is True


async def test_dial_back_failure_is_logged_and_non_fatal(nodes) -> None:
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()  # nothing listens there any more
    # TLS: the listener dials back the advertised TCP port (QUIC uses the observed one)
    a = await nodes(dial_back_timeout=0.5)
    b = await nodes(advertise=(f"/ip4/127.0.0.1/tcp/{dead_port}/tls",))
    a_events, b_events = a.subscribe(), b.subscribe()
    conn = await b.connect(addr(a), transport="tls")
    mine = await wait_event(a_events, DialbackResult, peer_id=b.peer_id, role="listener")
    assert not mine.ok and mine.error
    told = await wait_event(b_events, DialbackResult, peer_id=a.peer_id, role="dialer")
    assert not told.ok
    assert a.trust.get(b.peer_id).reachable is False
    _, reply, _ = await b.echo(conn, b"still fine")  # the original connection lives on
    assert reply == b"still fine"


async def test_garbage_does_not_stop_the_node(nodes) -> None:
    a, b = await nodes(), await nodes()
    rng = random.Random(165)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for first in (0x00, 0x07, 0x30, 0x45, 0x99, 0xC3, 0xFF):
            udp.sendto(bytes([first]) + rng.randbytes(1250), a.udp_address)
    finally:
        udp.close()
    junk_reader, junk = await asyncio.open_connection("127.0.0.1", a.udp_address[1])
    junk.write(rng.randbytes(3000))
    try:
        for transport in ("quic", "tls"):
            _, reply, _ = await b.echo(addr(a), b"ok", transport=transport)
            assert reply == b"ok"
        # the TCP junk is cut off as a failed handshake, not left open
        assert await asyncio.wait_for(junk_reader.read(), T) == b""
    finally:
        junk.close()
    # every datagram was counted where it was dropped (they arrived before b's echo):
    # 0x00 without the STUN cookie, 0x30 and 0x99 (QUIC without its fixed bit) by the
    # port demux; 0x07, a p2pstack byte nobody serves; 0x45, 0xC3, 0xFF by QUIC
    assert a.demux.dropped == {"unknown": 3, "no-handler-p2p-0x07": 1}
    assert a.quic.dropped == 3
    assert a.tls.handshake_failures == 1


async def test_stop_closes_connections_and_peer_sees_it(nodes) -> None:
    a, b = await nodes(), await nodes()
    events = b.subscribe()
    await b.connect(addr(a), transport="tls")
    await a.stop(grace=0.2)
    await wait_event(events, ConnectionClosed, peer_id=a.peer_id, transport="tls")


def test_quic_pair_on_the_simulator(tmp_path: Path) -> None:
    """The same Node on the simulated network and virtual clock (QUIC; TLS needs TCP,
    which the simulator does not model)."""
    from simulations.network import SimNetwork
    from simulations.vtime import current_clock, run_virtual

    rng = random.Random(4)

    async def main():
        net = SimNetwork(rng, latency=0.02)
        clock = current_clock()
        made = []
        for i, ip in enumerate(("198.51.100.1", "198.51.100.2")):
            config = NodeConfig(data_dir=tmp_path / f"sim{i}", listen=(ip, 39001), tls=False,
                                identity=Identity.from_rng(rng), dial_back_timeout=3.0,
                                stores=Stores.memory())
            node = Node(config, network=net.add_host(ip), clock=clock)
            await node.start()
            made.append(node)
        a, b = made
        events = b.subscribe()
        start = clock.now()
        conn, reply, _ = await b.echo("198.51.100.1:39001", b"sim")
        told = await wait_event(events, DialbackResult, peer_id=a.peer_id, timeout=30)
        elapsed = clock.now() - start
        for node in made:
            await node.stop(grace=0.1)
        return conn.peer_id == a.peer_id, reply, told.ok, elapsed

    same, reply, reachable, elapsed = run_virtual(main())
    assert same and reply == b"sim" and reachable
    assert 0.04 <= elapsed < 2.0  # a few 40 ms round trips of virtual time


async def test_stun_server_answers_on_the_shared_port(nodes) -> None:
    """The node's UDP port answers STUN Binding requests beside QUIC (DESIGN.md 3)."""
    from stack.base.net import UdpNetwork

    a = await nodes()
    answered = asyncio.get_running_loop().create_future()

    def receive(batch):
        if not answered.done():
            answered.set_result(batch[0][0])

    client = await UdpNetwork().bind(("127.0.0.1", 0), receive)
    try:
        txid = os.urandom(12)
        client.send(bytes.fromhex("0001" "0000" "2112a442") + txid, a.udp_address)
        response = await asyncio.wait_for(answered, T)
        assert response[:2] == bytes.fromhex("0101") and response[8:20] == txid  # success
    finally:
        client.close()


@pytest.mark.parametrize("transport", ["quic", "tls"])
async def test_stop_lets_an_exchange_in_flight_finish(nodes, transport):
    """Graceful shutdown: a ping stream open when stop() begins is still answered."""
    from stack.node import PROTO_PING
    server = await nodes(dial_back=False)
    client = await nodes(dial_back=False)
    kind = "/udp/" if transport == "quic" else "/tcp/"
    conn = await client.connect(next(a for a in server.addrs() if kind in a))
    stream = await conn.open_stream()
    await stream.write_message(PROTO_PING)
    await stream.write_message(b"one")
    assert await asyncio.wait_for(stream.read_message(64), T) == b"one"  # handler is live
    stopping = asyncio.ensure_future(server.stop(grace=3.0))
    await stream.write_message(b"two")
    assert await asyncio.wait_for(stream.read_message(64), T) == b"two"
    await stream.close()
    await asyncio.wait_for(stopping, T)


async def test_dialing_ourselves_is_refused_and_pins_nothing(nodes):
    node = await nodes(dial_back=False)
    with pytest.raises(UsageError, match="this node itself"):
        await node.connect(f"127.0.0.1:{node.udp_address[1]}")
    assert node.trust.entries() == []


async def test_host_name_and_ip_share_one_tofu_pin(nodes):
    server = await nodes(dial_back=False)
    client = await nodes(dial_back=False)
    port = server.udp_address[1]
    await client.connect(f"localhost:{port}")
    await client.connect(f"127.0.0.1:{port}")
    assert [p.address for p in client.trust.address_pins()] == [f"127.0.0.1:{port}"]


async def test_a_peer_that_does_not_dial_back_settles_the_verdict_as_unknown(nodes):
    """The dialer learns at once that no verdict is coming (no wait for a timeout)."""
    server = await nodes(dial_back=False)
    client = await nodes(dial_back=False)
    events = client.subscribe()
    await client.connect(f"127.0.0.1:{server.udp_address[1]}")
    result = await wait_event(events, DialbackResult, role="dialer")
    assert result.ok is None and result.peer_id == server.peer_id


async def test_a_dead_address_first_costs_a_stagger_not_a_handshake_timeout(nodes) -> None:
    # The trust store knows two addresses of a: a silent port (tried first: it is the
    # newest) and a's real one. Dials race, staggered, so a's real address connects long
    # before the 30 s handshake timeout the silent one would take, and the losing dial
    # is cancelled without leaving a half-open connection behind.
    a = await nodes()
    b = await nodes(handshake_timeout=30.0)
    await b.connect(addr(a))
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        b.trust.check_peer(a.peer_id, address=f"127.0.0.1:{silent.getsockname()[1]}")
        for conn in b.connections:
            conn.abort("start afresh")
        async with asyncio.timeout(5.0):  # far below the dead address's 30 s
            conn = await b.connect(a.peer_id)
        assert conn.peer_id == a.peer_id and conn.remote_address == a.udp_address
        assert b.quic is not None
        dialed = {c.remote_address for c in b.quic.connections if c.is_client}
        assert dialed == {a.udp_address}  # (inbound: a's dial-back, from a fresh port)
    finally:
        silent.close()


async def test_random_draws_come_from_the_os_csprng_unless_seeded(nodes) -> None:
    """A Mersenne Twister's state follows from 624 words of its output (the DHT's txids
    show it), which would make our challenge nonces and cookie secret predictable: a
    real node draws them from the OS; only a seeded (simulated) node is reproducible."""
    real = await nodes()
    assert real.dht is not None and real.holepunch is not None
    assert isinstance(real.dht.core._rng, random.SystemRandom)
    assert isinstance(real._random(), random.SystemRandom)
    seeded = await nodes(rng_seed=7)
    assert seeded.dht is not None
    assert not isinstance(seeded.dht.core._rng, random.SystemRandom)
    assert seeded._random().random() == random.Random(7).random()
