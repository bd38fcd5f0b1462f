"""The protocol router (issue 8, section 2): streams go to the protocol they name; a
protocol plugs in with ``router.add`` and nothing else changes; an unknown or missing
protocol id resets the stream and is counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack.base.errors import LocalError
from stack.node import Node, NodeConfig, PROTO_ECHO
from stack.node.protocols.echo import EchoProtocol
from stack.node.router import Router, open_protocol
from stack.transport.errors import StreamReset

T = 5.0


class Upper:
    """A protocol of a test's own: answers one message in upper case."""
    protocol_id = b"/test/upper/1"

    def __init__(self) -> None:
        self.connections: list[object] = []

    def on_connection(self, conn) -> None:
        self.connections.append(conn.peer_id)

    async def handle(self, conn, stream) -> None:
        await stream.write_message((await stream.read_message(100)).upper())
        await stream.close()


@pytest.fixture
async def pair(tmp_path: Path):
    a = Node(NodeConfig(data_dir=tmp_path / "a", listen=("127.0.0.1", 0), tls=False))
    b = Node(NodeConfig(data_dir=tmp_path / "b", listen=("127.0.0.1", 0), tls=False))
    upper = Upper()
    b.router.add(upper)
    await a.start()
    await b.start()
    yield a, b, upper
    await a.stop(0.1)
    await b.stop(0.1)


async def test_a_protocol_added_to_the_router_serves_its_streams(pair) -> None:
    a, b, upper = pair
    conn = await a.connect(f"127.0.0.1:{b.udp_address[1]}", identify=False)
    stream = await open_protocol(conn, Upper.protocol_id)
    await stream.write_message(b"hello")
    assert await stream.read_message(100) == b"HELLO"
    assert upper.connections == [a.peer_id]  # on_connection ran for the inbound side


async def test_an_unknown_protocol_is_reset_and_counted(pair) -> None:
    a, b, _ = pair
    conn = await a.connect(f"127.0.0.1:{b.udp_address[1]}", identify=False)
    stream = await open_protocol(conn, b"/nobody/speaks/this")
    with pytest.raises(StreamReset):
        await stream.read_message(100)
    assert b.router.stats["unknown_protocol"] == 1
    # and the connection keeps serving
    assert (await a.echo(conn, b"still here"))[1] == b"still here"


async def test_a_protocol_id_longer_than_the_limit_is_reset_and_counted(pair) -> None:
    a, b, _ = pair
    conn = await a.connect(f"127.0.0.1:{b.udp_address[1]}", identify=False)
    stream = await conn.open_stream()
    await stream.write_message(b"x" * 65)
    with pytest.raises(StreamReset):
        await stream.read_message(100)
    assert b.router.stats["no_protocol"] == 1


def test_two_protocols_cannot_share_an_id() -> None:
    router = Router(name_timeout=T)
    router.add(EchoProtocol())
    with pytest.raises(LocalError, match="already routed"):
        router.add(EchoProtocol())
    assert router.get(PROTO_ECHO) is not None


def test_a_protocol_id_must_fit_the_wire_limit() -> None:
    router = Router(name_timeout=T)
    for bad in (b"", b"x" * 65):
        proto = EchoProtocol()
        proto.protocol_id = bad
        with pytest.raises(LocalError, match="protocol id"):
            router.add(proto)
