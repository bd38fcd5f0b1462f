"""Relay fallback on real nodes (127.0.0.1, real QUIC): A reserves on R, B reaches A
through R by relayed multiaddr and by peer id; limits are named refusals; a relay that
tampers or impersonates fails the end-to-end handshake."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from nat.errors import RelayRefused
from nat.relay.limits import RelayLimits
from nat.relay.wire import Status
from stack.base.interfaces import PathKind
from stack.node import Node
from stack.node.config import NodeConfig

T = 10.0


@pytest.fixture
async def nodes(tmp_path: Path):
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


async def reserved(node: Node, count: int = 1) -> list[str]:
    async def wait() -> list[str]:
        while len(node.relays.addrs()) < count:
            await asyncio.sleep(0.02)
        return node.relays.addrs()
    return await asyncio.wait_for(wait(), T)


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
