"""Errors of the transports (DESIGN.md section 9): local misuse vs remote misbehaviour.

Every failure a peer can cause is a ``TransportError`` (a ``RemoteError``) with a named
subclass, so callers and tests tell "wrong identity" from "timed out" without parsing text.
"""

from __future__ import annotations

from stack.base.errors import LocalError, RemoteError

__all__ = [
    "TransportError",
    "InvalidCertificate",
    "PeerIdMismatch",
    "HandshakeFailed",
    "HandshakeTimeout",
    "TrustRefused",
    "ConnectionClosed",
    "StreamReset",
    "FrameTooLarge",
    "DialFailed",
    "LimitExceeded",
    "ProtocolViolation",
    "TransportClosed",
    "MigrationFailed",
]


class TransportError(RemoteError):
    """Root of what a peer or the path can do to a connection."""


class InvalidCertificate(TransportError):
    """The peer's certificate does not carry a valid libp2p SignedKey binding."""


class PeerIdMismatch(TransportError):
    """The peer authenticated as someone other than the peer id we dialed."""

    def __init__(self, expected: object, actual: object) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"dialed {expected} but the peer proved to be {actual}")


class HandshakeFailed(TransportError):
    """The TLS/QUIC handshake did not complete (alert, reset, refused)."""


class HandshakeTimeout(HandshakeFailed):
    """No complete handshake within the configured time."""


class DialFailed(TransportError):
    """Dialing a peer id failed on every address tried. ``attempts`` lists each
    ``(address, error)`` in the order tried (a failed DHT lookup as ``"DHT lookup"``), so
    the real cause is not hidden behind the last one (e.g. a QUIC timeout on the public
    address, then a different node at an announced 127.0.0.1)."""

    def __init__(self, peer_id: object, attempts: list[tuple[str, Exception]]) -> None:
        self.peer_id = peer_id
        self.attempts = attempts
        tried = "; ".join(f"{address}: {type(exc).__name__}: {exc}" for address, exc in attempts)
        super().__init__(f"could not reach {peer_id} at any of {len(attempts)} "
                         f"address(es): {tried}")


class TrustRefused(TransportError):
    """The trust store refused the peer (certificate changed, blocked, or pending)."""

    def __init__(self, outcome: str, message: str) -> None:
        self.outcome = outcome
        super().__init__(message)


class ConnectionClosed(TransportError):
    """The connection is gone (closed by either side, idle timeout, or failure)."""


class StreamReset(TransportError):
    """The peer (or we) reset the stream; its data is lost."""


class FrameTooLarge(TransportError):
    """A length-prefixed message or mux frame exceeds the allowed size."""


class ProtocolViolation(TransportError):
    """The peer sent bytes that break our framing or protocol rules."""


class LimitExceeded(LocalError):
    """A local limit (connections, streams per peer) refuses the operation."""


class TransportClosed(LocalError):
    """The transport (or node) was shut down; no new connections or streams."""


class MigrationFailed(TransportError):
    """A QUIC connection could not move to our new address (RFC 9000 section 9): we are
    not its client, its path is not our shared UDP port, or in time the peer issued no
    spare connection id or acknowledged nothing sent from the new path."""
