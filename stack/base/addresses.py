"""Addresses: the multiaddr subset of DESIGN.md section 4, plus ``HOST:PORT``.

Accepted text forms::

    /ip4/H/udp/P/quic-v1[/p2p/ID]        QUIC on the node's UDP port
    /ip4/H/tcp/P/tls[/p2p/ID]            TLS 1.3 over TCP
    /ip4/H/udp/P/quic-v1/p2p/R/p2p-circuit/p2p/ID   relayed through R (parsed; the
                                                      relay transport lives in nat/)
    /ip4/H/udp/P/quic-v1/p2p-turn/p2p/ID  H:P is a TURN server's relayed address of ID
                                          (issue 9; ``nat.turn``): QUIC to it reaches
                                          ID, if ID has permitted our IP there
    /p2p/ID                              a peer id alone (dial by id)
    HOST:PORT                            transport chosen by the caller

``parse_address`` returns a ``PeerAddress`` or raises ``UsageError``;
``PeerAddress.multiaddr()`` formats it back (round trip).

``p2p-turn`` is p2pstack's own component (no registered multiaddr protocol names a TURN
allocation): the address is dialed like any UDP address, but it is a relay's, so a dialer
orders it with the relayed addresses, after the direct ones, and reports the path as
``turn``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from stack.base.errors import UsageError
from stack.base.identity import InvalidPeerId, PeerId
from stack.base.net import Address, parse_host_port

__all__ = ["PeerAddress", "parse_address", "TRANSPORTS"]

TRANSPORTS = ("quic", "tls")


@dataclass(frozen=True)
class PeerAddress:
    """Where (and optionally who) to dial. ``host``/``port`` are None for ``/p2p/ID``."""

    host: str | None = None
    port: int | None = None
    transport: str | None = None        # "quic", "tls", or None (caller's choice)
    peer_id: PeerId | None = None
    relay: PeerId | None = None         # set for p2p-circuit addresses
    turn: bool = False                  # H:P is a TURN relayed address (p2p-turn)

    @property
    def address(self) -> Address:
        if self.host is None or self.port is None:
            raise UsageError("this address names a peer but no host and port")
        return (self.host, self.port)

    def with_transport(self, transport: str) -> PeerAddress:
        return PeerAddress(self.host, self.port, transport, self.peer_id, self.relay,
                           self.turn)

    def multiaddr(self) -> str:
        parts = []
        if self.host is not None:
            proto = "udp" if self.transport in (None, "quic") else "tcp"
            suffix = "quic-v1" if proto == "udp" else "tls"
            parts.append(f"/ip4/{self.host}/{proto}/{self.port}/{suffix}")
            if self.turn:
                parts.append("/p2p-turn")
        if self.relay is not None:
            parts.append(f"/p2p/{self.relay}/p2p-circuit")
        if self.peer_id is not None:
            parts.append(f"/p2p/{self.peer_id}")
        return "".join(parts)

    def __str__(self) -> str:
        return self.multiaddr()


def _ip4(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise UsageError(f"not an IPv4 address: {text!r}") from None


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 65535:
        raise UsageError(f"bad port {text!r}")
    return int(text)


def _peer(text: str) -> PeerId:
    try:
        return PeerId.parse(text)
    except InvalidPeerId as exc:
        raise UsageError(str(exc)) from None


def parse_address(text: str) -> PeerAddress:
    """Parse a multiaddr of the supported subset, a bare peer id, or ``HOST:PORT``."""
    text = text.strip()
    if not text:
        raise UsageError("empty address")
    if not text.startswith("/"):
        if ":" not in text:
            try:
                return PeerAddress(peer_id=PeerId.parse(text))  # a bare peer id
            except InvalidPeerId:
                raise UsageError(f"{text!r} is neither HOST:PORT, a multiaddr nor a peer "
                                 "id") from None
        name, number = parse_host_port(text)
        if number == 0:  # fine for a listen address, never for a dial target
            raise UsageError(f"port 0 in {text!r}: a peer address needs its port")
        return PeerAddress(name, number)
    parts = text.split("/")[1:]
    if parts and parts[-1] == "":
        parts.pop()
    i = 0
    host: str | None = None
    port: int | None = None
    transport: str | None = None
    peer: PeerId | None = None
    relay: PeerId | None = None
    turn = False
    if parts[:1] == ["ip4"]:
        if len(parts) < 4:
            raise UsageError(f"incomplete multiaddr {text!r}")
        host = _ip4(parts[1])
        proto, port = parts[2], _port(parts[3])
        i = 4
        if proto == "udp":
            if parts[i:i + 1] != ["quic-v1"]:
                raise UsageError(f"UDP multiaddrs must name quic-v1: {text!r}")
            transport = "quic"
        elif proto == "tcp":
            if parts[i:i + 1] != ["tls"]:
                raise UsageError(f"TCP multiaddrs must name tls: {text!r}")
            transport = "tls"
        else:
            raise UsageError(f"unsupported protocol {proto!r} in {text!r}")
        i += 1
        if parts[i:i + 1] == ["p2p-turn"]:
            if transport != "quic":
                raise UsageError(f"p2p-turn needs a UDP (quic-v1) address: {text!r}")
            turn = True
            i += 1
    while i < len(parts):
        if parts[i] == "p2p" and i + 1 < len(parts):
            if peer is not None:
                raise UsageError(f"two peer ids without p2p-circuit in {text!r}")
            peer = _peer(parts[i + 1])
            i += 2
        elif parts[i] == "p2p-circuit" and peer is not None and relay is None and not turn:
            relay, peer = peer, None
            i += 1
        else:
            raise UsageError(f"unsupported multiaddr component {parts[i]!r} in {text!r}")
    if relay is not None and peer is None:
        raise UsageError(f"p2p-circuit without a target peer id in {text!r}")
    if host is None and peer is None:
        raise UsageError(f"multiaddr names neither host nor peer: {text!r}")
    return PeerAddress(host, port, transport, peer, relay, turn)
