"""A circuit: QUIC datagrams framed onto a relayed stream (``wire``'s circuit framing).

``CircuitSocket`` is the ``PathSocket`` (kind RELAYED) an end of a circuit gives QUIC:
``send`` never blocks (a datagram goes into a bounded queue that one writer task drains
onto the stream; a full queue drops, as a full UDP buffer would), and ``run(receive)``
reads frames and hands each batch of datagrams to ``receive`` (the QUIC transport's
path receiver) until the circuit ends. ``ended`` then says why: a ``Status`` when the
relay ended it (its last frame), None for a plain close.

``splice`` is the relay's side: it forwards frames between the two halves of a circuit,
counting bytes per direction against the circuit's ``Limit`` and dropping frames over a
rate limit. It sees QUIC packets, i.e. ciphertext: the relay can drop, delay or corrupt
them, and QUIC's AEAD and the end-to-end handshake turn any of that into loss or a
failed handshake, never into accepted data.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

from stack.base.errors import RemoteError
from stack.base.interfaces import Path, Stream
from stack.base.ratelimit import TokenBuckets

from nat.errors import RelayRefused

from nat.relay.wire import FRAME_HEADER, Limit, Status, encode_frame, end_frame

__all__ = ["FrameReader", "CircuitSocket", "splice", "SpliceResult"]

MAX_QUEUE = 256          # datagrams queued for the stream before send() drops
READ_CHUNK = 1 << 16


class FrameReader:
    """Incremental parser of circuit frames: ``feed(bytes)`` returns the complete
    datagrams; ``ended`` is set once the relay's end frame arrived (later bytes are
    ignored)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.ended: Status | None = None
        self.malformed = False

    def feed(self, data: bytes) -> list[bytes]:
        if self.ended is not None or self.malformed:
            return []
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        while len(buf) - pos >= 2:
            (length,) = FRAME_HEADER.unpack_from(buf, pos)
            if length == 0:
                if len(buf) - pos < 4:
                    break
                (code,) = FRAME_HEADER.unpack_from(buf, pos + 2)
                try:
                    self.ended = Status(code)
                except ValueError:
                    self.malformed = True
                pos = len(buf)
                break
            if len(buf) - pos - 2 < length:
                break
            out.append(bytes(buf[pos + 2:pos + 2 + length]))
            pos += 2 + length
        del buf[:pos]
        return out


class CircuitSocket:
    """One end of a circuit as a ``PathSocket``. See the module docstring."""

    def __init__(self, stream: Stream, path: Path) -> None:
        self.stream = stream
        self.path = path
        self._queue: deque[bytes] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False
        self.ended: Status | None = None   # the status the relay ended the circuit with
        self.dropped = 0
        self.sent = 0
        self.received = 0
        self._writer = asyncio.ensure_future(self._write_loop())

    @property
    def error(self) -> RelayRefused | None:
        """The relay's end of the circuit as the named error (None: not ended by it)."""
        if self.ended is None:
            return None
        return RelayRefused(self.ended, "the relay ended the circuit", self.path.relay)

    def send(self, data: bytes) -> None:
        if self._closed or not data:
            return
        if len(self._queue) >= MAX_QUEUE:
            self.dropped += 1
            return
        self._queue.append(encode_frame(data))
        self._wakeup.set()

    async def _write_loop(self) -> None:
        """Drain the queue onto the stream; after ``close()``, what is queued still goes
        (a CONNECTION_CLOSE queued just before must reach the peer), then FIN."""
        with contextlib.suppress(RemoteError):
            while True:
                if not self._queue:
                    if self._closed:
                        break
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                chunk = b"".join(self._queue)
                self.sent += len(self._queue)
                self._queue.clear()
                await self.stream.write(chunk)
            await self.stream.close()
        self._closed = True

    async def run(self, receive: Callable[[list[bytes]], None]) -> Status | None:
        """Read frames until the circuit ends; returns (and keeps in ``ended``) the
        relay's status if it ended it."""
        reader = FrameReader()
        try:
            with contextlib.suppress(RemoteError):
                while not self._closed:
                    data = await self.stream.read(READ_CHUNK)
                    if not data:
                        break
                    datagrams = reader.feed(data)
                    if datagrams:
                        self.received += len(datagrams)
                        receive(datagrams)
                    if reader.ended is not None or reader.malformed:
                        break
            self.ended = reader.ended
        finally:  # cancelled too: the writer task must not outlive the circuit
            await self.close()
        return self.ended

    async def close(self, flush: float = 1.0) -> None:
        """Stop taking datagrams, send the queued ones (up to ``flush`` seconds), then
        end our direction (FIN); idempotent."""
        self._closed = True
        self._wakeup.set()
        with contextlib.suppress(TimeoutError, RemoteError):
            await asyncio.wait_for(asyncio.shield(self._writer), flush)
        if not self._writer.done():
            self._writer.cancel()
            self.stream.reset()


class SpliceResult:
    """How a splice ended: ``reason`` is ``closed`` (an end closed or reset its stream),
    ``data_limit``, ``duration_limit`` or ``malformed``; byte counts per direction."""

    def __init__(self) -> None:
        self.reason = "closed"
        self.forwarded = [0, 0]    # bytes a->b, b->a
        self.rate_dropped = 0


async def splice(a: Stream, b: Stream, limit: Limit, *, rate: int = 0,
                 monotonic: Callable[[], float],
                 result: SpliceResult | None = None) -> SpliceResult:
    """Forward circuit frames between ``a`` and ``b`` until one side ends or a limit
    is hit; then both get the relay's end frame (a limit: RESOURCE_LIMIT_EXCEEDED) and
    FIN. ``limit.data`` counts frame bytes per direction; ``rate`` (bytes/s per
    direction, 0: none) drops frames over it. ``result`` (counted into as it runs, so a
    caller can watch a live circuit) is returned."""
    result = result if result is not None else SpliceResult()
    done = asyncio.Event()

    async def pump(src: Stream, dst: Stream, index: int) -> None:
        reader = FrameReader()
        # bytes per second, one second of burst
        bucket = TokenBuckets(rate, rate, max_keys=1) if rate else None
        try:
            while True:
                data = await src.read(READ_CHUNK)
                if not data:
                    return
                out = []
                for datagram in reader.feed(data):
                    size = len(datagram) + 2
                    if limit.data and result.forwarded[index] + size > limit.data:
                        result.reason = "data_limit"
                        break
                    if bucket is not None and not bucket.allow(index, monotonic(), size):
                        result.rate_dropped += 1
                        continue
                    result.forwarded[index] += size
                    out.append(encode_frame(datagram))
                if out:
                    await dst.write(b"".join(out))
                if result.reason != "closed":
                    return
                if reader.ended is not None or reader.malformed:  # only the relay ends
                    result.reason = "malformed"
                    return
        except RemoteError:
            return
        finally:
            done.set()

    tasks = [asyncio.ensure_future(pump(a, b, 0)), asyncio.ensure_future(pump(b, a, 1))]
    try:
        if limit.duration:
            try:
                await asyncio.wait_for(done.wait(), limit.duration)
            except TimeoutError:
                result.reason = "duration_limit"
        else:
            await done.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        status = (Status.RESOURCE_LIMIT_EXCEEDED if result.reason.endswith("_limit")
                  else Status.CONNECTION_FAILED if result.reason == "malformed" else None)
        for stream in (a, b):
            with contextlib.suppress(RemoteError, TimeoutError):
                if status is not None:
                    await asyncio.wait_for(stream.write(end_frame(status)), 1.0)
                await stream.close()
    return result
