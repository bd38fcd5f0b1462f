"""The one module that reaches into aioquic's private state (pinned: aioquic==1.7.2).

aioquic's public API lacks six things the QUIC driver needs; each is read here and
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
  (``QuicConnection._streams``, ``QuicStreamSender._buffer``);
- read-driven flow control: aioquic grants stream credit on *receipt* (its
  ``QuicConnection._write_stream_limits`` doubles a stream's MAX_STREAM_DATA whenever
  the peer has sent half of it), so a reader that falls behind never holds the writer.
  ``FlowControlledQuicConnection`` turns that doubling off and ``grant_stream_credit``
  raises the limit as the application consumes bytes (see both for why this hook);
- what is left of the anti-amplification budget toward a server connection's peer
  (RFC 9000 section 8.1: three times the bytes received from an address not yet
  validated), which aioquic keeps on its current ``QuicNetworkPath``
  (``QuicConnection._network_paths``). aioquic holds its own packets to that budget but
  not a CONNECTION_CLOSE, so the driver checks the close against it;
- how many connection ids the peer issued that we have not used yet
  (``QuicConnection._peer_cid_available``): a client that migrates (RFC 9000 section 9.5)
  must not send from its new address with the id it used on the old one, and aioquic's
  public ``change_connection_id()`` silently keeps the old id when no spare one is left.

Tests that drive a bare aioquic client against our server also read the termination
event aioquic holds before it drains (``QuicConnection._close_event``).
"""

from __future__ import annotations

from aioquic.quic import events
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.stream import QuicStream
from cryptography import x509

__all__ = ["AIOQUIC_VERSION", "PRIVATE_FIELDS", "FlowControlledQuicConnection",
           "ServerQuicConnection", "grant_stream_credit", "host_cids", "is_first_flight",
           "peer_certificate", "unacked_bytes", "pending_close_event",
           "amplification_budget", "spare_peer_cids"]

#: The aioquic release these fields were read from; pyproject.toml pins the same.
AIOQUIC_VERSION = "1.7.2"

#: Every private aioquic field or method used below, as ``owner.name`` where the owner is
#: ``QuicConnection``, its ``tls.Context`` (``QuicConnection.tls``), a stream's
#: ``QuicStream`` (``QuicConnection._streams[id]``, whose fields are public but the
#: object is reached only through ``_streams``), its ``QuicStreamSender`` or its
#: ``QuicStreamReceiver``, or the ``QuicNetworkPath`` at ``QuicConnection._network_paths[0]``
#: (public fields again, of an object reached only through a private list).
PRIVATE_FIELDS = (
    "QuicConnection._initialize",
    "QuicConnection._write_stream_limits",
    "QuicConnection._host_cids",
    "QuicConnection._state",
    "QuicConnection._streams",
    "QuicConnection._close_event",
    "tls.Context._request_client_certificate",
    "tls.Context._peer_certificate",
    "QuicStreamSender._buffer",
    "QuicStream.max_stream_data_local",
    "QuicStreamReceiver.highest_offset",
    "QuicStreamReceiver.is_finished",
    "QuicConnection._network_paths",
    "QuicNetworkPath.is_validated",
    "QuicNetworkPath.bytes_received",
    "QuicNetworkPath.bytes_sent",
    "QuicConnection._peer_cid_available",
)


class FlowControlledQuicConnection(QuicConnection):
    """A ``QuicConnection`` whose stream credit (MAX_STREAM_DATA) grows only through
    ``grant_stream_credit``, i.e. as the application reads, never on receipt.

    aioquic 1.7.2 raises a stream's receive limit in one place: ``_write_stream_limits``,
    called for every stream while a packet is built, doubles
    ``QuicStream.max_stream_data_local`` when ``receiver.highest_offset * 2`` exceeds
    it, then writes a MAX_STREAM_DATA frame whenever the limit differs from the last one
    sent. The receive path (``_handle_stream_frame``) only *checks* the limit. So the
    least invasive hook is to keep aioquic's frame writing (its frame encoding, the
    re-send on loss through ``_on_max_stream_data_delivery`` and the qlog entry) and
    disable just the doubling: for the duration of the call the receiver's
    ``highest_offset`` reads 0, which makes the doubling condition false and touches
    nothing else (the method reads the field for that condition only). Copying the
    method minus one line would also work, but would duplicate aioquic's frame code
    and drift from it on an upgrade; ``test_aioquic_adapter.py`` checks the behaviour
    (no credit on receipt, credit on consumption) so a change to the method fails there.

    Connection-level credit (MAX_DATA, ``_write_connection_limits``) keeps aioquic's
    receipt-driven doubling: per-stream credit already bounds what each stream may hold
    unread, and a read-driven connection window would let one stalled stream block the
    others (and would have to count the bytes the driver drops unread).
    """

    def _write_stream_limits(self, builder: QuicPacketBuilder, space: QuicPacketSpace,
                             stream: QuicStream) -> None:
        receiver = stream.receiver
        highest = receiver.highest_offset
        receiver.highest_offset = 0
        try:
            super()._write_stream_limits(builder=builder, space=space, stream=stream)
        finally:  # start_frame raises QuicPacketBuilderStop when the packet is full
            receiver.highest_offset = highest


def grant_stream_credit(quic: QuicConnection, stream_id: int, limit: int,
                        min_step: int = 1) -> bool:
    """Let the peer send ``stream_id`` up to byte offset ``limit`` (MAX_STREAM_DATA) if
    that raises the current limit by at least ``min_step`` bytes (fewer, smaller frames);
    the frame leaves with the next ``datagrams_to_send``. Limits only grow. Left alone: a
    stream aioquic no longer knows, one we cannot receive on (a local unidirectional
    stream, limit 0) and one whose final size is known (RFC 9000 section 3.2: no more
    MAX_STREAM_DATA once all data or a reset arrived). True if the limit was raised."""
    stream = quic._streams.get(stream_id)
    if (stream is None or not stream.max_stream_data_local or stream.receiver.is_finished
            or limit < stream.max_stream_data_local + max(min_step, 1)):
        return False
    stream.max_stream_data_local = limit
    return True


class ServerQuicConnection(FlowControlledQuicConnection):
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


def amplification_budget(quic: QuicConnection) -> int | None:
    """The bytes ``quic`` may still send to its peer's current address
    (``get_peer_address()``) under RFC 9000 section 8.1 (three times what arrived from
    it, less what was sent to it), or None once that address is validated (a client's
    always is: it chose the address). 0 before anything arrived."""
    paths = quic._network_paths
    if not paths:
        return 0
    path = paths[0]
    return None if path.is_validated else 3 * path.bytes_received - path.bytes_sent


def spare_peer_cids(quic: QuicConnection) -> int:
    """Connection ids the peer issued (NEW_CONNECTION_ID) that ``quic`` has not used:
    ``change_connection_id()`` switches to one of them only if this is at least 1."""
    return len(quic._peer_cid_available)
