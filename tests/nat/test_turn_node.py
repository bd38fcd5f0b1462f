"""TURN on real nodes (issue 9 sections 2-4): a node allocates on coturn (127.0.0.1),
announces its relayed address in its signed DHT record, and a dialer with no TURN at all
reaches it by peer id over that address, end-to-end QUIC, path ``turn`` in connect and
status; wrong credentials and a missing server are named events and the node keeps
running; bad ``--turn`` URLs are one-line usage errors."""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path as FsPath

import pytest

from stack.base.addresses import PeerAddress, parse_address
from stack.base.errors import UsageError
from stack.base.interfaces import PathKind
from nat.turn import parse_turn_url
from stack.cli import main
from stack.cli.node import turn_urls
from stack.cli.status import _text as status_text
from stack.node import AnnouncementPublished, Node, ServiceFailed, TurnAllocationChanged
from stack.node import operations
from stack.node.config import NodeConfig
from tests.nat.coturn import start_coturn

T = 10.0
needs_coturn = pytest.mark.skipif(shutil.which("turnserver") is None,
                                  reason="coturn (turnserver) is not installed")


@pytest.fixture
def coturn(tmp_path: FsPath):
    server = start_coturn(tmp_path)
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
async def nodes(tmp_path: FsPath):
    created: list[Node] = []

    async def make(**overrides) -> Node:
        overrides.setdefault("listen", ("127.0.0.1", 0))
        overrides.setdefault("dial_back_timeout", 2.0)
        overrides.setdefault("tls", False)
        overrides.setdefault("dht", False)
        node = Node(NodeConfig(data_dir=tmp_path / f"n{len(created)}", **overrides))
        created.append(node)
        await node.start()
        return node

    yield make
    for node in reversed(created):
        await node.stop(grace=0.1)


def test_p2p_turn_multiaddrs_round_trip() -> None:
    pid = "12D3KooWGSGcZSbbRiEaV3eq2RRH2ZV9b5d2JcHNd2DsUbGkX3kC"
    text = f"/ip4/192.0.2.7/udp/49160/quic-v1/p2p-turn/p2p/{pid}"
    address = parse_address(text)
    assert address.turn and address.relay is None and address.address == ("192.0.2.7", 49160)
    assert address.multiaddr() == text and address.with_transport("quic").turn
    assert PeerAddress("192.0.2.7", 49160, "quic").multiaddr().endswith("/quic-v1")
    for bad in ("/ip4/192.0.2.7/tcp/1/tls/p2p-turn",
                f"/ip4/192.0.2.7/udp/1/quic-v1/p2p-turn/p2p/{pid}/p2p-circuit/p2p/{pid}"):
        with pytest.raises(UsageError):
            parse_address(bad)


@pytest.mark.parametrize(("argv", "says"), [
    (["node", "--turn", "turn:nopassword@127.0.0.1:3478"],
     "has no password: give turn:USER:PASS@HOST or set P2PSTACK_TURN_PASSWORD"),
    (["node", "--turn", "turn::secret@127.0.0.1:3478"], "needs both a username"),
    (["node", "--turn", "127.0.0.1:3478"], "not a turn: URL"),
    (["node", "--turn-permit", "10.0.0"], "--turn-permit needs an IPv4 address"),
])
def test_bad_turn_flags_are_one_line_usage_errors(argv, says, tmp_path, capsys) -> None:
    code = main(["--data-dir", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2 and says in err and err.count("\n") == 1, err


def test_a_turn_password_can_come_from_the_environment_instead_of_the_command_line(
        ) -> None:
    env = {"P2PSTACK_TURN_PASSWORD": "s3:cr@t"}
    assert turn_urls(["turn:alice@127.0.0.1:3478", "turn:bob:own@192.0.2.1"], env) == (
        "turn:alice:s3:cr@t@127.0.0.1:3478", "turn:bob:own@192.0.2.1")
    server = parse_turn_url(turn_urls(["turn:alice@127.0.0.1?transport=udp"], env)[0])
    assert (server.username, server.password, server.port) == ("alice", "s3:cr@t", 3478)
    assert turn_urls(["turn:bob:own@192.0.2.1"], {}) == ("turn:bob:own@192.0.2.1",)
    with pytest.raises(UsageError, match="has no password"):
        turn_urls(["turn:alice@127.0.0.1"], {"P2PSTACK_TURN_PASSWORD": ""})


def test_a_bad_turn_url_in_the_config_is_a_usage_error(tmp_path: FsPath) -> None:
    with pytest.raises(UsageError, match="not a turn: URL"):
        Node(NodeConfig(data_dir=tmp_path, turn=("stun:127.0.0.1",)))


async def _published_with_turn(node: Node) -> AnnouncementPublished:
    while True:
        event = await node.next_event(AnnouncementPublished, timeout=2 * T)
        if any("p2p-turn" in text for text in event.addrs):
            return event


@needs_coturn
async def test_a_peer_reaches_a_turn_node_by_peer_id_through_its_dht_record(
        coturn, nodes) -> None:
    boot = await nodes(dht=True)
    bootstrap = (f"127.0.0.1:{boot.udp_address[1]}",)
    # advertise=(): A announces no direct address, only the relayed one
    a = Node(NodeConfig(data_dir=boot.config.data_dir.parent / "a", listen=("127.0.0.1", 0),
                        tls=False, dht=True, bootstrap=bootstrap, advertise=(),
                        dial_back_timeout=2.0, turn=(coturn.url(),),
                        turn_permit=("127.0.0.1",)))
    allocated = a.next_event(TurnAllocationChanged, held=True, timeout=T)
    published = asyncio.ensure_future(_published_with_turn(a))
    await a.start()
    try:
        a_allocated = await allocated
        assert a_allocated.server == f"turn:user@127.0.0.1:{coturn.port}"  # no password
        await a.join(timeout=T)
        [turn_addr] = a.turn.addrs()
        assert turn_addr == (f"/ip4/{a_allocated.address.replace(':', '/udp/')}/quic-v1"
                             f"/p2p-turn/p2p/{a.peer_id}")
        assert (await asyncio.wait_for(published, 2 * T)).addrs == (turn_addr,)
        b = await nodes(dht=True, bootstrap=bootstrap)
        await b.join(timeout=T)
        out = await operations.connect(b, str(a.peer_id), message="through coturn",
                                       timeout=T)
        assert out["path"] == "turn" and out["reply"] == "through coturn"
        assert out["holepunch"] is None  # a TURN path is not a circuit to upgrade
        # A sees the TURN server's address, not B's: no dial-back there (as over a relay)
        assert out["reachable"] is None
        status = operations.status(b)
        assert [c["path"] for c in status["connections"] if c["peer_id"] == str(a.peer_id)] \
            == ["turn"]
        a_status = operations.status(a)
        [mine] = a_status["turn"]
        assert f"turn:         {mine['address']} on turn:user@" in status_text(a_status)
        assert mine["address"] == turn_addr.rsplit("/p2p/", 1)[0]
        assert mine["paths"] == 1 and mine["permissions"] >= 1
        inbound = [c for c in a.connections if c.peer_id == b.peer_id]
        assert [c.path.kind for c in inbound] == [PathKind.TURN]
        # B's trust store keeps the TURN address as one (a later dial by id says turn)
        assert b.trust.get(a.peer_id).addresses[-1] == turn_addr
    finally:
        await a.stop(grace=0.1)


def _dead_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("case", [
    pytest.param("wrong credentials", marks=needs_coturn), "no server"])
async def test_a_turn_failure_is_a_named_event_and_the_node_keeps_running(
        case, request, nodes) -> None:
    if case == "wrong credentials":
        url, says = request.getfixturevalue("coturn").url(password="nope"), \
            "rejected the credentials of user 'user' (401 Unauthorized)"
    else:
        url, says = f"turn:user:pass@127.0.0.1:{_dead_port()}", "refused (port unreachable)"
    b = await nodes()
    a = Node(NodeConfig(data_dir=b.config.data_dir.parent / "a", listen=("127.0.0.1", 0),
                        tls=False, dht=False, turn=(url,)))
    failed = a.next_event(TurnAllocationChanged, held=False, timeout=T)
    service = a.next_event(ServiceFailed, timeout=T)
    await a.start()
    try:
        event = await failed
        assert says in event.error and "nope" not in event.error
        assert (await service).service.startswith("turn.allocation turn:user@127.0.0.1:")
        assert a.turn.addrs() == [] and not any("p2p-turn" in t for t in a.announced_addrs())
        _, rtt = await b.ping(f"/ip4/127.0.0.1/udp/{a.udp_address[1]}/quic-v1/p2p/{a.peer_id}")
        assert rtt > 0  # the node serves on
    finally:
        await a.stop(grace=0.1)
