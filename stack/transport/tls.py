"""TLS 1.3 over TCP, for networks where UDP is blocked; listens on the node's port number.

Why pyOpenSSL and not the ``ssl`` module: the libp2p spec needs the server to *request*
a client certificate and accept a self-signed one, then check it ourselves. ``ssl`` can
only request a certificate together with OpenSSL's chain verification (which rejects
self-signed certificates) and offers no verify callback. pyOpenSSL (already required by
aioquic) gives ``set_verify`` with a callback; we accept at that layer and run
``verify_certificate`` on the peer's certificate right after the handshake, closing the
connection on failure before any application byte is processed; the dialer does so before
its Finished leaves, so a listener it refuses never completes its handshake. The listener
completes only when the dialer already has; its refusals (certificate, connection limits)
reach the dialer as a mux GOAWAY with a reason code. TLS runs over memory
BIOs inside an ``asyncio.Protocol``: bytes in, bytes out, like the QUIC driver.

Settings: TLS 1.3 only; both sides present the identity-bound certificate; ALPN
``p2pstack/1`` (required from our dialers, optional for foreign clients such as
``openssl s_client``); no SNI (libp2p spec). Streams come from ``mux.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

from stack.base.clock import Clock
from stack.base.errors import LocalError
from stack.base.identity import PeerId
from stack.base.net import Address
from stack.transport import mux
from stack.transport.base import BaseConnection
from stack.transport.certs import CertificateVerifier, CertifiedKey
from stack.transport.errors import (HandshakeFailed, HandshakeTimeout, InvalidCertificate,
                                    LimitExceeded, PeerIdMismatch, ProtocolViolation,
                                    StreamReset, TransportClosed, TransportError)
from stack.transport.options import ALPN, Registry, TransportOptions
from stack.transport.streams import Stream

__all__ = ["TlsTransport", "TlsConn"]

_ALPN = ALPN.encode()
_READ_SIZE = 256 * 1024


def _context(certified: CertifiedKey, server: bool) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.use_certificate(certified.certificate)
    ctx.use_privatekey(certified.private_key)
    # Accept any certificate at the TLS layer; verify_certificate() decides afterwards.
    # The server demands one (VERIFY_FAIL_IF_NO_PEER_CERT), as the libp2p spec requires.
    mode = SSL.VERIFY_PEER | (SSL.VERIFY_FAIL_IF_NO_PEER_CERT if server else 0)
    ctx.set_verify(mode, lambda conn, cert, errno, depth, ok: True)
    if server:
        ctx.set_alpn_select_callback(
            lambda conn, offered: _ALPN if _ALPN in offered else SSL.NO_OVERLAPPING_PROTOCOLS)
    else:
        ctx.set_alpn_protos([_ALPN])
    return ctx


class TlsConn(BaseConnection):
    """One authenticated TLS connection carrying multiplexed streams."""

    transport = "tls"

    def __init__(self, proto: _TlsProtocol, peer_id: PeerId, is_client: bool) -> None:
        super().__init__(peer_id=peer_id, remote_address=proto.remote_address,
                         is_client=is_client, options=proto.options)
        self._proto = proto
        self._next_id = 1 if is_client else 2
        self._credit: dict[int, int] = {}        # send credit per stream
        self._outq: dict[int, bytearray] = {}    # bytes waiting for credit
        self._fin_pending: set[int] = set()
        self._recv_room: dict[int, int] = {}     # receive credit we granted, not yet used
        self._consumed: dict[int, int] = {}      # read by the app, credit not yet returned
        self._reader = mux.FrameReader()
        self._peer_max_id = 0                    # highest stream id the peer opened

    # --- _StreamSink -------------------------------------------------------------------
    def _new_stream_id(self) -> int:
        stream_id = self._next_id
        self._next_id += 2
        self._credit[stream_id] = mux.INITIAL_WINDOW
        self._recv_room[stream_id] = mux.INITIAL_WINDOW
        return stream_id

    def _stream_send(self, stream: Stream, data: bytes, fin: bool) -> None:
        sid = stream.stream_id
        if data:
            self._outq.setdefault(sid, bytearray()).extend(data)
        if fin:
            self._fin_pending.add(sid)
            self._progressed()
        self._pump(sid)

    def _pump(self, sid: int) -> None:
        queue = self._outq.get(sid)
        out = []
        if queue:
            credit = self._credit.get(sid, 0)
            view = memoryview(queue)
            sent = 0
            while sent < len(queue) and credit > 0:
                n = min(len(queue) - sent, credit, mux.MAX_FRAME)
                out.append(mux.encode(mux.DATA, sid, payload=bytes(view[sent:sent + n])))
                sent += n
                credit -= n
            view.release()
            del queue[:sent]
            self._credit[sid] = credit
        if sid in self._fin_pending and not queue:
            self._fin_pending.discard(sid)
            out.append(mux.encode(mux.FIN, sid))
        if out:
            self._proto.send(b"".join(out))

    def _stream_reset(self, stream: Stream) -> None:
        sid = stream.stream_id
        self._outq.pop(sid, None)
        self._fin_pending.discard(sid)
        self._proto.send(mux.encode(mux.RESET, sid))
        self._progressed()

    def _stream_consumed(self, stream: Stream, count: int) -> None:
        sid = stream.stream_id
        total = self._consumed.get(sid, 0) + count
        if total >= mux.INITIAL_WINDOW // 2 and not stream._eof:
            self._recv_room[sid] = self._recv_room.get(sid, 0) + total
            self._proto.send(mux.encode(mux.WINDOW, sid, total))
            total = 0
        self._consumed[sid] = total

    def _stream_blocked(self, stream: Stream) -> bool:
        return bool(self._outq.get(stream.stream_id)) or self._proto.paused

    def _terminate(self, reason: str) -> None:
        self._proto.shutdown()

    # --- frames from the peer ----------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Plaintext from TLS. Raises ``ProtocolViolation`` for bad framing."""
        for frame_type, sid, value, payload in self._reader.feed(data):
            if frame_type == mux.PING:
                self._proto.send(mux.encode(mux.PONG, 0, value))
                continue
            if frame_type == mux.GOAWAY and value != 0:
                # the peer refuses or ends the connection and says why (mux.py)
                self._closed_by(f"refused by the peer: {mux.goaway_reason(value)}")
                self._proto.shutdown()
                self._progressed()
                return
            if frame_type in (mux.PONG, mux.GOAWAY):
                continue
            stream = self.streams.get(sid)
            if stream is None:
                if frame_type not in (mux.DATA, mux.FIN):
                    continue  # late WINDOW/RESET for a stream we forgot
                if sid == 0 or (sid & 1) == (1 if self.is_client else 0):
                    continue  # our parity: a stream we already finished and forgot
                if sid <= self._peer_max_id:
                    continue  # the peer's ids increase: this one is finished and forgotten
                self._peer_max_id = sid
                self._credit[sid] = mux.INITIAL_WINDOW
                self._recv_room[sid] = mux.INITIAL_WINDOW
                stream = self._remote_stream(sid)
                if stream is None:
                    continue
            if frame_type == mux.DATA:
                room = self._recv_room.get(sid, 0) - len(payload)
                if room < 0:
                    raise ProtocolViolation(f"peer overran the flow-control window of stream {sid}")
                self._recv_room[sid] = room
                stream._feed(payload)
            elif frame_type == mux.FIN:
                stream._feed_eof()
            elif frame_type == mux.RESET:
                self._outq.pop(sid, None)
                stream._fail(StreamReset(f"peer reset stream {sid}"))
            elif frame_type == mux.WINDOW:
                self._credit[sid] = self._credit.get(sid, 0) + value
                self._pump(sid)
                if not self._stream_blocked(stream):
                    stream._wake_writer()
        self._progressed()

    def wake_writers(self) -> None:
        for stream in self.streams.values():
            if not self._stream_blocked(stream):
                stream._wake_writer()


class _TlsProtocol(asyncio.Protocol):
    """TLS over one TCP connection, driven through pyOpenSSL memory BIOs."""

    def __init__(self, owner: TlsTransport, server: bool, expected: PeerId | None) -> None:
        self.owner = owner
        self.options = owner.options
        self.server = server
        self.expected = expected
        self.ssl = SSL.Connection(owner._server_ctx if server else owner._client_ctx, None)
        if server:
            self.ssl.set_accept_state()
        else:
            self.ssl.set_connect_state()
        self.transport: asyncio.Transport | None = None
        self.remote_address: Address = ("0.0.0.0", 0)
        self.conn: TlsConn | None = None
        self.established = asyncio.get_running_loop().create_future()
        self.paused = False
        self._tls_done = False  # our TLS handshake completed (the peer may think so too)
        self._timer: asyncio.TimerHandle | None = None
        self._last_rx = 0.0
        self._last_tx = 0.0

    # --- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.remote_address = (peer[0], peer[1]) if peer else ("0.0.0.0", 0)
        if self.server and self.owner._pending_full(self.remote_address[0]):
            self._fail(HandshakeFailed("too many pending TLS handshakes"))
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.options.handshake_timeout, self._handshake_timeout)
        self.owner._protocols.add(self)
        if not self.server:
            self._handshake()

    def data_received(self, data: bytes) -> None:
        self._last_rx = self.owner._clock.monotonic()
        try:
            self.ssl.bio_write(data)
            if self.conn is None:
                self._handshake()
            if self.conn is not None:
                self._read_plaintext()
        except (TransportError, LimitExceeded) as exc:
            self._fail(exc)
        except SSL.Error as exc:  # alert, bad record MAC, ...
            error = HandshakeFailed if self.conn is None else ProtocolViolation
            self._fail(error(f"TLS error: {exc}"))

    def eof_received(self) -> bool | None:
        if self.conn is not None:
            self.conn._closed_by("peer closed the connection")
            if self.transport is not None:
                self.transport.abort()
        else:
            self._fail(HandshakeFailed("peer closed the TCP connection during the handshake"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._protocols.discard(self)
        self._cancel_timer()
        if not self.established.done():
            self.owner.handshake_failures += 1
            self._fail_established(
                HandshakeFailed(f"TCP connection lost during the TLS handshake: {exc or 'EOF'}"))
        if self.conn is not None:
            self.conn._closed_by("connection lost")

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.conn is not None:
            self.conn.wake_writers()

    # --- TLS --------------------------------------------------------------------------------
    def _flush(self) -> None:
        chunks = []
        while True:
            try:
                chunks.append(self.ssl.bio_read(_READ_SIZE))
            except SSL.WantReadError:
                break
        if chunks and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(chunks))
            self._last_tx = self.owner._clock.monotonic()

    def _handshake(self) -> None:
        try:
            self.ssl.do_handshake()
        except SSL.WantReadError:
            self._flush()
            return
        self._tls_done = True
        if self.server:
            self._flush()
            self._authenticate()
            return
        # A TLS 1.3 client completes its handshake when it writes its Finished, before the
        # listener has seen it; once the Finished leaves, the listener's handshake is done
        # and it admits us. So the dialer checks the listener (certificate, expected peer
        # id, ALPN, its own limits) while its last flight is still in the memory BIO -- the
        # server's CertificateVerify and Finished are verified by now, so the certificate
        # is proven -- and on refusal drops that flight unsent: the listener's handshake
        # then fails (EOF) instead of handing its application a connection that is closed
        # at once. Same order as QUIC, which closes before its Finished is sent.
        try:
            self._authenticate()
        except BaseException:
            self._discard_output()
            raise
        self._flush()

    def _discard_output(self) -> None:
        """Drop whatever TLS queued for the peer (the dialer's unsent last flight)."""
        while True:
            try:
                self.ssl.bio_read(_READ_SIZE)
            except SSL.WantReadError:
                return

    def _authenticate(self) -> None:
        owner = self.owner
        cert = self.ssl.get_peer_certificate(as_cryptography=True)
        if cert is None:
            raise InvalidCertificate("peer presented no certificate")
        if not self.server and self.ssl.get_alpn_proto_negotiated() != _ALPN:
            raise HandshakeFailed("peer did not negotiate ALPN p2pstack/1")
        peer_id = owner._verifier.verify(cert.public_bytes(Encoding.DER), owner._clock.now())
        if self.expected is not None and peer_id != self.expected:
            raise PeerIdMismatch(self.expected, peer_id)
        owner._registry.admit(peer_id)  # LimitExceeded, as on QUIC
        conn = TlsConn(self, peer_id, is_client=not self.server)
        conn.registry = owner._registry
        conn.add_close_callback(lambda c: owner._registry.release(c.peer_id))
        self.conn = conn
        self._cancel_timer()
        self._arm_keep_alive()
        self.established.set_result(conn)
        if self.server:
            owner._on_connection(conn)

    def _read_plaintext(self) -> None:
        assert self.conn is not None
        while True:
            try:
                data = self.ssl.recv(_READ_SIZE)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:  # close_notify
                self.conn._closed_by("peer closed the connection")
                self.shutdown()
                return
            self.conn.feed(data)
            if self.conn.closed:  # e.g. the peer's GOAWAY with a reason: we shut down
                return
        self._flush()  # post-handshake messages (tickets, key updates) and our replies

    def send(self, plaintext: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.ssl.sendall(plaintext)
        self._flush()

    def shutdown(self) -> None:
        """Send close_notify and close the TCP connection."""
        self._cancel_timer()
        if self.transport is None or self.transport.is_closing():
            return
        with contextlib.suppress(SSL.Error):  # a broken session has no close_notify to send
            self.ssl.shutdown()
        self._flush()
        self.transport.close()

    def _fail_established(self, exc: Exception) -> None:
        # Only a dialer awaits the future; on the server side mark it retrieved so no
        # "exception was never retrieved" report runs from a finalizer later.
        self.established.set_exception(exc)
        if self.server:
            self.established.exception()

    def _fail(self, exc: TransportError | LimitExceeded) -> None:
        handshaking = not self.established.done()
        if handshaking:
            self.owner.handshake_failures += 1
            self._fail_established(exc)
        elif self.conn is not None:
            self.conn._closed_by(f"{type(exc).__name__}: {exc}")
        if handshaking and self.server and self._tls_done:
            # Our handshake is complete, so the dialer's is too (TLS 1.3: it finished
            # first) and it believes it is connected: no TLS alert can reach it any more.
            # Tell it why in a mux GOAWAY, then close_notify, as QUIC puts the reason in
            # its CONNECTION_CLOSE; the dialer closes with "refused by the peer: <reason>".
            self.send(mux.encode(mux.GOAWAY, 0, mux.goaway_code(exc)))
            with contextlib.suppress(SSL.Error):
                self.ssl.shutdown()
        if self.transport is not None:
            # Write out the alert OpenSSL queued for the failure (certificate_required,
            # RFC 8446 section 4.4.2.4; bad_certificate; ...): it tells the peer why.
            self._flush()
            if handshaking:
                # close(), not abort(): abort() would drop the alert if asyncio still
                # holds it; a handshake has at most a few kilobytes queued.
                self.transport.close()
            else:
                # An established connection may hold megabytes a failed peer will never
                # read: drop them (the alert goes out if the socket takes it at once).
                self.transport.abort()

    # --- timers: handshake timeout, keep-alive, idle timeout ----------------------------
    # Idle and keep-alive are measured on the clock's monotonic reading (a wall-clock step
    # must not drop or ping every connection); the checks run from loop timers, which
    # count durations on the loop's own monotonic clock.
    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _handshake_timeout(self) -> None:
        self._timer = None
        self._fail(HandshakeTimeout("no TLS handshake within "
                                    f"{self.options.handshake_timeout}s"))

    def _arm_keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        self._last_rx = self._last_tx = self.owner._clock.monotonic()
        period = self.options.keep_alive or self.options.idle_timeout
        self._timer = loop.call_later(min(period, self.options.idle_timeout), self._tick)

    def _tick(self) -> None:
        now = self.owner._clock.monotonic()
        if now - self._last_rx >= self.options.idle_timeout:
            self._timer = None
            if self.conn is not None:
                self.conn.abort("idle timeout")
            return
        keep_alive = self.options.keep_alive
        if keep_alive is not None and now - self._last_tx >= keep_alive:
            self.send(mux.encode(mux.PING, 0, 1))
        period = min(keep_alive or self.options.idle_timeout, self.options.idle_timeout)
        self._timer = asyncio.get_running_loop().call_later(period / 2, self._tick)


class TlsTransport:
    """Listens for and dials TLS 1.3 connections; one per node."""

    name = "tls"

    def __init__(self, *, certified: CertifiedKey, clock: Clock, options: TransportOptions,
                 registry: Registry, on_connection: Callable[[TlsConn], None],
                 verifier: CertificateVerifier | None = None) -> None:
        self._verifier = verifier or CertificateVerifier()
        self._clock = clock
        self.options = options
        self._registry = registry
        self._on_connection = on_connection
        self._server_ctx = _context(certified, server=True)
        self._client_ctx = _context(certified, server=False)
        self._server: asyncio.Server | None = None
        self._protocols: set[_TlsProtocol] = set()
        self._closed = False
        self.handshake_failures = 0

    def _pending_full(self, ip: str) -> bool:
        """Whether a new inbound TCP connection from ``ip`` would exceed the bounds on
        handshakes in progress: ``max_handshakes_per_ip`` per source IP (TCP sources
        cannot be spoofed, so one host cannot hold the others off) and twice
        ``max_connections`` in all, as QUIC bounds its half-open connections."""
        limits = self.options.limits
        pending = [p for p in self._protocols if p.server and p.conn is None]
        return (len(pending) >= 2 * limits.max_connections
                or sum(p.remote_address[0] == ip for p in pending)
                >= limits.max_handshakes_per_ip)

    async def listen(self, addr: Address) -> Address:
        """Start accepting on TCP ``addr``; returns the bound address."""
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _TlsProtocol(self, True, None), addr[0], addr[1], reuse_address=True)
        except OSError as exc:
            raise LocalError(f"cannot listen on TCP {addr[0]}:{addr[1]}: {exc.strerror}") from exc
        host, port = self._server.sockets[0].getsockname()[:2]
        return (host, port)

    @property
    def connections(self) -> list[TlsConn]:
        return [p.conn for p in self._protocols if p.conn is not None and not p.conn.closed]

    async def dial(self, addr: Address, expected: PeerId | None = None) -> TlsConn:
        if self._closed:
            raise TransportClosed("TLS transport is closed")
        loop = asyncio.get_running_loop()
        proto = _TlsProtocol(self, False, expected)
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: proto, addr[0], addr[1]),
                self.options.handshake_timeout)
        except TimeoutError:
            raise HandshakeTimeout(f"TCP connect to {addr[0]}:{addr[1]} timed out") from None
        except OSError as exc:
            raise HandshakeFailed(f"cannot connect to {addr[0]}:{addr[1]}: "
                                  f"{exc.strerror or exc}") from None
        try:
            return await proto.established
        except asyncio.CancelledError:  # a raced dial that lost: close the TCP connection
            if proto.transport is not None:
                proto.transport.abort()
            raise

    async def close(self, grace: float = 1.0) -> None:
        self._closed = True
        if self._server is not None:
            self._server.close()
        conns = self.connections
        await asyncio.gather(*(c.close(grace) for c in conns), return_exceptions=True)
        for proto in list(self._protocols):
            if proto.transport is not None:
                proto.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
