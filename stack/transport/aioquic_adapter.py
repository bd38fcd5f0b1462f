"""The one module that reaches into aioquic's private state (pinned: aioquic==1.7.2).

aioquic's public API lacks four things the QUIC driver needs; each is read here and
nowhere else, so an aioquic upgrade is checked in one place
(``tests/stack/transport/test_aioquic_adapter.py`` names any field that went away):

- servers must demand a client certificate (libp2p TLS spec), which aioquic does only
  when ``tls.Context._request_client_certificate`` is set, and the TLS context exists
  only once ``QuicConnection._initialize`` has run;
- the peer's certificate, which aioquic checks the signature of but does not expose
  (``tls.Context._peer_certificate``);
- the connection ids issued at connect/accept time, before any ``ConnectionIdIssued``
  event (``QuicConnection._host_cids``), and whether a server connection has decrypted
  anything yet (``QuicConnection._state``);
- the bytes queued on a stream and not yet acknowledged, for back-pressure
  (``QuicConnection._streams``, ``QuicStreamSender._buffer``).

Tests that drive a bare aioquic client against our server also read the termination
event aioquic holds before it drains (``QuicConnection._close_event``).
"""

from __future__ import annotations

from aioquic.quic import events
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from cryptography import x509

__all__ = ["AIOQUIC_VERSION", "PRIVATE_FIELDS", "ServerQuicConnection", "host_cids",
           "is_first_flight", "peer_certificate", "unacked_bytes", "pending_close_event"]

#: The aioquic release these fields were read from; pyproject.toml pins the same.
AIOQUIC_VERSION = "1.7.2"

#: Every private aioquic field or method used below, as ``owner.name`` where the owner is
#: ``QuicConnection``, its ``tls.Context`` (``QuicConnection.tls``) or a stream's
#: ``QuicStreamSender``.
PRIVATE_FIELDS = (
    "QuicConnection._initialize",
    "QuicConnection._host_cids",
    "QuicConnection._state",
    "QuicConnection._streams",
    "QuicConnection._close_event",
    "tls.Context._request_client_certificate",
    "tls.Context._peer_certificate",
    "QuicStreamSender._buffer",
)


class ServerQuicConnection(QuicConnection):
    """A server connection that requests the client's certificate."""

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        self.tls._request_client_certificate = True


def host_cids(quic: QuicConnection) -> list[bytes]:
    """The connection ids ``quic`` has issued so far (later ones come as events)."""
    return [cid.cid for cid in quic._host_cids]


def is_first_flight(quic: QuicConnection) -> bool:
    """True while not one received packet has decrypted (aioquic leaves FIRSTFLIGHT on
    the first that does)."""
    return quic._state is QuicConnectionState.FIRSTFLIGHT


def peer_certificate(quic: QuicConnection) -> x509.Certificate | None:
    """The certificate the peer presented in the handshake, if any."""
    return quic.tls._peer_certificate


def unacked_bytes(quic: QuicConnection, stream_id: int) -> int:
    """Bytes queued on ``stream_id``'s sender and not yet acknowledged (0 if aioquic no
    longer knows the stream)."""
    stream = quic._streams.get(stream_id)
    return 0 if stream is None else len(stream.sender._buffer)


def pending_close_event(quic: QuicConnection) -> events.ConnectionTerminated | None:
    """The termination aioquic has decided on but reports as an event only after its
    draining period."""
    return quic._close_event
