"""A Node that moves on real loopback sockets (issue 10 section 3): ``Mobility.rebind``
puts its UDP port on 127.0.0.2, its QUIC connection to a peer migrates there, and a
stream open across the move loses no byte."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from stack.base.errors import LocalError
from stack.node import AddressChanged, ConnectionMigrated, ConnectionReplaced, Node
from stack.node.config import NodeConfig
from stack.node.router import open_protocol
from tests.simulations.test_migration_sim import PROTO_SINK, Sink

T = 5.0
TOTAL = 512 << 10
CHUNK = 16 << 10


@pytest.fixture
async def nodes(tmp_path: Path):
    created: list[Node] = []

    async def make(**overrides) -> Node:
        node = Node(NodeConfig(data_dir=tmp_path / f"n{len(created)}",
                               listen=("127.0.0.1", 0), tls=False, dht=False,
                               dial_back=False, **overrides))
        node.router.add(Sink())
        await node.start()
        created.append(node)
        return node

    yield make
    for node in reversed(created):
        await node.stop(grace=0.1)


async def test_a_node_rebound_to_another_address_keeps_its_stream(nodes) -> None:
    listener, mover = await nodes(), await nodes()
    conn = await mover.connect(f"127.0.0.1:{listener.udp_address[1]}", identify=False)
    replaced = mover.subscribe()
    stream = await open_protocol(conn, PROTO_SINK)
    data = os.urandom(TOTAL)
    changed = mover.next_event(AddressChanged, cause="rebind", timeout=T)
    migrated = mover.next_event(ConnectionMigrated, role="client", timeout=T)
    followed = listener.next_event(ConnectionMigrated, role="server", timeout=T)
    for offset in range(0, TOTAL, CHUNK):
        if offset == TOTAL // 2:
            new = await mover.mobility.rebind(("127.0.0.2", 0))
        await stream.write(data[offset:offset + CHUNK])
    await stream.close()
    assert await asyncio.wait_for(stream.read(64), T) == hashlib.sha256(data).digest()
    event = await changed
    assert event.new == f"127.0.0.2:{new[1]}" and mover.udp_address == new
    assert (await migrated).elapsed < T
    assert (await followed).address == f"127.0.0.2:{new[1]}"
    assert not conn.closed
    _, reply, _ = await mover.echo(conn, b"still here")
    assert reply == b"still here"
    while not replaced.empty():
        assert not isinstance(replaced.get_nowait(), ConnectionReplaced)


async def test_rebind_errors_are_named(nodes) -> None:
    node = await nodes()
    with pytest.raises(LocalError, match="cannot bind"):
        await node.mobility.rebind(("192.0.2.1", 0))  # not an address of this host
    await node.stop()
    with pytest.raises(LocalError, match="not started"):
        await node.mobility.rebind(("127.0.0.2", 0))


async def test_a_tls_connection_is_replaced_over_quic(tmp_path: Path) -> None:
    """TCP cannot follow a move: the TLS connection is replaced (cause ``tcp``) by a
    dial of the peer id, which reaches the peer over QUIC on the same port number."""
    listener = Node(NodeConfig(data_dir=tmp_path / "l", listen=("127.0.0.1", 0), dht=False,
                               dial_back=False))
    mover = Node(NodeConfig(data_dir=tmp_path / "m", listen=("127.0.0.1", 0), dht=False,
                            dial_back=False))
    await listener.start()
    await mover.start()
    try:
        old = await mover.connect(f"127.0.0.1:{listener.udp_address[1]}", transport="tls",
                                  identify=False)
        replaced = mover.next_event(ConnectionReplaced, timeout=T)
        await mover.mobility.rebind(("127.0.0.2", 0))
        event = await replaced
        assert event.cause == "tcp" and event.peer_id == listener.peer_id, event
        assert event.new_path == f"direct 127.0.0.1:{listener.udp_address[1]}", event
        assert old.closed
        _, reply, _ = await mover.echo(listener.peer_id, b"over quic")
        assert reply == b"over quic"
    finally:
        await mover.stop(0.1)
        await listener.stop(0.1)
