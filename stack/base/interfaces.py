"""The interfaces the layers above implement and consume (DESIGN.md section 1, habit 9).

Each is a small ``typing.Protocol``: ``stack.transport`` implements ``Stream``,
``Connection`` and ``Transport``; the node's protocol handlers and the discovery and NAT
packages see only these, never a concrete transport. A ``PathSocket`` is what QUIC sends
its datagrams through, so a punched or relayed path carries the same end-to-end QUIC
(iroh's ``magicsock``, rust-libp2p's ``relay::client``).

``Path`` is the first-class value a connection reports: how its bytes travel.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from stack.base.identity import PeerId
from stack.base.net import Address

__all__ = ["PathKind", "Path", "PathSocket", "Stream", "Connection", "Transport",
           "AddressLookup"]


class PathKind(StrEnum):
    """How a connection's packets travel (DESIGN.md section 1)."""
    DIRECT = "direct"      # straight to the peer's address
    LAN = "lan"            # to an address on our own link (found by mDNS)
    PUNCHED = "punched"    # through NATs opened by a simultaneous punch
    RELAYED = "relayed"    # inside a circuit on a relay node
    TURN = "turn"          # through a TURN server's allocation


@dataclass(frozen=True)
class Path:
    """A connection's path: its kind, the address packets go to (the relay's for a relayed
    path) and, for a relayed path, the relay's peer id."""
    kind: PathKind
    address: Address
    relay: PeerId | None = None

    def __str__(self) -> str:
        host, port = self.address
        via = f" via {self.relay}" if self.relay is not None else ""
        return f"{self.kind} {host}:{port}{via}"


class PathSocket(Protocol):
    """Where a QUIC connection's datagrams go and come from.

    ``send`` never blocks and never raises for a network condition (a datagram may be
    lost, as UDP's are); ``path`` describes it."""

    @property
    def path(self) -> Path: ...
    def send(self, data: bytes) -> None: ...


class Stream(Protocol):
    """A reliable, ordered, bidirectional byte stream inside a ``Connection``.

    Messages are framed with a 4-byte big-endian length prefix, bounded by ``max_size``
    (``FrameTooLarge`` above it). ``next_message`` returns None on a clean FIN."""

    stream_id: int

    async def read(self, max_bytes: int = 65536) -> bytes: ...
    async def readexactly(self, n: int) -> bytes: ...
    async def write(self, data: bytes) -> None: ...
    async def close(self) -> None: ...
    def reset(self) -> None: ...
    async def write_message(self, payload: bytes) -> None: ...
    async def read_message(self, max_size: int = ...) -> bytes: ...
    async def next_message(self, max_size: int = ...) -> bytes | None: ...


class Connection(Protocol):
    """An authenticated, encrypted connection to one peer (QUIC or TLS over TCP).

    ``peer_id`` is proven by the handshake; ``remote_address`` is where the packets come
    from (for a relayed path, the relay)."""

    peer_id: PeerId
    transport: str            # "quic" or "tls"
    remote_address: Address
    is_client: bool           # True on the side that dialed

    @property
    def path(self) -> Path: ...
    async def open_stream(self) -> Stream: ...
    async def accept_stream(self) -> Stream: ...
    async def close(self, grace: float = 5.0) -> None: ...
    def abort(self, reason: str = "aborted") -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def closing(self) -> bool: ...   # closed, or a graceful close began: no new streams
    async def wait_closed(self) -> None: ...


class Transport(Protocol):
    """Dials and accepts ``Connection``s (accepted ones go to the callback the transport
    was built with)."""

    name: str

    async def dial(self, addr: Address, expected: PeerId | None = None) -> Connection: ...
    async def close(self, grace: float = 1.0) -> None: ...


#: Name resolution through the network seam: ``(host, port) -> (ipv4, port)``; raises
#: ``UsageError`` for a name that does not resolve. The simulator supplies its own.
AddressLookup = Callable[[Address], Awaitable[Address]]
