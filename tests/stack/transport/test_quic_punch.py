"""QUIC's side of hole punching (issue 9 section 3): an Initial from an IP we agreed a
punch with arrives on the shared port past the Retry threshold. It must not get a
Retry (the punch window is a few round trips, and the peer's NAT mapping was opened for
this exchange), and its connection's path is PUNCHED; once the window has passed the
same Initial gets a Retry again. A dial given a timeout aborts at it, leaving nothing."""

from __future__ import annotations

import asyncio

import pytest

from simulations.vtime import current_clock, run_virtual
from stack.base.interfaces import PathKind
from stack.transport.errors import HandshakeTimeout
from stack.transport.quic import UdpPathSocket
from tests.stack.transport.test_quic_defences import _client_at, _initial, _is_retry, _server


def test_an_expected_punch_is_accepted_without_retry_as_punched() -> None:
    async def main() -> None:
        sent: list = []
        server = _server(sent, quic_retry_threshold=0)   # every Initial would get a Retry
        now = current_clock().monotonic()
        server.expect_punch(["203.0.113.7"], now + 5.0)
        server([(_initial(_client_at()), ("203.0.113.7", 40000))])
        assert server.stats["retry_sent"] == 0 and not any(_is_retry(d) for d, _ in sent)
        [conn] = server._conns
        assert conn.path.kind is PathKind.PUNCHED
        # another IP: Retry as before
        server([(_initial(_client_at()), ("203.0.113.8", 40000))])
        assert server.stats["retry_sent"] == 1
    run_virtual(main())


def test_expect_punch_window_ends() -> None:
    async def main() -> None:
        sent: list = []
        server = _server(sent, quic_retry_threshold=0)
        server.expect_punch(["203.0.113.7"], current_clock().monotonic() + 1.0)
        await asyncio.sleep(2.0)
        server([(_initial(_client_at()), ("203.0.113.7", 40000))])
        assert server.stats["retry_sent"] == 1 and not server._conns
    run_virtual(main())


def test_a_dial_with_a_timeout_aborts_at_it() -> None:
    async def main() -> None:
        server = _server([])
        sock = UdpPathSocket(lambda data, addr: None, ("203.0.113.9", 39001), PathKind.PUNCHED)
        with pytest.raises(HandshakeTimeout):
            await server.dial_path(sock, timeout=0.5)
        assert not server._conns and current_clock().monotonic() < 1.0
    run_virtual(main())
