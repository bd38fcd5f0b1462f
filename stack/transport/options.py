"""Transport settings and the connection registry that enforces the limits."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from stack.base.identity import PeerId
from stack.transport.errors import LimitExceeded

__all__ = ["ALPN", "TransportOptions", "ConnectionLimits", "Registry"]

ALPN = "p2pstack/1"


@dataclass(frozen=True)
class ConnectionLimits:
    """Caps that protect a node from one peer, or many (all counts, not bytes)."""

    max_connections: int = 256
    max_connections_per_peer: int = 8
    max_streams_per_connection: int = 64   # concurrently open streams the peer may open
    max_streams_per_peer: int = 256        # the same, summed over all its connections
    max_handshakes_per_ip: int = 16        # TLS or QUIC handshakes in progress from one IP
    # QUIC: past this many half-open inbound handshakes, a new one must first prove its
    # address with a Retry round trip (RFC 9000 section 8.1.2); below it, no extra RTT
    quic_retry_threshold: int = 64


@dataclass(frozen=True)
class TransportOptions:
    """Settings shared by QUIC and TLS. Times in seconds, sizes in bytes."""

    handshake_timeout: float = 10.0
    idle_timeout: float = 60.0          # a connection with no traffic this long is closed
    keep_alive: float | None = 15.0     # ping an idle connection this often (None: never)
    stream_high_water: int = 1 << 20    # write() waits while this much is queued unsent/unacked
    max_stream_buffer: int = 16 << 20   # unread bytes a stream may hold before it is reset
    limits: ConnectionLimits = ConnectionLimits()


class Registry:
    """Open connections and peer-opened streams by peer; ``admit`` raises
    ``LimitExceeded`` past the connection limits, ``open_stream`` says False past the
    per-peer stream limit."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._per_peer: Counter[PeerId] = Counter()
        self._streams: Counter[PeerId] = Counter()  # open peer-initiated streams
        self._total = 0

    @property
    def total(self) -> int:
        return self._total

    def count(self, peer_id: PeerId) -> int:
        return self._per_peer[peer_id]

    def admit(self, peer_id: PeerId) -> None:
        if self._total >= self.limits.max_connections:
            raise LimitExceeded(f"connection limit ({self.limits.max_connections}) reached")
        if self._per_peer[peer_id] >= self.limits.max_connections_per_peer:
            raise LimitExceeded(f"per-peer connection limit "
                                f"({self.limits.max_connections_per_peer}) reached for {peer_id}")
        self._per_peer[peer_id] += 1
        self._total += 1

    def open_stream(self, peer_id: PeerId) -> bool:
        """Count a stream ``peer_id`` opened; False (not counted) past the per-peer limit."""
        if self._streams[peer_id] >= self.limits.max_streams_per_peer:
            return False
        self._streams[peer_id] += 1
        return True

    def close_stream(self, peer_id: PeerId) -> None:
        if self._streams[peer_id] > 0:
            self._streams[peer_id] -= 1
            if not self._streams[peer_id]:
                del self._streams[peer_id]

    def release(self, peer_id: PeerId) -> None:
        if self._per_peer[peer_id] > 0:
            self._per_peer[peer_id] -= 1
            self._total -= 1
            if not self._per_peer[peer_id]:
                del self._per_peer[peer_id]
