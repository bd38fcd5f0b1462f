"""TURN (issue 9 section 2, ``nat.turn``): the URL form, and an allocation on a real
coturn on 127.0.0.1 (interop, DESIGN.md section 7 tier 6) carrying end-to-end QUIC from
a dialer that has no TURN client at all. Skipped with the reason without coturn."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aioice import stun

from nat.turn import (TurnAllocation, TurnAllocationLost, TurnAuthFailed, TurnServer,
                      TurnUnreachable, parse_turn_url)
from nat.turn.allocation import _Client
from stack.base.errors import UsageError
from stack.base.interfaces import PathKind
from stack.transport.errors import HandshakeTimeout
from stack.transport.options import TransportOptions
from stack.transport.quic import UdpPathSocket
from tests.nat.coturn import Coturn, start_coturn
from tests.stack.transport.helpers import QuicPeer, quic_peer

T = 10.0
needs_coturn = pytest.mark.skipif(shutil.which("turnserver") is None,
                                  reason="coturn (turnserver) is not installed")


# ------------------------------------------------------------------------------ URLs

def test_turn_url_parses_credentials_host_and_port() -> None:
    server = parse_turn_url("turn:alice:s3cr:et@turn.example.org:3479")
    assert server == TurnServer("alice", "s3cr:et", "turn.example.org", 3479)
    assert parse_turn_url("turn:a:b@10.0.0.1").port == 3478
    assert parse_turn_url("turn:a:b@10.0.0.1:5000?transport=udp").port == 5000
    assert "s3cr" not in str(server) and "s3cr" not in repr(server)  # never shown


@pytest.mark.parametrize(("text", "says"), [
    ("stun:a:b@h:1", "not a turn: URL"),
    ("turns:a:b@h:1", "turns: (TURN over TLS) is not supported"),
    ("turn:h:3478", "without USER:PASS@"),
    ("turn:alice@h:3478", "needs both a username and a password"),
    ("turn::pw@h:3478", "needs both a username and a password"),
    ("turn:a:b@", "without a host"),
    ("turn:a:b@h:99999", "port out of range"),
    ("turn:a:b@h:0", "port 0"),
    ("turn:a:b@h:1?transport=tcp", "only UDP TURN"),
    ("turn:a:b@999.1.1.1:1", "not an IPv4 address"),
])
def test_a_bad_turn_url_is_a_usage_error(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=None) as info:
        parse_turn_url(text)
    assert says in str(info.value)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------- against coturn

@pytest.fixture
def coturn(tmp_path: Path):
    server = start_coturn(tmp_path)
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
async def peers() -> AsyncIterator[tuple[QuicPeer, QuicPeer]]:
    options = TransportOptions(handshake_timeout=T)
    listener, dialer = await quic_peer(options=options), await quic_peer(options=options)
    try:
        yield listener, dialer
    finally:
        await listener.aclose()
        await dialer.aclose()


def _allocation(listener: QuicPeer, url: str, **kw) -> TurnAllocation:
    return TurnAllocation(parse_turn_url(url), accept_path=listener.transport.accept_path,
                          timeout=kw.pop("timeout", T), **kw)


async def _echo_server(conn) -> None:
    stream = await conn.accept_stream()
    while (data := await stream.read()):
        await stream.write(data)
    await stream.close()


async def _dial_turn(dialer: QuicPeer, relayed, expected, timeout=None):
    sock = UdpPathSocket(dialer.endpoint.send, relayed, PathKind.TURN)
    return await dialer.transport.dial_path(sock, expected, timeout=timeout)


@needs_coturn
async def test_quic_end_to_end_through_a_coturn_allocation_is_byte_exact(
        coturn: Coturn, peers) -> None:
    listener, dialer = peers
    allocation = _allocation(listener, coturn.url())
    try:
        relayed = await asyncio.wait_for(allocation.allocate(), T)
        assert relayed[0] == "127.0.0.1" and relayed[1] != coturn.port
        assert allocation.lifetime > 0 and allocation.mapped_address == (
            "127.0.0.1", allocation._transport.get_extra_info("sockname")[1])
        await allocation.permit("127.0.0.1")  # the dialer's IP
        conn = await asyncio.wait_for(_dial_turn(dialer, relayed,
                                                 listener.identity.peer_id), T)
        assert conn.path.kind is PathKind.TURN and conn.remote_address == relayed
        inbound = await asyncio.wait_for(listener.incoming.get(), T)
        assert inbound.path.kind is PathKind.TURN
        assert inbound.peer_id == dialer.identity.peer_id   # authenticated end to end
        assert inbound.remote_address == coturn.address     # our packets go to the server
        server = asyncio.ensure_future(_echo_server(inbound))
        payload = os.urandom(200_000)  # many datagrams, each through ChannelData
        stream = await conn.open_stream()
        await stream.write(payload)
        got = await asyncio.wait_for(stream.readexactly(len(payload)), T)
        assert got == payload
        # a maintenance pass (allocation refresh, permissions, channel re-binds) keeps it
        await asyncio.wait_for(allocation._maintain(), T)
        assert allocation.refreshes == 1 and allocation.permission_failures == 0
        await stream.write(b"after refresh")
        assert await asyncio.wait_for(stream.readexactly(13), T) == b"after refresh"
        await stream.close()
        await asyncio.wait_for(server, T)
        assert allocation.paths == 1
        await conn.close(grace=0.5)
    finally:
        await allocation.close()


@needs_coturn
async def test_without_a_permission_the_server_relays_nothing(coturn: Coturn, peers) -> None:
    listener, dialer = peers
    allocation = _allocation(listener, coturn.url())
    try:
        relayed = await asyncio.wait_for(allocation.allocate(), T)
        with pytest.raises(HandshakeTimeout):
            await _dial_turn(dialer, relayed, listener.identity.peer_id, timeout=1.0)
        assert allocation.paths == 0
    finally:
        await allocation.close()


@needs_coturn
async def test_wrong_credentials_are_turn_auth_failed(coturn: Coturn, peers) -> None:
    listener, _ = peers
    allocation = _allocation(listener, coturn.url(password="wrong"))
    with pytest.raises(TurnAuthFailed, match=r"rejected the credentials of user 'user' "
                                             r"\(401 Unauthorized\)") as info:
        await asyncio.wait_for(allocation.allocate(), T)
    assert info.value.code == 401 and "wrong" not in str(info.value)


async def test_no_server_is_turn_unreachable_at_once(peers) -> None:
    listener, _ = peers
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # nobody listens after
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    allocation = _allocation(listener, f"turn:user:pass@127.0.0.1:{port}", timeout=5.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TurnUnreachable, match="refused"):
        await allocation.allocate()
    assert loop.time() - started < 2.0  # the ICMP refusal, not the 5 s timeout


async def test_a_silent_server_is_turn_unreachable_after_the_timeout(peers) -> None:
    listener, _ = peers
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # bound, never answers
        silent.bind(("127.0.0.1", 0))
        url = f"turn:user:pass@127.0.0.1:{silent.getsockname()[1]}"
        allocation = _allocation(listener, url, timeout=0.3)
        with pytest.raises(TurnUnreachable, match=r"no answer .* to Allocate within 0.3s"):
            await allocation.allocate()


@needs_coturn
async def test_a_server_gone_after_allocating_is_turn_allocation_lost(
        coturn: Coturn, peers) -> None:
    listener, _ = peers
    allocation = _allocation(listener, coturn.url(), timeout=2.0, refresh=0.2)
    try:
        await asyncio.wait_for(allocation.allocate(), T)
        coturn.kill()
        with pytest.raises(TurnAllocationLost, match="lost"):
            await asyncio.wait_for(allocation.run(), T)
    finally:
        await allocation.close()


# ------------------------------------------- the receive path, fed directly (no server)

class _Receiver:
    def __init__(self, sock, on_closed) -> None:
        self.sock, self.on_closed = sock, on_closed
        self.batches: list[list[bytes]] = []
        self.closed: str | None = None

    def __call__(self, batch: list[bytes]) -> None:
        self.batches.append(batch)

    def close(self, reason: str) -> None:
        self.closed = reason


def _data_indication(peer: tuple[str, int], payload: bytes) -> bytes:
    message = stun.Message(message_method=stun.Method.DATA,
                           message_class=stun.Class.INDICATION)
    message.attributes["XOR-PEER-ADDRESS"] = peer
    message.attributes["DATA"] = payload
    return bytes(message)


async def test_what_the_server_relays_reaches_only_permitted_quic_paths() -> None:
    receivers: list[_Receiver] = []

    def accept(sock, on_closed):
        receivers.append(_Receiver(sock, on_closed))
        return receivers[-1]

    allocation = TurnAllocation(parse_turn_url("turn:u:p@127.0.0.1:3478"),
                                accept_path=accept, max_paths=2)
    client = _Client(allocation, allocation.server, ("127.0.0.1", 3478))
    quic = b"\xc0" + bytes(20)  # a long-header first byte
    await allocation.permit("192.0.2.1")  # not allocated yet: remembered only
    client.datagram_received(_data_indication(("198.51.100.9", 5000), quic), ("x", 0))
    assert allocation.dropped == 1 and not receivers  # no permission for that IP
    client.datagram_received(_data_indication(("192.0.2.1", 5000), b"\x01junk"), ("x", 0))
    assert allocation.dropped == 2 and not receivers  # not QUIC
    client.datagram_received(b"\x40\x00\x00\x05hello", ("x", 0))  # an unbound channel
    client.datagram_received(b"\xff\xfe", ("x", 0))                # no STUN at all
    assert allocation.dropped == 4
    for port in (5000, 5000, 5001, 5002):
        client.datagram_received(_data_indication(("192.0.2.1", port), quic), ("x", 0))
    assert [r.sock.peer for r in receivers] == [("192.0.2.1", p) for p in (5000, 5001, 5002)]
    assert receivers[0].batches == [[quic], [quic]]
    assert receivers[0].sock.path.kind is PathKind.TURN
    assert receivers[0].closed == "TURN path evicted"  # max_paths=2: the oldest went
    assert allocation.paths == 2
    receivers[2].on_closed(object())  # its connection closed: the path is forgotten
    assert allocation.paths == 1
    client.channel_to_peer[0x4000] = ("192.0.2.1", 5001)   # a bound channel delivers
    client.datagram_received(b"\x40\x00" + len(quic).to_bytes(2, "big") + quic, ("x", 0))
    assert receivers[1].batches == [[quic], [quic]]
    receivers[2].sock.send(b"x")  # no allocation: counted, never raised
    assert allocation.send_failures == 1


async def test_permissions_are_bounded_oldest_first() -> None:
    allocation = TurnAllocation(parse_turn_url("turn:u:p@127.0.0.1:3478"),
                                accept_path=lambda sock, closed: None, max_permissions=2)
    for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.1", "192.0.2.3"):
        await allocation.permit(ip)
    assert list(allocation.permitted) == ["192.0.2.1", "192.0.2.3"]
    assert allocation.refresh_interval == 240.0  # 80% of the 300 s permission lifetime
