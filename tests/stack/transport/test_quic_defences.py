"""QUIC under a half-open flood (issue 14 section 2): Retry past a threshold of half-open
handshakes (RFC 9000 section 8.1.2), its stateless tokens, and the per-IP cap.

The counters and token checks run sans-I/O on virtual time (datagrams handed to the
transport, its replies collected); the flood runs on real 127.0.0.x UDP sockets, and the
dial starts once the server has handled every flood datagram (a tap on its port says
when), so each run sees the same order."""

from __future__ import annotations

import asyncio
import ssl
import time

import pytest
from aioquic.buffer import Buffer
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import pull_quic_header

from simulations.vtime import current_clock, run_virtual
from stack.base.identity import Identity
from stack.base.net import UdpNetwork
from stack.transport.aioquic_adapter import pending_close_event
from stack.transport.certs import make_certificate
from stack.transport.errors import HandshakeTimeout
from stack.transport.options import ALPN, ConnectionLimits, Registry, TransportOptions
from stack.transport.quic import RETRY_TOKEN_LIFETIME, QuicTransport
from tests.stack.transport.helpers import quic_peer

SERVER = ("10.0.0.2", 4433)


def _client_at(server: tuple[str, int] = SERVER, **kwargs) -> QuicConnection:
    """An aioquic client (no certificate: it never gets that far) that has connected."""
    config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN],
                               verify_mode=ssl.CERT_NONE, **kwargs)
    quic = QuicConnection(configuration=config)
    quic.connect(server, now=asyncio.get_running_loop().time())
    return quic


def _initial(quic: QuicConnection) -> bytes:
    datagrams = quic.datagrams_to_send(now=asyncio.get_running_loop().time())
    assert len(datagrams) == 1 and len(datagrams[0][0]) >= 1200
    return datagrams[0][0]


def _server(sent: list, **limits: int) -> QuicTransport:
    """A server transport on the virtual clock whose datagrams land in ``sent``."""
    options = TransportOptions(limits=ConnectionLimits(**limits))
    return QuicTransport(
        send=lambda data, addr: sent.append((data, addr)), clock=current_clock(),
        options=options, certified=make_certificate(Identity.generate(), time.time()),
        registry=Registry(options.limits), on_connection=lambda conn: None)


def _is_retry(data: bytes) -> bool:
    return data[0] & 0xF0 == 0xF0  # long header, QUIC v1 packet type 3


def test_retry_only_past_the_threshold_of_half_open_handshakes() -> None:
    async def main() -> None:
        sent: list = []
        server = _server(sent, quic_retry_threshold=2)
        for i in (1, 2):  # below the threshold: connections, no Retry
            server([(_initial(_client_at()), (f"10.0.1.{i}", 5000))])
        assert len(server._conns) == 2 and server.stats["retry_sent"] == 0
        assert not any(_is_retry(d) for d, _ in sent)
        del sent[:]
        client = _client_at()
        server([(_initial(client), ("10.0.1.3", 5000))])  # at it: a Retry, no state
        assert len(server._conns) == 2 and server.stats["retry_sent"] == 1
        assert [(_is_retry(d), a) for d, a in sent] == [(True, ("10.0.1.3", 5000))]
        assert len(sent[0][0]) < 200  # far below the 1200 B Initial it answers

        # the client takes the Retry and comes back with the token: a connection, above
        # the threshold, bound to the original and the Retry's connection ids
        client.receive_datagram(sent[0][0], SERVER, now=0.0)
        again = _initial(client)
        del sent[:]
        server([(again, ("10.0.1.3", 5000))])
        assert len(server._conns) == 3 and server.stats["retry_validated"] == 1
        assert sent and not any(_is_retry(d) for d, _ in sent)
        # and the client accepts the server's answer (its transport parameters name
        # both ids: a mismatch would close the connection)
        for data, _ in sent:
            client.receive_datagram(data, SERVER, now=0.0)
        assert pending_close_event(client) is None
        assert any(isinstance(e, events.HandshakeCompleted)
                   for e in iter(client.next_event, None))

    run_virtual(main())


def test_forged_replayed_and_expired_tokens_are_dropped_and_counted() -> None:
    async def main() -> None:
        sent: list = []
        server = _server(sent, quic_retry_threshold=0)
        # a token the server never issued
        forged = _client_at(token=b"\x00" * 8 + b"\x08" + b"\x01" * 8 + b"\x02" * 16)
        server([(_initial(forged), ("10.0.1.1", 5000))])
        garbage = _client_at(token=b"no token of ours")
        server([(_initial(garbage), ("10.0.1.1", 5001))])
        assert server.stats["token_invalid"] == 2 and not sent and not server._conns

        client = _client_at()
        server([(_initial(client), ("10.0.1.2", 5000))])
        assert server.stats["retry_sent"] == 1
        retry = sent.pop()[0]
        client.receive_datagram(retry, SERVER, now=0.0)
        again = _initial(client)
        # a real token from another port or IP than it was issued to
        server([(again, ("10.0.1.2", 5001)), (again, ("10.0.1.3", 5000))])
        assert server.stats["token_invalid"] == 4
        # from the right address, for another connection (a token opens one, not many)
        token = pull_quic_header(Buffer(data=retry), host_cid_length=8).token
        other = _client_at(token=token)
        server([(_initial(other), ("10.0.1.2", 5000))])
        assert server.stats["token_invalid"] == 5
        # and the right address and connection, too late
        await asyncio.sleep(RETRY_TOKEN_LIFETIME + 0.01)  # virtual time
        server([(again, ("10.0.1.2", 5000))])
        assert server.stats["token_invalid"] == 6
        assert not sent and not server._conns and server.stats["retry_validated"] == 0
        assert server.dropped == 6 + 1  # and the Retry'd Initial

    run_virtual(main())


def test_per_ip_cap_on_half_open_handshakes() -> None:
    async def main() -> None:
        sent: list = []
        server = _server(sent, max_handshakes_per_ip=3)
        server([(_initial(_client_at()), ("10.0.1.1", 5000 + i)) for i in range(5)])
        assert len(server._conns) == 3 and server.stats["half_open_ip_capped"] == 2
        server([(_initial(_client_at()), ("10.0.1.2", 5000))])  # another IP: its own cap
        assert len(server._conns) == 4
        # half-open ones that time out free their IP's share
        await asyncio.sleep(server.options.handshake_timeout + 1.0)
        assert not server._conns and not server._half_open and not server.half_open
        server([(_initial(_client_at()), ("10.0.1.1", 6000))])
        assert len(server._conns) == 1 and server.stats["half_open_ip_capped"] == 2

    run_virtual(main())


async def test_completed_handshakes_leave_the_per_ip_count() -> None:
    """Only half-open handshakes count against the per-IP cap: a host may open more
    connections than the cap, one after another, without a Retry."""
    limits = ConnectionLimits(max_handshakes_per_ip=2, max_connections_per_peer=16)
    a = await quic_peer(options=TransportOptions(limits=limits))
    b = await quic_peer()
    try:
        for _ in range(4):
            await asyncio.wait_for(b.transport.dial(a.address, a.identity.peer_id), 5.0)
        assert a.transport.half_open == 0 and not a.transport._half_open
        assert a.transport.stats["half_open_ip_capped"] == 0
        assert a.transport.stats["retry_sent"] == 0
    finally:
        await b.aclose()
        await a.aclose()


async def _flood_sockets(ips: list[str]) -> list:
    return [await UdpNetwork().bind((ip, 0), lambda batch: None) for ip in ips]


class Seen:
    """A tap that counts the datagrams a server handled, and wakes whoever waits for n."""

    def __init__(self) -> None:
        self.count = 0
        self._waiters: list[tuple[int, asyncio.Future]] = []

    def __call__(self, batch: list) -> None:
        self.count += len(batch)
        for n, future in self._waiters:
            if self.count >= n and not future.done():
                future.set_result(None)

    async def at_least(self, n: int) -> None:
        if self.count < n:
            future = asyncio.get_running_loop().create_future()
            self._waiters.append((n, future))
            await asyncio.wait_for(future, 5.0)


@pytest.mark.parametrize("shape", ["one IP, many ports", "many IPs"])
async def test_a_legitimate_dialer_connects_through_a_half_open_flood(shape: str) -> None:
    """Valid Initials (aioquic clients that never continue) from 40 sources fill what
    would be the half-open table (16 here: twice max_connections) before a dialer from
    127.0.0.1 tries. The per-IP cap holds one flooding IP to 4 half-open handshakes;
    past the threshold of 6 every Initial without a token gets a Retry, which the flood
    never answers, so the table keeps room and the dialer (which does answer) connects
    well within its handshake timeout."""
    limits = ConnectionLimits(max_connections=8, max_handshakes_per_ip=4,
                              quic_retry_threshold=6)
    seen = Seen()
    server = await quic_peer(options=TransportOptions(limits=limits), tap=seen)
    dialer = await quic_peer(options=TransportOptions(handshake_timeout=2.0))
    flood = 40
    ips = ["127.0.0.2"] * flood if shape == "one IP, many ports" else [
        f"127.0.0.{10 + i}" for i in range(flood)]
    sockets = await _flood_sockets(ips)
    try:
        for sock in sockets:
            sock.send(_initial(_client_at(server.address)), server.address)
        await seen.at_least(flood)
        conn = await dialer.transport.dial(server.address, server.identity.peer_id)
        assert conn.peer_id == server.identity.peer_id
        stats = server.transport.stats
        if shape == "one IP, many ports":
            assert stats["half_open_ip_capped"] == flood - 4
            assert stats["retry_sent"] == 0  # 4 half open: below the threshold
        else:
            assert stats["half_open_ip_capped"] == 0
            assert stats["retry_sent"] == flood - 6 + 1  # the rest, and the dialer
            assert stats["retry_validated"] == 1
        assert stats["table_full"] == 0
    finally:
        for sock in sockets:
            sock.close()
        await dialer.aclose()
        await server.aclose()


async def test_without_the_defences_the_flood_locks_the_dialer_out() -> None:
    """The same flood with the cap and the threshold out of the way fills the table, and
    the dialer times out: what the test above guards against."""
    limits = ConnectionLimits(max_connections=8, max_handshakes_per_ip=1000,
                              quic_retry_threshold=1000)
    seen = Seen()
    server = await quic_peer(options=TransportOptions(limits=limits), tap=seen)
    dialer = await quic_peer(options=TransportOptions(handshake_timeout=1.0))
    sockets = await _flood_sockets([f"127.0.0.{10 + i}" for i in range(40)])
    try:
        for sock in sockets:
            sock.send(_initial(_client_at(server.address)), server.address)
        await seen.at_least(40)
        with pytest.raises(HandshakeTimeout):
            await dialer.transport.dial(server.address, server.identity.peer_id)
        assert server.transport.stats["table_full"] >= 40 - 16
        assert server.transport.half_open == 16
    finally:
        for sock in sockets:
            sock.close()
        await dialer.aclose()
        await server.aclose()
