"""One conformance suite for every transport behind the shared Connection/Stream API.

Each case runs once per entry of ``TRANSPORTS`` on real 127.0.0.1 sockets: streams both
ways, message framing, limits, back-pressure, graceful close, abort, resets, the proven
peer id and the connection's ``Path``, over QUIC, TLS, a relayed and a punched path
(issue 9). Adding a transport is one more ``Transport`` entry: how to build a listening
peer, how to dial it, what path kind and remote address the dialer must then report,
and how to read the bytes it holds queued for a stream. Known divergences of one
transport are listed in its entry (``known_bugs``) and run as strict xfails, so a fix
shows up as an XPASS.

Every wait is on an event with a timeout (``T``); the only fixed windows are the ones
that prove a negative ("the writer is held", "close waited for its grace").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from stack.base.identity import Identity, PeerId
from stack.base.interfaces import Path, PathKind
from stack.base.net import Address
from stack.transport.aioquic_adapter import unacked_bytes
from stack.transport.errors import (ConnectionClosed, FrameTooLarge, HandshakeFailed,
                                    HandshakeTimeout, LimitExceeded, PeerIdMismatch,
                                    StreamReset, TransportClosed)
from stack.transport.options import ConnectionLimits, TransportOptions
from stack.transport.quic import UdpPathSocket
from tests.stack.transport.helpers import quic_peer, tls_peer
from tests.stack.transport.relayed_helpers import relayed_dial, relayed_peer

T = 5.0  # seconds any single awaited event may take


# --- the transports under test -------------------------------------------------------------

@dataclass(frozen=True)
class Transport:
    """How the suite drives one transport (or one kind of path through it)."""

    name: str
    #: a listening peer: ``await make_peer(options=..., identity=...)`` with ``identity``,
    #: ``address``, ``transport`` (``dial``, ``handshake_failures``), ``incoming`` (a queue
    #: of accepted connections) and ``aclose()``
    make_peer: Callable[..., Awaitable[Any]]
    #: bytes our side still holds for ``stream`` (unsent, or sent and not acknowledged)
    queued: Callable[[Any, Any], int]
    #: the dialer's address as the listener sees it
    dialer_address: Callable[[Any, Any], Address]
    path_kind: PathKind = PathKind.DIRECT
    #: test name -> why it fails on this transport (a real bug, run as a strict xfail)
    known_bugs: dict[str, str] = field(default_factory=dict)

    async def dial(self, dialer: Any, listener: Any, expected: PeerId | None) -> Any:
        return await dialer.transport.dial(listener.address, expected)

    def remote_address(self, listener: Any) -> Address:
        """Where the dialer's connection must say its packets go."""
        return listener.address

    def relay(self, listener: Any) -> PeerId | None:
        """The relay a connection to ``listener`` goes through (None: a direct path)."""
        return None


def _quic_queued(conn: Any, stream: Any) -> int:
    return unacked_bytes(conn.quic, stream.stream_id)


def _tls_queued(conn: Any, stream: Any) -> int:
    transport = conn._proto.transport
    return len(conn._outq.get(stream.stream_id, b"")) + transport.get_write_buffer_size()


QUIC = Transport(
    name="quic", make_peer=quic_peer, queued=_quic_queued,
    dialer_address=lambda dialer, conn: dialer.address)

TLS = Transport(
    name="tls", make_peer=tls_peer, queued=_tls_queued,
    dialer_address=lambda dialer, conn: conn._proto.transport.get_extra_info("sockname")[:2])

@dataclass(frozen=True)
class Relayed(Transport):
    """QUIC end to end through a circuit on a relay (tests/stack/transport/relayed_helpers)."""

    async def dial(self, dialer: Any, listener: Any, expected: PeerId | None) -> Any:
        return await relayed_dial(dialer, listener, expected)

    def relay(self, listener: Any) -> PeerId | None:
        return listener.relay.identity.peer_id


RELAYED = Relayed(
    name="quic", make_peer=relayed_peer, queued=_quic_queued,
    dialer_address=lambda dialer, conn: conn.remote_address, path_kind=PathKind.RELAYED)


@dataclass(frozen=True)
class Punched(Transport):
    """QUIC on a hole-punched path, as DCUtR leaves it (stack.node.protocols.dcutr):
    the listener expects the punch from the dialer's IP (no Retry inside the window), the
    dialer dials over a PUNCHED path socket from its shared port; both ends' path is
    PUNCHED. On loopback no NAT sits between them, so this exercises the transport's
    punched path, not the NAT traversal (tests/simulations/test_punch_sim.py does that)."""

    async def dial(self, dialer: Any, listener: Any, expected: PeerId | None) -> Any:
        listener.transport.expect_punch([dialer.address[0]], time.monotonic() + T)
        sock = UdpPathSocket(dialer.endpoint.send, listener.address, PathKind.PUNCHED)
        return await dialer.transport.dial_path(sock, expected)


PUNCHED = Punched(
    name="quic", make_peer=quic_peer, queued=_quic_queued,
    dialer_address=lambda dialer, conn: dialer.address, path_kind=PathKind.PUNCHED)

TRANSPORTS = [pytest.param(QUIC, id="quic"), pytest.param(TLS, id="tls"),
              pytest.param(RELAYED, id="relayed"), pytest.param(PUNCHED, id="punched")]


# --- fixtures ----------------------------------------------------------------------------

@pytest.fixture(params=TRANSPORTS)
def flavour(request: pytest.FixtureRequest) -> Transport:
    transport: Transport = request.param
    reason = transport.known_bugs.get(request.node.originalname)
    if reason is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    return transport


class Net:
    """Peers of one transport; every peer made is closed at teardown."""

    def __init__(self, flavour: Transport) -> None:
        self.flavour = flavour
        self._peers: list[Any] = []

    async def peer(self, options: TransportOptions | None = None,
                   identity: Identity | None = None) -> Any:
        peer = await self.flavour.make_peer(options=options, identity=identity)
        self._peers.append(peer)
        return peer

    async def connect(self, dialer: Any, listener: Any) -> tuple[Any, Any]:
        """A dialed connection and the listener's side of it."""
        conn = await asyncio.wait_for(
            self.flavour.dial(dialer, listener, listener.identity.peer_id), T)
        server = await asyncio.wait_for(listener.incoming.get(), T)
        return conn, server

    async def aclose(self) -> None:
        for peer in reversed(self._peers):
            await peer.aclose()


@pytest.fixture
async def net(flavour: Transport):
    n = Net(flavour)
    yield n
    await n.aclose()


@dataclass
class Pair:
    client: Any          # the dialer's connection
    server: Any          # the listener's connection
    dialer: Any
    listener: Any


@pytest.fixture
async def pair(net: Net) -> Pair:
    listener, dialer = await net.peer(), await net.peer()
    client, server = await net.connect(dialer, listener)
    return Pair(client, server, dialer, listener)


async def limited(net: Net, **limits: int) -> tuple[Any, Any]:
    """A listener with ``limits`` and a dialer with the defaults."""
    listener = await net.peer(TransportOptions(limits=ConnectionLimits(**limits)))
    return listener, await net.peer()


def yielded_during(coro: Awaitable[Any]) -> Awaitable[bool]:
    """Await ``coro``; True if it gave the event loop a turn (i.e. it really waited)."""
    async def run() -> bool:
        ran = []
        handle = asyncio.get_running_loop().call_soon(ran.append, True)
        await coro
        handle.cancel()
        return bool(ran)
    return run()


# --- identity and path ---------------------------------------------------------------------

async def test_handshake_proves_both_peer_ids(pair: Pair, flavour: Transport) -> None:
    assert pair.client.peer_id == pair.listener.identity.peer_id
    assert pair.server.peer_id == pair.dialer.identity.peer_id
    assert pair.client.transport == pair.server.transport == flavour.name
    assert pair.client.is_client and not pair.server.is_client


async def test_expected_peer_id_mismatch_is_the_named_error(net: Net,
                                                          flavour: Transport) -> None:
    listener, dialer = await net.peer(), await net.peer()
    someone_else = Identity.generate().peer_id
    with pytest.raises(PeerIdMismatch) as err:
        await asyncio.wait_for(flavour.dial(dialer, listener, someone_else), T)
    assert err.value.expected == someone_else
    assert err.value.actual == listener.identity.peer_id
    # the listener keeps serving honest dialers
    conn = await asyncio.wait_for(
        flavour.dial(dialer, listener, listener.identity.peer_id), T)
    assert conn.peer_id == listener.identity.peer_id


async def test_refused_identity_leaves_no_connection_on_the_listener(
        net: Net, flavour: Transport) -> None:
    """A dialer that refuses the listener's identity must not leave the listener's
    application a connection from it (the refusal comes before the dialer's Finished)."""
    listener, dialer = await net.peer(), await net.peer()
    with pytest.raises(PeerIdMismatch):
        await asyncio.wait_for(flavour.dial(dialer, listener, Identity.generate().peer_id), T)
    # the next connection the listener hands over is the honest one that follows
    conn, server = await net.connect(dialer, listener)
    assert not server.closed and server.peer_id == dialer.identity.peer_id
    stream = await conn.open_stream()
    await stream.write_message(b"honest")
    got = await asyncio.wait_for(server.accept_stream(), T)
    assert await asyncio.wait_for(got.read_message(), T) == b"honest"


async def test_dial_without_expected_peer_id_learns_it(net: Net, flavour: Transport) -> None:
    listener, dialer = await net.peer(), await net.peer()
    conn = await asyncio.wait_for(flavour.dial(dialer, listener, None), T)
    assert conn.peer_id == listener.identity.peer_id


async def test_path_is_direct_with_the_remote_address(pair: Pair, flavour: Transport) -> None:
    assert isinstance(pair.client.path, Path)
    relay = flavour.relay(pair.listener)  # both ends of a relayed path name the relay
    assert pair.client.path == Path(flavour.path_kind, flavour.remote_address(pair.listener),
                                    relay)
    dialer_seen = flavour.dialer_address(pair.dialer, pair.client)
    assert pair.server.path == Path(flavour.path_kind, dialer_seen, relay)
    assert pair.server.remote_address == dialer_seen


# --- streams and framing -------------------------------------------------------------------

async def test_streams_open_and_accept_in_both_directions(pair: Pair) -> None:
    for opener, acceptor in ((pair.client, pair.server), (pair.server, pair.client)):
        opened = [await opener.open_stream() for _ in range(3)]
        assert len({s.stream_id for s in opened}) == 3
        for i, stream in enumerate(opened):
            await stream.write_message(b"ping %d" % i)
        accepted = [await asyncio.wait_for(acceptor.accept_stream(), T) for _ in opened]
        assert [s.stream_id for s in accepted] == [s.stream_id for s in opened]
        for i, stream in enumerate(accepted):
            assert await asyncio.wait_for(stream.read_message(), T) == b"ping %d" % i
            await stream.write_message(b"pong %d" % i)
            await stream.close()
        for i, stream in enumerate(opened):
            assert await asyncio.wait_for(stream.read_message(), T) == b"pong %d" % i
            assert await asyncio.wait_for(stream.next_message(), T) is None  # clean FIN
            await stream.close()


async def test_message_framing_keeps_boundaries(pair: Pair) -> None:
    # empty, tiny, and one larger than a mux frame (256 KiB) and many QUIC packets
    messages = [b"", b"x", bytes(range(256)) * 1200, b"tail"]
    stream = await pair.client.open_stream()
    for message in messages:
        await stream.write_message(message)
    await stream.close()
    accepted = await asyncio.wait_for(pair.server.accept_stream(), T)
    got = []
    while (message := await asyncio.wait_for(accepted.next_message(), T)) is not None:
        got.append(message)
    assert got == messages


async def test_oversized_message_is_frame_too_large_and_resets_the_stream(pair: Pair) -> None:
    stream = await pair.client.open_stream()
    await stream.write((10_000).to_bytes(4, "big") + b"x" * 100)
    accepted = await asyncio.wait_for(pair.server.accept_stream(), T)
    with pytest.raises(FrameTooLarge):
        await asyncio.wait_for(accepted.read_message(max_size=1000), T)
    with pytest.raises(StreamReset):  # the refusing side reset it; the sender sees that
        await asyncio.wait_for(stream.read(), T)
    with pytest.raises(StreamReset):
        await stream.write(b"more")


async def test_read_all_past_its_limit_is_frame_too_large(pair: Pair) -> None:
    stream = await pair.client.open_stream()
    await stream.write(b"y" * 5000)
    await stream.close()
    accepted = await asyncio.wait_for(pair.server.accept_stream(), T)
    with pytest.raises(FrameTooLarge):
        await asyncio.wait_for(accepted.read_all(limit=4096), T)
    with pytest.raises(StreamReset):
        await asyncio.wait_for(stream.read(), T)


async def test_stream_reset_is_seen_by_the_peer_as_stream_reset(pair: Pair) -> None:
    stream = await pair.client.open_stream()
    await stream.write(b"partial")
    accepted = await asyncio.wait_for(pair.server.accept_stream(), T)
    assert await asyncio.wait_for(accepted.read(), T) == b"partial"
    pending = asyncio.create_task(accepted.read())  # a read already waiting is woken
    stream.reset()
    with pytest.raises(StreamReset):
        await asyncio.wait_for(pending, T)
    with pytest.raises(StreamReset):
        await accepted.write(b"answer")
    with pytest.raises(StreamReset):
        await stream.write(b"more")
    # only that stream: the connection carries on
    other = await pair.client.open_stream()
    await other.write_message(b"still here")
    assert await asyncio.wait_for(
        (await asyncio.wait_for(pair.server.accept_stream(), T)).read_message(), T
    ) == b"still here"


# --- limits --------------------------------------------------------------------------------

async def test_stream_limit_per_connection(net: Net) -> None:
    listener, dialer = await limited(net, max_streams_per_connection=2)
    conn, server = await net.connect(dialer, listener)
    streams = [await conn.open_stream() for _ in range(3)]
    for stream in streams:
        await stream.write(b"x")
    accepted = [await asyncio.wait_for(server.accept_stream(), T) for _ in range(2)]
    assert [s.stream_id for s in accepted] == [s.stream_id for s in streams[:2]]
    with pytest.raises(StreamReset):  # the third concurrent stream is refused by a reset
        await asyncio.wait_for(streams[2].read(), T)
    # the two admitted ones work
    for opened, got in zip(streams[:2], accepted, strict=True):  # 2 and 2, asserted above
        assert await asyncio.wait_for(got.read(), T) == b"x"
        await got.write(b"ok")
        assert await asyncio.wait_for(opened.read(), T) == b"ok"


async def test_stream_limit_per_peer_spans_connections(net: Net) -> None:
    listener, dialer = await limited(net, max_streams_per_peer=2)
    conn0, server0 = await net.connect(dialer, listener)
    conn1, server1 = await net.connect(dialer, listener)
    first = [await conn0.open_stream() for _ in range(2)]
    for stream in first:
        await stream.write(b"x")
    accepted = [await asyncio.wait_for(server0.accept_stream(), T) for _ in range(2)]
    extra = await conn1.open_stream()
    await extra.write(b"y")
    with pytest.raises(StreamReset):  # the peer's third concurrent stream, on connection 2
        await asyncio.wait_for(extra.read(), T)
    # finishing one stream frees a slot for the peer
    await first[0].close()
    await accepted[0].close()
    assert await asyncio.wait_for(first[0].read(), T) == b""
    assert await asyncio.wait_for(accepted[0].read(), T) == b"x"
    assert await asyncio.wait_for(accepted[0].read(), T) == b""
    again = await conn1.open_stream()
    await again.write_message(b"z")
    got = await asyncio.wait_for(server1.accept_stream(), T)
    assert await asyncio.wait_for(got.read_message(), T) == b"z"


async def _refused_second_connection(net: Net, flavour: Transport, listener: Any,
                                     dialer: Any) -> Any:
    """Dial ``listener`` once more and return the refused connection: the handshake
    completes on the dialer's side (it finishes first), then the listener's admission
    closes it. Asserts it was closed promptly and is not a timeout."""
    try:
        conn = await asyncio.wait_for(flavour.dial(dialer, listener,
                                                   listener.identity.peer_id), T)
    except HandshakeFailed as exc:  # refused before the dialer finished: also a refusal
        assert not isinstance(exc, HandshakeTimeout), exc
        return None
    await asyncio.wait_for(conn.wait_closed(), T)
    with pytest.raises(ConnectionClosed):
        await conn.open_stream()
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(conn.accept_stream(), T)
    return conn


async def test_connection_limit_per_peer_refuses_the_next_connection(
        net: Net, flavour: Transport) -> None:
    listener, dialer = await limited(net, max_connections_per_peer=1)
    first, server = await net.connect(dialer, listener)
    failures = listener.transport.handshake_failures
    await _refused_second_connection(net, flavour, listener, dialer)
    assert listener.transport.handshake_failures == failures + 1  # refused, not timed out
    assert listener.incoming.empty()  # never handed to the application
    # the admitted connection is untouched, and a different peer is still welcome
    stream = await first.open_stream()
    await stream.write_message(b"first")
    got = await asyncio.wait_for(server.accept_stream(), T)
    assert await asyncio.wait_for(got.read_message(), T) == b"first"
    other = await net.peer()
    conn, _ = await net.connect(other, listener)
    assert conn.peer_id == listener.identity.peer_id


async def test_total_connection_limit_refuses_the_next_peer(net: Net,
                                                            flavour: Transport) -> None:
    listener, dialer = await limited(net, max_connections=1)
    await net.connect(dialer, listener)
    failures = listener.transport.handshake_failures
    await _refused_second_connection(net, flavour, listener, await net.peer())
    assert listener.transport.handshake_failures == failures + 1
    assert listener.incoming.empty()


async def test_refused_dialer_learns_it_was_the_limit(net: Net, flavour: Transport) -> None:
    listener, dialer = await limited(net, max_connections_per_peer=1)
    await net.connect(dialer, listener)
    conn = await _refused_second_connection(net, flavour, listener, dialer)
    assert conn is not None and "LimitExceeded" in (conn.close_reason or "")


async def test_dialers_own_connection_limit_is_limit_exceeded(net: Net,
                                                              flavour: Transport) -> None:
    listener = await net.peer()
    dialer = await net.peer(TransportOptions(limits=ConnectionLimits(max_connections_per_peer=1)))
    await net.connect(dialer, listener)
    with pytest.raises(LimitExceeded):
        await asyncio.wait_for(flavour.dial(dialer, listener, listener.identity.peer_id), T)


# --- back-pressure -------------------------------------------------------------------------

async def test_write_waits_above_the_high_water_mark_and_resumes(net: Net,
                                                                  flavour: Transport) -> None:
    high_water = 256 << 10
    listener = await net.peer()
    dialer = await net.peer(TransportOptions(stream_high_water=high_water))
    conn, server = await net.connect(dialer, listener)
    stream = await conn.open_stream()
    chunk = bytes(range(256)) * 256          # 64 KiB
    total = 12 << 20                          # beyond the high-water mark and the TLS window

    async def reader() -> bytes:
        accepted = await server.accept_stream()
        return await accepted.read_all(limit=total)

    task = asyncio.create_task(reader())
    waited = 0
    most_queued = 0
    for _ in range(total // len(chunk)):
        waited += await yielded_during(stream.write(chunk))
        most_queued = max(most_queued, flavour.queued(conn, stream))
    await stream.close()
    data = await asyncio.wait_for(task, 30)
    assert len(data) == total and data == chunk * (total // len(chunk))  # resumed, intact
    assert waited >= 1                        # some write did wait ...
    assert most_queued <= high_water          # ... so none returned above the mark


async def test_reader_that_lags_holds_the_writer_and_loses_nothing(net: Net) -> None:
    """A reader that stops reading for a while must slow the writer down (flow control),
    not lose the stream; the writer resumes once the reader reads again."""
    listener = await net.peer(TransportOptions(max_stream_buffer=1 << 20))
    dialer = await net.peer()
    conn, server = await net.connect(dialer, listener)
    stream = await conn.open_stream()
    chunk = b"w" * 65536
    total = 24 << 20
    written = 0
    progress = asyncio.Event()

    async def writer() -> None:
        nonlocal written
        while written < total:
            await stream.write(chunk)
            written += len(chunk)
            progress.set()
        await stream.close()

    task = asyncio.create_task(writer())
    accepted = await asyncio.wait_for(server.accept_stream(), T)
    # Proving a negative: the writer is held once it makes no progress for 0.5 s.
    while not task.done():
        progress.clear()
        try:
            await asyncio.wait_for(progress.wait(), 0.5)
        except TimeoutError:
            break
    assert not task.done(), f"writer not held: {task.exception() if task.done() else ''}"
    assert written < total
    received = 0
    while chunk_read := await asyncio.wait_for(accepted.read(1 << 20), T):
        received += len(chunk_read)
    await asyncio.wait_for(task, T)
    assert received == total


# --- close, abort -------------------------------------------------------------------------

async def test_graceful_close_lets_open_streams_finish_within_grace(pair: Pair) -> None:
    stream = await pair.client.open_stream()
    await stream.write(b"request")
    await stream.close()
    closing = asyncio.create_task(pair.client.close(grace=T))
    await asyncio.sleep(0)  # let close() start: it refuses new streams at once
    with pytest.raises(TransportClosed):
        await pair.client.open_stream()
    accepted = await asyncio.wait_for(pair.server.accept_stream(), T)
    assert await asyncio.wait_for(accepted.read_all(), T) == b"request"
    assert not closing.done()  # the reply is still owed
    await accepted.write(b"reply")
    await accepted.close()
    assert await asyncio.wait_for(stream.read_all(), T) == b"reply"
    await asyncio.wait_for(closing, T)
    assert pair.client.closed
    await asyncio.wait_for(pair.server.wait_closed(), T)
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(pair.server.accept_stream(), T)


async def test_graceful_close_ends_streams_still_open_after_grace(pair: Pair) -> None:
    grace = 0.3
    stream = await pair.client.open_stream()
    await stream.write(b"never answered")
    accepted = await asyncio.wait_for(pair.server.accept_stream(), T)
    assert await asyncio.wait_for(accepted.read(), T) == b"never answered"
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(pair.client.close(grace=grace), T)
    elapsed = loop.time() - started
    assert grace <= elapsed < grace + 2.0  # waited its grace, then closed
    with pytest.raises(ConnectionClosed):
        await stream.read()
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(accepted.read(), T)
    await asyncio.wait_for(pair.server.wait_closed(), T)


async def test_abort_fails_open_streams_on_both_sides(pair: Pair) -> None:
    stream = await pair.client.open_stream()
    await stream.write(b"x")
    accepted = await asyncio.wait_for(pair.server.accept_stream(), T)
    assert await asyncio.wait_for(accepted.read(), T) == b"x"
    local_read = asyncio.create_task(stream.read())
    peer_read = asyncio.create_task(accepted.read())
    peer_accept = asyncio.create_task(pair.server.accept_stream())
    await asyncio.sleep(0)  # all three are waiting
    pair.client.abort("test abort")
    assert pair.client.closed  # at once, no grace
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(local_read, T)
    with pytest.raises(ConnectionClosed):
        await pair.client.open_stream()
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(peer_read, T)
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(peer_accept, T)
    assert pair.server.closed


async def test_connection_close_is_seen_by_the_peer_as_connection_closed(pair: Pair) -> None:
    await asyncio.wait_for(pair.client.close(grace=0.1), T)
    await asyncio.wait_for(pair.server.wait_closed(), T)
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(pair.server.accept_stream(), T)
    with pytest.raises(ConnectionClosed):
        await pair.server.open_stream()
    with pytest.raises(ConnectionClosed):
        await pair.client.open_stream()
