"""QUIC connection migration on real loopback sockets (RFC 9000 section 9, issue 10
section 3): the client's port moves to another local address (127.0.0.1 -> 127.0.0.2,
a new socket and port), ``QuicTransport.migrate`` moves the connection, the server
validates the new path and follows it, and a stream open across the move loses no byte.
Every way a migration can fail is a ``MigrationFailed``."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

import pytest

from stack.base.clock import SystemClock
from stack.base.identity import Identity
from stack.base.net import Address, UdpNetwork
from stack.base.port import PortDemux
from stack.transport.certs import make_certificate
from stack.transport.errors import MigrationFailed
from stack.transport.options import Registry, TransportOptions
from stack.transport.quic import QuicConn, QuicTransport
from tests.stack.transport.helpers import quic_peer

T = 5.0
TOTAL = 1 << 20   # bytes on the stream that crosses the move
CHUNK = 16 << 10


class MovingClient:
    """A QUIC transport whose UDP socket can be replaced (what ``MovableEndpoint`` does
    for a node): ``move(host)`` binds a new socket on ``host`` and closes the old one."""

    def __init__(self) -> None:
        self.identity = Identity.generate()
        self.demux = PortDemux()
        self.endpoint = None
        self.blackhole = False
        self.incoming: asyncio.Queue[QuicConn] = asyncio.Queue()

    async def start(self) -> None:
        self.endpoint = await UdpNetwork().bind(("127.0.0.1", 0), self.demux)
        options = TransportOptions()
        self.transport = QuicTransport(
            send=self.send, certified=make_certificate(self.identity, time.time()),
            clock=SystemClock(), options=options, registry=Registry(options.limits),
            on_connection=self.incoming.put_nowait)
        self.demux.register_quic(self.transport)

    def send(self, data: bytes, addr: Address) -> None:
        if not self.blackhole:
            self.endpoint.send(data, addr)

    async def move(self, host: str) -> Address:
        old = self.endpoint
        self.endpoint = await UdpNetwork().bind((host, 0), self.demux)
        old.close()
        return self.endpoint.local_address

    async def aclose(self) -> None:
        await self.transport.close(grace=0.1)
        self.endpoint.close()


@pytest.fixture
async def moving():
    server_moves: list[tuple[Address, Address]] = []
    server = await quic_peer()
    server.transport._on_migrated = lambda conn, old: server_moves.append(
        (old, conn.remote_address))
    client = MovingClient()
    await client.start()
    yield server, client, server_moves
    await client.aclose()
    await server.aclose()


async def test_a_stream_open_across_the_move_loses_no_byte(moving) -> None:
    server, client, server_moves = moving
    conn = await client.transport.dial(server.address, server.identity.peer_id)
    accepted = await asyncio.wait_for(server.incoming.get(), T)
    stream = await conn.open_stream()
    payload = os.urandom(TOTAL)
    halfway = asyncio.Event()

    async def write() -> None:
        for offset in range(0, TOTAL, CHUNK):
            if offset == TOTAL // 2:
                await halfway.wait()  # the rest is written from the new path
            await stream.write(payload[offset:offset + CHUNK])
        await stream.close()

    async def read() -> bytes:
        remote = await accepted.accept_stream()
        got = bytearray()
        while chunk := await remote.read(CHUNK):
            got += chunk
            if len(got) >= TOTAL // 4 and not halfway.is_set():
                new = await client.move("127.0.0.2")
                elapsed = await asyncio.wait_for(client.transport.migrate(conn, T), T)
                assert 0 < elapsed < T
                assert new[0] == "127.0.0.2"
                halfway.set()
        return bytes(got)

    writer = asyncio.ensure_future(write())
    got = await asyncio.wait_for(read(), 20)
    await writer
    assert len(got) == TOTAL and hashlib.sha256(got).digest() == \
        hashlib.sha256(payload).digest()
    assert server_moves == [(client_old := server_moves[0][0], client.endpoint.local_address)]
    assert client_old[0] == "127.0.0.1"
    assert accepted.remote_address == client.endpoint.local_address
    # the connection goes on: a new stream both ways
    second = await conn.open_stream()
    await second.write_message(b"after")
    theirs = await asyncio.wait_for(accepted.accept_stream(), T)
    assert await theirs.read_message() == b"after"
    await theirs.write_message(b"ok")
    assert await asyncio.wait_for(second.read_message(), T) == b"ok"


async def test_a_path_that_answers_nothing_fails_after_the_timeout(moving) -> None:
    server, client, _ = moving
    conn = await client.transport.dial(server.address, server.identity.peer_id)
    await asyncio.wait_for(server.incoming.get(), T)
    client.blackhole = True  # our new network drops everything we send
    with pytest.raises(MigrationFailed, match="acknowledged nothing"):
        await asyncio.wait_for(client.transport.migrate(conn, 0.3), T)
    assert conn.migration is None and not conn.closed


async def test_a_migration_waits_for_the_peers_spare_ids(moving) -> None:
    """A connection whose handshake has just completed may have no spare connection id
    of the peer's yet (they come with its next flight): the migration waits for one,
    then sends its PING, instead of failing at once. (The client stays where it is: a
    peer's datagram must reach it, and one sent before the peer saw our new address
    would go to the old one.)"""
    server, client, _ = moving
    conn = await client.transport.dial(server.address, server.identity.peer_id)
    accepted = await asyncio.wait_for(server.incoming.get(), T)
    # the ids not here yet: aioquic's list of them, held back until the server next sends
    spare, conn.quic._peer_cid_available = conn.quic._peer_cid_available, []
    migration = client.transport.migrate(conn, T)
    assert not migration.done() and conn.migration_waits_cid
    conn.quic._peer_cid_available = spare
    stream = await accepted.open_stream()
    await stream.write_message(b"ids")  # a datagram from the peer, as its ids would be
    elapsed = await asyncio.wait_for(migration, T)
    assert 0 < elapsed < T and conn.migration is None and not conn.migration_waits_cid
    theirs = await asyncio.wait_for(conn.accept_stream(), T)
    assert await theirs.read_message() == b"ids"


async def test_migrations_that_cannot_start_fail_at_once(moving) -> None:
    server, client, _ = moving
    conn = await client.transport.dial(server.address, server.identity.peer_id)
    accepted = await asyncio.wait_for(server.incoming.get(), T)
    with pytest.raises(MigrationFailed, match="only the client"):
        await server.transport.migrate(accepted, T)
    # no spare connection id ever comes: sending from the new address with the old one
    # would link the two paths (RFC 9000 section 9.5). aioquic's list of them, emptied.
    spare, conn.quic._peer_cid_available = conn.quic._peer_cid_available, []
    with pytest.raises(MigrationFailed, match=r"no spare connection id within 0\.3 s"):
        await asyncio.wait_for(client.transport.migrate(conn, 0.3), T)
    assert conn.migration is None and not conn.migration_waits_cid
    conn.quic._peer_cid_available = spare
    # superseded, then closed while migrating
    client.blackhole = True
    first = client.transport.migrate(conn, T)
    second = client.transport.migrate(conn, T)
    with pytest.raises(MigrationFailed, match="superseded"):
        await first
    conn.abort("test")
    with pytest.raises(MigrationFailed, match="closed while migrating"):
        await second
    with pytest.raises(MigrationFailed, match="not open"):
        await client.transport.migrate(conn, T)


async def test_a_connection_on_another_path_cannot_migrate(moving) -> None:
    from tests.stack.transport.test_quic import CountingPath
    server, client, _ = moving
    sock = CountingPath(client.endpoint, server.address, Identity.generate().peer_id)
    conn = await asyncio.wait_for(
        client.transport.dial_path(sock, server.identity.peer_id), T)
    with pytest.raises(MigrationFailed, match="not our UDP port"):
        await client.transport.migrate(conn, T)
