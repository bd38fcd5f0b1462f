"""QUIC on the node's shared UDP port: one driver over aioquic's sans-I/O ``QuicConnection``.

``QuicTransport`` is a ``Receiver`` for the ``PortDemux`` QUIC share of each batch. It
routes datagrams to connections by destination connection id, feeds the whole batch,
then processes events and flushes ``datagrams_to_send`` once per touched connection.

Paths: each connection sends through a ``PathSocket`` (``stack.base.interfaces``). A
dial to an address and every accepted connection get a ``UdpPathSocket`` on the shared
port, and ``port_socket`` makes one for ``dial_path`` (a punched or LAN path from that
port); ``dial_path`` takes any other (relayed, a birthday socket), so every path carries
the same end-to-end QUIC. Whatever path a datagram came over, it reaches ``__call__`` and is
routed by connection id. A path that is not the shared port (a relayed circuit) has its
own receiver: ``accept_path(sock)`` accepts connections arriving over it (the relayed
target's side), ``path_receiver(sock)`` takes what comes back to a ``dial_path``; each
delivers only to the connections on its socket.

Timers: each connection's next deadline (the earliest of aioquic's loss/ack/idle timer,
our keep-alive and, while half open, the handshake deadline) sits in one heap, with lazy
deletion: a changed deadline marks its old entry dead and pushes a new one. A re-arm
recomputes only the connections touched since the last one, and one loop timer waits
for the heap's top. All of it runs on the clock's monotonic reading; wall time is read
only to check certificates.

Authentication (libp2p TLS spec): both sides present their identity-bound certificate
(``certs.py``). aioquic verifies the CertificateVerify signature (possession of the
certificate key) but not the chain; we turn its chain check off and run
``verify_certificate`` on the peer certificate when the handshake completes, before the
connection is handed to anyone. What aioquic keeps private for this (the client
certificate request, the peer's certificate) is reached through ``aioquic_adapter``.

Unauthenticated senders (issue 14): a server connection costs a handshake's CPU and
state from the first Initial until it completes or times out, so ``_accept`` bounds
half-open handshakes per source IP and, past a threshold, answers Initials with a
stateless Retry (RFC 9000 section 8.1.2): only a sender that receives at its address
gets state. Below the threshold no Retry, so normal load pays no extra round trip.
Toward an address not yet validated nothing leaves past three times what arrived from
it (RFC 9000 section 8.1, ``_flush``), including the CONNECTION_CLOSE that aioquic does
not hold to that budget.

Flow control is read-driven, as over TLS: each stream's receive window is
``TransportOptions.max_stream_buffer`` (the initial MAX_STREAM_DATA, a transport
parameter), and credit beyond it is granted only as the application reads
(``Stream.read`` -> ``_stream_consumed``): the peer may send up to the bytes read so far
plus the window. A reader that falls behind therefore holds the writer (its
``write()`` waits on unacknowledged bytes) instead of growing a buffer until the stream
is reset. aioquic alone grants credit on receipt; ``FlowControlledQuicConnection``
turns that off. Connection-level MAX_DATA stays aioquic's (it only grows), so one
stalled stream never blocks the others.

Migration (RFC 9000 section 9, issue 10): only a client moves a connection. When our
shared port's address changed (a new socket, a new source IP), ``migrate(conn)`` switches
a client connection to a spare connection id of the peer's (section 9.5: no id is used
from two addresses) and sends a PING from wherever the port now sends; the peer sees a
new address, moves its side there and validates it (PATH_CHALLENGE), and its ACK of the
PING, which it sends to the new address, is our proof that the new path works both ways.
Streams are untouched: what was in flight on the old path is declared lost and resent
on the new one. On the server side aioquic promotes the new path itself; once it is
validated the driver points the connection's path at the new address and reports it
(``on_migrated``). A connection whose handshake has only just completed may hold no
spare id yet (they come with the peer's next flight): its migration waits for one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import heapq
import itertools
import os
import ssl
from collections import Counter
from collections.abc import Callable

from aioquic.quic import events
from cryptography.hazmat.primitives.serialization import Encoding
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.buffer import Buffer
from aioquic.quic.packet import QuicProtocolVersion, encode_quic_retry, pull_quic_header

from stack.base.clock import Clock
from stack.base.identity import PeerId
from stack.base.errors import LocalError
from stack.base.interfaces import Path, PathKind, PathSocket
from stack.base.net import Address, Datagram, resolve_ipv4
from stack.transport.aioquic_adapter import (FlowControlledQuicConnection,
                                             ServerQuicConnection, amplification_budget,
                                             grant_stream_credit,
                                             host_cids, is_first_flight,
                                             peer_certificate, pending_close_event,
                                             spare_peer_cids, unacked_bytes)
from stack.transport.base import BaseConnection
from stack.transport.certs import CertificateVerifier, CertifiedKey
from stack.transport.errors import (HandshakeFailed, HandshakeTimeout,
                                    InvalidCertificate, LimitExceeded, MigrationFailed,
                                    PeerIdMismatch, StreamReset, TransportClosed,
                                    TransportError)
from stack.transport.options import ALPN, Registry, TransportOptions
from stack.transport.streams import Stream

__all__ = ["QuicTransport", "QuicConn", "UdpPathSocket", "PathReceiver"]

CID_LENGTH = 8
MIN_INITIAL_SIZE = 1200             # RFC 9000 section 14.1: smaller Initials are dropped
ERR_AUTH = 0x100 + 42               # CRYPTO_ERROR range is reserved; use an app code instead
RETRY_TOKEN_LIFETIME = 3.0          # seconds a Retry token is good for (one round trip)
_TOKEN_TAG = 16                     # bytes of HMAC-SHA256 kept in a Retry token
_VERSIONS = {v.value for v in QuicProtocolVersion if v.value}
_MIGRATION_PING = 1 << 32           # PING uids of migrations start here (keep-alives use 0)


class UdpPathSocket:
    """A ``PathSocket`` to ``address`` through a UDP send callback (the node's shared
    port); ``kind`` says how that address was reached (direct, LAN, punched)."""

    __slots__ = ("path", "_send", "_address")

    def __init__(self, send: Callable[[bytes, Address], None], address: Address,
                 kind: PathKind = PathKind.DIRECT) -> None:
        self.path = Path(kind, address)
        self._send = send
        self._address = address

    def send(self, data: bytes) -> None:
        self._send(data, self._address)


class PathReceiver:
    """Datagrams that arrived over one ``PathSocket`` (a relayed circuit, say), for the
    transport: ``receiver(batch)``. Built by ``QuicTransport.accept_path`` (new
    connections may arrive over the path) or ``path_receiver`` (the dialer's side: only
    connections already on it). A datagram reaches only a connection that sends through
    this very socket, so one path cannot inject packets into another's connections.
    ``close(reason)`` aborts the connections on the path (the path is gone)."""

    __slots__ = ("sock", "accept", "on_closed", "_transport")

    def __init__(self, transport: QuicTransport, sock: PathSocket, accept: bool,
                 on_closed: Callable[[QuicConn], None] | None) -> None:
        self._transport = transport
        self.sock = sock
        self.accept = accept
        self.on_closed = on_closed

    def __call__(self, batch: list[bytes]) -> None:
        self._transport._receive_path(self, batch)

    def close(self, reason: str) -> None:
        for conn in list(self._transport._conns):
            if conn.path_socket is not self.sock:
                continue
            event = pending_close_event(conn.quic)
            if event is not None:
                # Closing already (e.g. the peer's CONNECTION_CLOSE, whose draining period
                # would end it later): it ends now, with that reason, not ours.
                self._transport._on_terminated(conn, event)
            else:
                conn.abort(reason)


def _fail(future: asyncio.Future, exc: Exception, *, awaited: bool) -> None:
    """Fail a handshake future; one nobody awaits (server side) is marked retrieved, so
    no "exception was never retrieved" report runs from a finalizer later."""
    future.set_exception(exc)
    if not awaited:
        future.exception()


async def _numeric(addr: Address) -> Address:
    """``addr`` with its host resolved to an IPv4 literal (``HandshakeFailed`` if it does
    not resolve): aioquic matches a connection's network path by address."""
    try:
        return await resolve_ipv4(addr)
    except LocalError as exc:
        raise HandshakeFailed(str(exc)) from None


class QuicConn(BaseConnection):
    """One authenticated QUIC connection; streams are QUIC bidirectional streams."""

    transport = "quic"

    def __init__(self, driver: QuicTransport, quic: QuicConnection, sock: PathSocket,
                 is_client: bool, expected: PeerId | None) -> None:
        # peer_id stays None until the handshake authenticates the peer
        # ignored: BaseConnection types peer_id as the authenticated PeerId it is
        # once open; before the handshake it may be None (see above)
        super().__init__(peer_id=expected,  # type: ignore[arg-type]
                         remote_address=sock.path.address,
                         is_client=is_client, options=driver.options)
        self._driver = driver
        self.quic = quic
        self.path_socket = sock
        self.expected = expected
        self.established = asyncio.get_running_loop().create_future()
        self.cids: set[bytes] = set()
        self.last_activity = 0.0
        self._next_stream_id = 0 if is_client else 1  # RFC 9000 2.1: bidi, by initiator
        self.handshake_deadline: float | None = None   # server side: drop half-open ones
        self.half_open_ip: str | None = None   # server side: counted half open from this IP
        # this connection's live entry [deadline, seq, conn] in the driver's timer heap
        self.timer_entry: list | None = None
        self._consumed: dict[int, int] = {}   # stream id -> bytes the application read
        # a migration in progress (client side): (PING uid, result future, started, timer)
        self.migration: tuple[int, asyncio.Future[float], float, asyncio.TimerHandle] | None \
            = None
        # that migration waits for a spare connection id of the peer's (its PING not sent)
        self.migration_waits_cid = False

    @property
    def path(self) -> Path:
        return self.path_socket.path

    # --- _StreamSink -------------------------------------------------------------------
    def _new_stream_id(self) -> int:
        # aioquic's get_next_available_stream_id() only moves once data is sent, so
        # streams opened back to back would share an id; number them ourselves.
        stream_id = self._next_stream_id
        self._next_stream_id += 4
        return stream_id

    def _stream_send(self, stream: Stream, data: bytes, fin: bool) -> None:
        self.quic.send_stream_data(stream.stream_id, data, fin)
        if fin:
            self._progressed()
        self._driver._schedule_flush(self)

    def _stream_reset(self, stream: Stream) -> None:
        try:
            self.quic.reset_stream(stream.stream_id, 0)
            self.quic.stop_stream(stream.stream_id, 0)
        except Exception:  # already finished on the aioquic side: nothing left to reset
            pass
        self._progressed()
        self._driver._schedule_flush(self)

    def _stream_consumed(self, stream: Stream, count: int) -> None:
        """Return credit for bytes the application read: the peer may send up to what
        has been read plus one window. Granted in steps of half a window (as TLS's mux
        does), so a reader that keeps up still has the sender half a window or more
        ahead of it, and MAX_STREAM_DATA frames stay few."""
        sid = stream.stream_id
        if stream.finished:  # FIN or reset both ways: no more data, no more credit
            self._consumed.pop(sid, None)
            return
        consumed = self._consumed.get(sid, 0) + count
        self._consumed[sid] = consumed
        window = self.options.max_stream_buffer
        if grant_stream_credit(self.quic, sid, consumed + window, window // 2):
            self._driver._schedule_flush(self)

    def _stream_finished(self, stream: Stream) -> None:
        self._consumed.pop(stream.stream_id, None)
        super()._stream_finished(stream)

    def _stream_blocked(self, stream: Stream) -> bool:
        return unacked_bytes(self.quic, stream.stream_id) > self.options.stream_high_water

    def _terminate(self, reason: str) -> None:
        self.quic.close(error_code=0, reason_phrase=reason)
        self._driver._flush(self)
        self._driver._forget(self)


class QuicTransport:
    """The QUIC driver of one UDP endpoint. ``__call__`` is its ``Receiver``."""

    name = "quic"

    def __init__(self, *, send: Callable[[bytes, Address], None], certified: CertifiedKey,
                 clock: Clock, options: TransportOptions, registry: Registry,
                 on_connection: Callable[[QuicConn], None],
                 verifier: CertificateVerifier | None = None,
                 on_migrated: Callable[[QuicConn, Address], None] | None = None) -> None:
        self._verifier = verifier or CertificateVerifier()
        self._send = send
        self._certified = certified
        self._clock = clock
        self.options = options
        self._registry = registry
        self._on_connection = on_connection
        self._on_migrated = on_migrated
        self._migration_uids = itertools.count(_MIGRATION_PING)
        self._by_cid: dict[bytes, QuicConn] = {}
        # dicts, not sets: iteration in insertion order keeps simulated runs reproducible
        self._conns: dict[QuicConn, None] = {}
        # Timer heap of [deadline, seq, conn]; conn is None in an entry that was replaced
        # (lazy deletion). seq breaks ties in creation order, so equal deadlines fire in a
        # reproducible order and the comparison never reaches the connection.
        self._deadlines: list[list] = []
        self._seq = itertools.count()
        self._dirty: dict[QuicConn, None] = {}   # deadline may have moved since the re-arm
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_pending: dict[QuicConn, None] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self.dropped = 0
        self.handshake_failures = 0
        # what the defences did, by name: retry_sent, retry_validated, token_invalid,
        # half_open_ip_capped, table_full (``_accept``), amplification_withheld
        # (``_flush``); refused Initials also count in ``dropped``
        self.stats: Counter[str] = Counter()
        self._half_open: Counter[str] = Counter()   # source IP -> inbound half-open
        self._half_open_total = 0
        self._retry_secret = os.urandom(32)         # keys this transport's Retry tokens
        self._punch_expected: dict[str, float] = {}  # source IP -> until (expect_punch)

    @property
    def connections(self) -> list[QuicConn]:
        """Connections not closed yet, handshakes in progress included (both ways)."""
        return [conn for conn in self._conns if not conn.closed]

    @property
    def half_open(self) -> int:
        """Inbound handshakes in progress (what the Retry threshold is compared with)."""
        return self._half_open_total

    # --- configuration ------------------------------------------------------------------
    def _configuration(self, is_client: bool) -> QuicConfiguration:
        return QuicConfiguration(
            is_client=is_client, alpn_protocols=[ALPN], verify_mode=ssl.CERT_NONE,
            certificate=self._certified.certificate, private_key=self._certified.private_key,
            idle_timeout=self.options.idle_timeout, connection_id_length=CID_LENGTH,
            # max_stream_data: each stream's receive window, the most a stream holds
            # unread; credit past it comes from reading (QuicConn._stream_consumed).
            # max_data: the connection's initial credit, which aioquic raises on
            # receipt; at least one stream window so that one stream can use it all.
            max_data=max(16 << 20, self.options.max_stream_buffer),
            max_stream_data=self.options.max_stream_buffer)

    # --- dialing ------------------------------------------------------------------------
    async def dial(self, addr: Address, expected: PeerId | None = None) -> QuicConn:
        """Connect to ``addr`` over the shared UDP port and authenticate. ``expected``
        enforces the peer id (``PeerIdMismatch``)."""
        if self._closed:
            raise TransportClosed("QUIC transport is closed")
        addr = await _numeric(addr)
        return await self.dial_path(self.port_socket(addr), expected)

    def port_socket(self, addr: Address, kind: PathKind = PathKind.DIRECT) -> UdpPathSocket:
        """A path to numeric ``addr`` through this transport's shared UDP port, for
        ``dial_path`` (a punched or LAN path, say). Made here, with the transport's own
        send, because ``migrate`` knows a connection on the shared port by it: a socket
        built around some other callable that happens to reach the same port could not
        be migrated after a move, and its connection would be replaced."""
        return UdpPathSocket(self._send, addr, kind)

    async def dial_path(self, sock: PathSocket, expected: PeerId | None = None, *,
                        timeout: float | None = None) -> QuicConn:
        """Connect and authenticate over ``sock`` (a punched or relayed path, say).

        The datagrams that come back over it must be handed to this transport
        (``transport([(data, sock.path.address)])``): they are routed by connection id,
        like those of the shared port. ``expected`` as for ``dial``; ``timeout`` (default
        the handshake timeout) bounds the handshake, after which the attempt is aborted
        (``HandshakeTimeout``), so a hole-punch attempt leaves no half-open state."""
        if self._closed:
            raise TransportClosed("QUIC transport is closed")
        addr = sock.path.address
        quic = FlowControlledQuicConnection(configuration=self._configuration(True))
        conn = QuicConn(self, quic, sock, True, expected)
        self._conns[conn] = None
        now = self._clock.monotonic()
        quic.connect(addr, now=now)
        self._register_cids(conn)
        conn.last_activity = now
        self._flush(conn)
        self._rearm()
        try:
            wait = self.options.handshake_timeout if timeout is None else timeout
            await asyncio.wait_for(asyncio.shield(conn.established), wait)
        except TimeoutError:
            conn.abort("handshake timeout")
            raise HandshakeTimeout(f"no QUIC handshake with {addr[0]}:{addr[1]} "
                                   f"within {wait}s") from None
        except asyncio.CancelledError:
            conn.abort("dial cancelled")
            raise
        return conn

    # --- hole punching ------------------------------------------------------------------
    def expect_punch(self, ips: list[str], until: float) -> None:
        """Initials from ``ips`` until ``until`` (monotonic) are a hole punch we agreed
        on over an authenticated relayed connection: they are accepted without a Retry
        (a Retry costs the punch a round trip inside its short window, and the token
        would be bound to a NAT mapping the peer opened for this very exchange) and
        the connection's path is PUNCHED. The per-IP half-open cap still applies."""
        for ip in ips:
            self._punch_expected[ip] = max(until, self._punch_expected.get(ip, 0.0))

    def _punched(self, ip: str) -> bool:
        until = self._punch_expected.get(ip)
        if until is None:
            return False
        if until < self._clock.monotonic():
            del self._punch_expected[ip]
            return False
        return True

    # --- other paths (relayed) ----------------------------------------------------------
    def accept_path(self, sock: PathSocket,
                    on_closed: Callable[[QuicConn], None] | None = None) -> PathReceiver:
        """Accept QUIC connections arriving over ``sock``: feed what comes over it to
        the returned receiver. A connection accepted there sends through ``sock``, is
        authenticated as any other and goes to ``on_connection``; ``on_closed`` is
        called with it when it closes (or fails its handshake). No Retry or address
        validation: the path is already a stream the peer had to open."""
        return PathReceiver(self, sock, True, on_closed)

    def path_receiver(self, sock: PathSocket) -> PathReceiver:
        """The receiver for the datagrams coming back over a ``dial_path`` socket."""
        return PathReceiver(self, sock, False, None)

    def _receive_path(self, receiver: PathReceiver, batch: list[bytes]) -> None:
        now = self._clock.monotonic()
        sock = receiver.sock
        addr = sock.path.address
        touched: dict[QuicConn, None] = {}
        for data in batch:
            conn = self._route_path(receiver, data) if len(data) > 1 else None
            if conn is None:
                self.dropped += 1
                continue
            conn.quic.receive_datagram(data, addr, now)
            conn.last_activity = now
            touched[conn] = None
        for conn in touched:
            if not conn.is_client and is_first_flight(conn.quic):
                self._forget(conn)  # as in __call__: no state for undecryptable noise
                self.dropped += 1
                continue
            self._process(conn)
        self._rearm()

    def _route_path(self, receiver: PathReceiver, data: bytes) -> QuicConn | None:
        sock = receiver.sock
        if data[0] & 0x80:
            if len(data) < 7:
                return None
            dcid = data[6:6 + data[5]]
            conn = self._by_cid.get(dcid)
            if conn is None and receiver.accept and not self._closed:
                conn = self._accept_on_path(data, sock, dcid, receiver.on_closed)
        else:
            conn = self._by_cid.get(data[1:1 + CID_LENGTH])
        return conn if conn is not None and conn.path_socket is sock else None

    def _accept_on_path(self, data: bytes, sock: PathSocket, dcid: bytes,
                        on_closed: Callable[[QuicConn], None] | None) -> QuicConn | None:
        """``_accept`` for a connection arriving over ``sock`` (same Initial checks)."""
        version = int.from_bytes(data[1:5], "big")
        packet_type = (data[0] & 0x30) >> 4
        initial_type = 0 if version == QuicProtocolVersion.VERSION_1 else 1
        if (len(data) < MIN_INITIAL_SIZE or version not in _VERSIONS
                or packet_type != initial_type or len(dcid) < 8):
            return None
        if len(self._conns) >= 2 * self._registry.limits.max_connections:
            return None
        quic = ServerQuicConnection(configuration=self._configuration(False),
                                    original_destination_connection_id=dcid)
        conn = QuicConn(self, quic, sock, False, None)
        conn.handshake_deadline = self._clock.monotonic() + self.options.handshake_timeout
        self._conns[conn] = None
        conn.cids.add(dcid)
        self._by_cid[dcid] = conn
        self._register_cids(conn)
        if on_closed is not None:
            conn.add_close_callback(lambda c: on_closed(conn))
        return conn

    # --- receiving ----------------------------------------------------------------------
    def __call__(self, batch: list[Datagram]) -> None:
        now = self._clock.monotonic()
        touched: dict[QuicConn, None] = {}
        for data, addr in batch:
            conn = self._route(data, addr)
            if conn is None:
                self.dropped += 1
                continue
            conn.quic.receive_datagram(data, addr, now)
            conn.last_activity = now
            touched[conn] = None
        for conn in touched:
            if not conn.is_client and is_first_flight(conn.quic):
                # Not one packet of its Initial decrypted: noise or a forgery, not a
                # handshake. Keep no state, so
                # a flood of them cannot fill the half-open table and lock dialers out.
                self._forget(conn)
                self.dropped += 1
                continue
            self._process(conn)
            if not conn.is_client:
                self._follow_peer(conn)
        self._rearm()

    def _route(self, data: bytes, addr: Address) -> QuicConn | None:
        if data[0] & 0x80:  # long header: version, then length-prefixed DCID
            if len(data) < 7:
                return None
            dcid = data[6:6 + data[5]]
            conn = self._by_cid.get(dcid)
            if conn is not None or self._closed:
                return conn
            return self._accept(data, addr, dcid)
        return self._by_cid.get(data[1:1 + CID_LENGTH])

    def _accept(self, data: bytes, addr: Address, dcid: bytes) -> QuicConn | None:
        """A new server connection for an Initial packet of a version we speak, or None
        (refused, counted in ``stats``).

        Half-open handshakes cost the server a handshake's CPU and state for up to
        ``handshake_timeout``, so they are bounded three ways: ``max_handshakes_per_ip``
        from one source IP (its further Initials are dropped); past
        ``quic_retry_threshold`` in all, an Initial without a token gets a Retry
        (RFC 9000 section 8.1.2, stateless: see ``_retry_token``) and only one that
        comes back with a valid token, from the address it was issued to, gets a
        connection, so a flood from addresses that do not answer creates none; and
        ``2 * max_connections`` connections in all. A token that does not check out
        (forged, another address or connection id, expired) is dropped: the client
        that sent it will not accept a second Retry."""
        version = int.from_bytes(data[1:5], "big")
        packet_type = (data[0] & 0x30) >> 4  # Initial: 0 in QUIC v1, 1 in v2 (RFC 9369)
        initial_type = 0 if version == QuicProtocolVersion.VERSION_1 else 1
        if (len(data) < MIN_INITIAL_SIZE or version not in _VERSIONS
                or packet_type != initial_type or len(dcid) < 8):
            return None
        limits = self._registry.limits
        if len(self._conns) >= 2 * limits.max_connections:
            self.stats["table_full"] += 1
            return None  # bounds half-open handshakes too, not only admitted connections
        ip = addr[0]
        if self._half_open[ip] >= limits.max_handshakes_per_ip:
            self.stats["half_open_ip_capped"] += 1
            return None
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=CID_LENGTH)
        except ValueError:
            return None
        odcid: bytes | None = dcid
        retry_scid = None
        punched = self._punched(ip)
        if header.token:
            odcid = self._check_token(header.token, addr, dcid)
            if odcid is None:
                self.stats["token_invalid"] += 1
                return None
            retry_scid = dcid  # the client now sends to the Retry's source cid
            self.stats["retry_validated"] += 1
        elif self._half_open_total >= limits.quic_retry_threshold and not punched:
            self._send_retry(version, header.source_cid, dcid, addr)
            return None
        quic = ServerQuicConnection(configuration=self._configuration(False),
                                    original_destination_connection_id=odcid,
                                    retry_source_connection_id=retry_scid)
        kind = PathKind.PUNCHED if punched else PathKind.DIRECT
        conn = QuicConn(self, quic, self.port_socket(addr, kind), False, None)
        conn.handshake_deadline = self._clock.monotonic() + self.options.handshake_timeout
        conn.half_open_ip = ip
        self._half_open[ip] += 1
        self._half_open_total += 1
        self._conns[conn] = None
        conn.cids.add(dcid)
        self._by_cid[dcid] = conn
        self._register_cids(conn)
        return conn

    def _settle(self, conn: QuicConn) -> None:
        """``conn`` is no longer a half-open inbound handshake (it completed or ended)."""
        ip = conn.half_open_ip
        if ip is None:
            return
        conn.half_open_ip = None
        self._half_open_total -= 1
        self._half_open[ip] -= 1
        if not self._half_open[ip]:
            del self._half_open[ip]

    # --- Retry (RFC 9000 sections 8.1.2-8.1.4, 17.2.5) ----------------------------------
    def _retry_token(self, addr: Address, odcid: bytes, retry_scid: bytes,
                     issued: float) -> bytes:
        """A Retry token the server need not remember: the issue time (ms) and the
        client's original destination cid in clear, then an HMAC-SHA256 (this
        transport's secret) over those, the client's IP and port and the cid the Retry
        told it to use, so it is good only from that address, on that connection, for
        ``RETRY_TOKEN_LIFETIME``."""
        head = int(issued * 1000).to_bytes(8, "big", signed=True) + bytes([len(odcid)]) + odcid
        return head + self._token_tag(head, addr, retry_scid)

    def _token_tag(self, head: bytes, addr: Address, retry_scid: bytes) -> bytes:
        # the host as the socket layer spelled it (any path's address, not only IPs)
        message = b"%s%s\0%d\0%s" % (head, addr[0].encode(), addr[1], retry_scid)
        return hmac.new(self._retry_secret, message, hashlib.sha256).digest()[:_TOKEN_TAG]

    def _check_token(self, token: bytes, addr: Address, dcid: bytes) -> bytes | None:
        """The original destination cid ``token`` was issued for, if it is one of ours,
        for ``addr`` and ``dcid``, and unexpired; else None."""
        if len(token) < 9 + _TOKEN_TAG or len(token) != 9 + token[8] + _TOKEN_TAG:
            return None
        head, tag = token[:-_TOKEN_TAG], token[-_TOKEN_TAG:]
        if not hmac.compare_digest(tag, self._token_tag(head, addr, dcid)):
            return None
        age = self._clock.monotonic() - int.from_bytes(token[:8], "big", signed=True) / 1000
        if not 0.0 <= age <= RETRY_TOKEN_LIFETIME:  # issue time rounds down: age >= 0
            return None
        return head[9:]

    def _send_retry(self, version: int, client_scid: bytes, odcid: bytes,
                    addr: Address) -> None:
        retry_scid = os.urandom(CID_LENGTH)
        token = self._retry_token(addr, odcid, retry_scid, self._clock.monotonic())
        self._send(encode_quic_retry(version=version, source_cid=retry_scid,
                                     destination_cid=client_scid,
                                     original_destination_cid=odcid, retry_token=token),
                   addr)
        self.stats["retry_sent"] += 1

    def _register_cids(self, conn: QuicConn) -> None:
        for cid in host_cids(conn.quic):  # the ids we issued; events announce later ones
            conn.cids.add(cid)
            self._by_cid[cid] = conn

    def _process(self, conn: QuicConn) -> None:
        """Handle ``conn``'s events, send what it has to send, wake writers with room."""
        if not self._drain(conn):
            return
        if conn.migration_waits_cid:
            self._ping_from_new_path(conn)
        self._flush(conn)
        # Building packets issues connection ids (NEW_CONNECTION_ID frames and their
        # events): route them now, not at this connection's next receive or timer.
        if not self._drain(conn):
            return
        for stream in conn.streams.values():
            if stream._sink is conn and not conn._stream_blocked(stream):
                stream._wake_writer()

    def _drain(self, conn: QuicConn) -> bool:
        """Handle ``conn``'s pending events; False once it has terminated."""
        quic = conn.quic
        while (event := quic.next_event()) is not None:
            if isinstance(event, events.StreamDataReceived):
                self._on_stream_data(conn, event)
            elif isinstance(event, events.HandshakeCompleted):
                self._on_handshake(conn)
            elif isinstance(event, events.StreamReset):
                stream = conn.streams.get(event.stream_id)
                if stream is not None:
                    stream._fail(StreamReset(f"peer reset stream {event.stream_id}"))
                    conn._progressed()
            elif isinstance(event, events.ConnectionIdIssued):
                conn.cids.add(event.connection_id)
                self._by_cid[event.connection_id] = conn
            elif isinstance(event, events.PingAcknowledged):
                self._on_ping_acked(conn, event.uid)
            elif isinstance(event, events.ConnectionIdRetired):
                conn.cids.discard(event.connection_id)
                self._by_cid.pop(event.connection_id, None)
            elif isinstance(event, events.ConnectionTerminated):
                self._on_terminated(conn, event)
                return False
        return True

    def _on_stream_data(self, conn: QuicConn, event: events.StreamDataReceived) -> None:
        if not conn.established.done() or conn.established.exception():
            return
        stream = conn.streams.get(event.stream_id)
        if stream is None:
            peer_opened = bool(event.stream_id & 1) == conn.is_client
            if not peer_opened or event.stream_id & 2:  # ours (forgotten) or unidirectional
                return
            stream = conn._remote_stream(event.stream_id)
            if stream is None:
                return
        stream._feed(event.data)
        if event.end_stream:
            stream._feed_eof()
        if stream.buffered > self.options.max_stream_buffer:
            # Cannot happen with a conforming peer: credit is what was read plus
            # max_stream_buffer, and aioquic closes the connection (FLOW_CONTROL_ERROR)
            # on a peer that sends past it. Kept as the bound of last resort.
            stream.reset()
        conn._progressed()

    def _on_handshake(self, conn: QuicConn) -> None:
        try:
            cert = peer_certificate(conn.quic)
            if cert is None:
                raise InvalidCertificate("peer presented no certificate")
            peer_id = self._verifier.verify(cert.public_bytes(Encoding.DER), self._clock.now())
            if conn.expected is not None and peer_id != conn.expected:
                raise PeerIdMismatch(conn.expected, peer_id)
            self._registry.admit(peer_id)
        except (TransportError, LimitExceeded) as exc:
            self.handshake_failures += 1
            conn.quic.close(error_code=ERR_AUTH, reason_phrase=type(exc).__name__)
            self._flush(conn)
            self._forget(conn)
            _fail(conn.established, exc, awaited=conn.is_client)
            conn._closed_by(str(exc))
            return
        self._settle(conn)
        conn.peer_id = peer_id
        conn.registry = self._registry
        conn.add_close_callback(lambda c: self._registry.release(c.peer_id))
        conn.established.set_result(None)
        if not conn.is_client:
            self._on_connection(conn)

    def _on_terminated(self, conn: QuicConn, event: events.ConnectionTerminated) -> None:
        reason = event.reason_phrase or f"QUIC error {event.error_code:#x}"
        self._forget(conn)
        if not conn.established.done():
            self.handshake_failures += 1
            _fail(conn.established, HandshakeFailed(f"QUIC handshake failed: {reason}"),
                  awaited=conn.is_client)
        conn._closed_by(f"connection terminated: {reason}")

    def _forget(self, conn: QuicConn) -> None:
        self._settle(conn)
        self._end_migration(conn, MigrationFailed("the connection closed while migrating"))
        for cid in conn.cids:
            if self._by_cid.get(cid) is conn:
                del self._by_cid[cid]
        self._conns.pop(conn, None)
        self._flush_pending.pop(conn, None)
        self._dirty.pop(conn, None)
        if conn.timer_entry is not None:
            conn.timer_entry[2] = None
            conn.timer_entry = None

    # --- migration (RFC 9000 section 9) --------------------------------------------------
    def migrate(self, conn: QuicConn, timeout: float) -> asyncio.Future[float]:
        """Move client connection ``conn`` to the shared port's new address (see the
        module docstring): a spare peer connection id (the old one is retired) and a
        PING sent from the new path. The future gives the seconds until the peer
        acknowledged it, or fails with ``MigrationFailed`` at once (not a client, not on
        the shared port, closed) or after ``timeout`` seconds without that
        acknowledgement. A connection whose peer has issued no spare id yet (one that
        has just completed its handshake: the ids come with the peer's next flight)
        waits for one within the same ``timeout``. A migration still in progress is
        superseded (its future fails); streams are not touched either way."""
        future: asyncio.Future[float] = self._loop.create_future()
        sock = conn.path_socket
        reason = None
        if not conn.is_client:
            reason = "only the client of a QUIC connection can migrate it"
        elif conn.closed or not conn.established.done() or conn.established.exception():
            reason = "the connection is not open"
        elif not (isinstance(sock, UdpPathSocket) and sock._send == self._send):
            reason = f"its path ({conn.path}) is not our UDP port"
        if reason is not None:
            future.set_exception(MigrationFailed(reason))
            future.exception()  # retrieved: a caller may only look at the result later
            return future
        self._end_migration(conn, MigrationFailed("superseded by a newer migration"))
        uid = next(self._migration_uids)
        timer = self._loop.call_later(timeout, self._migration_timeout, conn, uid, timeout)
        conn.migration = (uid, future, self._clock.monotonic(), timer)
        conn.migration_waits_cid = True
        self._process(conn)  # sends the PING now if the peer has left us a spare id
        self._rearm()
        return future

    def _ping_from_new_path(self, conn: QuicConn) -> None:
        """The waiting migration's PING, on a spare connection id of the peer's once
        there is one: the old id from the new address would link the two paths
        (RFC 9000 section 9.5)."""
        if conn.migration is None or not spare_peer_cids(conn.quic):
            return
        conn.migration_waits_cid = False
        conn.quic.change_connection_id()
        conn.quic.send_ping(conn.migration[0])

    def _on_ping_acked(self, conn: QuicConn, uid: int) -> None:
        migration = conn.migration
        if migration is None or migration[0] != uid:
            return
        conn.migration = None
        migration[3].cancel()
        if not migration[1].done():
            migration[1].set_result(self._clock.monotonic() - migration[2])

    def _migration_timeout(self, conn: QuicConn, uid: int, timeout: float) -> None:
        if conn.migration is not None and conn.migration[0] == uid:
            self._end_migration(conn, MigrationFailed(
                f"the peer left us no spare connection id within {timeout} s"
                if conn.migration_waits_cid else
                f"the peer acknowledged nothing from our new path within {timeout} s"))

    @staticmethod
    def _end_migration(conn: QuicConn, exc: MigrationFailed) -> None:
        migration, conn.migration = conn.migration, None
        conn.migration_waits_cid = False
        if migration is not None:
            migration[3].cancel()
            if not migration[1].done():
                migration[1].set_exception(exc)
                migration[1].exception()

    def _follow_peer(self, conn: QuicConn) -> None:
        """Server side: the client moved and aioquic validated its new address (RFC 9000
        section 9.3): send there through the shared port from now on and report it."""
        peer = conn.quic.get_peer_address()
        sock = conn.path_socket
        if (peer is None or peer == conn.remote_address or conn.closed
                or not isinstance(sock, UdpPathSocket) or sock._send != self._send
                or amplification_budget(conn.quic) is not None):
            return
        old = conn.remote_address
        conn.path_socket = self.port_socket((peer[0], peer[1]), sock.path.kind)
        conn.remote_address = conn.path_socket.path.address
        if self._on_migrated is not None:
            self._on_migrated(conn, old)

    # --- sending and timers -------------------------------------------------------------
    def _schedule_flush(self, conn: QuicConn) -> None:
        """Coalesce the writes of one loop iteration into one flush."""
        self._flush_pending[conn] = None
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush_scheduled)

    def _flush_scheduled(self) -> None:
        self._flush_handle = None
        pending, self._flush_pending = self._flush_pending, {}
        for conn in pending:
            self._flush(conn)
        self._rearm()

    def _flush(self, conn: QuicConn) -> None:
        """Send what ``conn`` has to send. Toward an address a server connection has not
        validated, nothing past RFC 9000 section 8.1's budget (three times the bytes
        received from it) leaves: aioquic builds its packets within it, but not its
        CONNECTION_CLOSE, so a close that would exceed it (a half-open handshake's at
        its timeout, say) is withheld and the connection goes silently."""
        sock = conn.path_socket
        home = conn.remote_address
        send = self._send
        quic = conn.quic
        budget = None if conn.is_client else amplification_budget(quic)
        peer = None if budget is None else quic.get_peer_address()  # the budget's address
        for data, addr in quic.datagrams_to_send(now=self._clock.monotonic()):
            if budget is not None and addr == peer:
                if len(data) > budget:
                    self.stats["amplification_withheld"] += 1
                    continue
                budget -= len(data)
            if addr == home:
                sock.send(data)
            else:
                # aioquic probes or migrates to an address this connection's packets
                # arrived from (RFC 9000 section 9), i.e. one heard on the shared port.
                send(data, addr)
        self._dirty[conn] = None  # whatever changed its state is what it just sent

    def _next_deadline(self, conn: QuicConn) -> float | None:
        deadline = conn.quic.get_timer()
        if conn.handshake_deadline is not None and not conn.established.done():
            hd = conn.handshake_deadline
            deadline = hd if deadline is None else min(deadline, hd)
        keep_alive = self.options.keep_alive
        if keep_alive is not None and conn.established.done() and not conn.closed:
            ka = conn.last_activity + keep_alive
            deadline = ka if deadline is None else min(deadline, ka)
        return deadline

    def _reschedule(self, conn: QuicConn) -> None:
        """Put ``conn``'s current deadline in the heap, killing its previous entry."""
        when = self._next_deadline(conn)
        entry = conn.timer_entry
        if entry is not None:
            if entry[0] == when:
                return
            entry[2] = None
        if when is None:
            conn.timer_entry = None
            return
        conn.timer_entry = entry = [when, next(self._seq), conn]
        heap = self._deadlines
        heapq.heappush(heap, entry)
        if len(heap) > 2 * len(self._conns) + 16:
            # Dead entries only leave from the top; compacting here bounds the heap at
            # about twice the live ones, at an amortized O(1) per reschedule.
            heap[:] = [e for e in heap if e[2] is not None]
            heapq.heapify(heap)

    def _rearm(self) -> None:
        for conn in self._dirty:
            if conn in self._conns:
                self._reschedule(conn)
        self._dirty.clear()
        heap = self._deadlines
        while heap and heap[0][2] is None:
            heapq.heappop(heap)
        when = heap[0][0] if heap else None
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            # At least 1 us, although deadlines are now monotonic and per connection:
            # aioquic arms its loss timer at sent + delay but declares the packet lost
            # only when sent <= now - delay, and in floats (sent + delay) - delay rounds
            # below sent at any magnitude (for ~3% of random sends in the first 10 s of
            # a clock and RTT-sized delays). handle_timer then leaves the timer due at the
            # same instant, and a 0 s re-arm would spin without time moving: a hang
            # under virtual time (test_a_timer_still_due_after_handling_lets_virtual_time_move).
            self._timer = self._loop.call_later(max(1e-6, when - self._clock.monotonic()),
                                                self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self._clock.monotonic()
        heap = self._deadlines
        due = []
        while heap and heap[0][0] <= now:
            conn = heapq.heappop(heap)[2]
            if conn is not None:
                conn.timer_entry = None
                # its entry is gone: the re-arm below must push the next deadline even
                # if nothing here changes the connection's state
                self._dirty[conn] = None
                due.append(conn)
        for conn in due:
            if (conn.handshake_deadline is not None and not conn.established.done()
                    and conn.handshake_deadline <= now):
                self.handshake_failures += 1
                conn.quic.close(error_code=0, reason_phrase="handshake timeout")
                self._flush(conn)
                self._forget(conn)
                _fail(conn.established, HandshakeTimeout("half-open QUIC handshake"),
                      awaited=conn.is_client)
                conn._closed_by("handshake timeout")
                continue
            timer = conn.quic.get_timer()
            if timer is not None and timer <= now:
                conn.quic.handle_timer(now)
            keep_alive = self.options.keep_alive
            if (keep_alive is not None and conn.established.done() and not conn.closed
                    and conn.last_activity + keep_alive <= now):
                conn.quic.send_ping(0)
                conn.last_activity = now
            self._process(conn)
        self._rearm()

    # --- shutdown -----------------------------------------------------------------------
    async def close(self, grace: float = 1.0) -> None:
        """Refuse new connections and close the open ones gracefully."""
        self._closed = True
        conns = list(self._conns)
        await asyncio.gather(*(c.close(grace) for c in conns), return_exceptions=True)
        for conn in list(self._conns):
            conn.abort("transport closed")
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
            for conn in self._flush_pending:
                self._flush(conn)
            self._flush_pending.clear()


