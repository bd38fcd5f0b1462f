"""The multiaddr subset and HOST:PORT, both directions, and every refusal."""

from __future__ import annotations

import pytest

from stack.base.errors import UsageError
from stack.base.identity import Identity
from stack.base.addresses import PeerAddress, parse_address

A = Identity.from_seed(b"a" * 32).peer_id
R = Identity.from_seed(b"r" * 32).peer_id


@pytest.mark.parametrize("text,expected", [
    (f"/ip4/127.0.0.1/udp/39001/quic-v1/p2p/{A}", PeerAddress("127.0.0.1", 39001, "quic", A)),
    (f"/ip4/10.0.0.2/tcp/4001/tls/p2p/{A}", PeerAddress("10.0.0.2", 4001, "tls", A)),
    ("/ip4/10.0.0.2/udp/5/quic-v1", PeerAddress("10.0.0.2", 5, "quic")),
    (f"/ip4/1.2.3.4/udp/9/quic-v1/p2p/{R}/p2p-circuit/p2p/{A}",
     PeerAddress("1.2.3.4", 9, "quic", A, R)),
    (f"/p2p/{A}", PeerAddress(peer_id=A)),
])
def test_multiaddr_round_trip(text: str, expected: PeerAddress) -> None:
    parsed = parse_address(text)
    assert parsed == expected
    assert parsed.multiaddr() == text
    assert parse_address(parsed.multiaddr()) == parsed


def test_host_port_and_bare_peer_id() -> None:
    assert parse_address("127.0.0.1:39001") == PeerAddress("127.0.0.1", 39001)
    assert parse_address(str(A)) == PeerAddress(peer_id=A)


@pytest.mark.parametrize("bad", [
    "", "/ip4/1.2.3.4", "/ip4/300.1.1.1/udp/1/quic-v1", "/ip4/1.2.3.4/udp/0/quic-v1",
    "/ip4/1.2.3.4/udp/1", "/ip4/1.2.3.4/tcp/1/noise", "/ip6/::1/udp/1/quic-v1",
    "/ip4/1.2.3.4/udp/1/quic-v1/p2p/notanid", f"/p2p/{A}/p2p/{R}", f"/p2p/{R}/p2p-circuit",
    "nonsense", "host:99999", "127.0.0.1:0",
])
def test_refusals(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_address(bad)


def test_address_property_requires_host() -> None:
    with pytest.raises(UsageError):
        _ = parse_address(f"/p2p/{A}").address
