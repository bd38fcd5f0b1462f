"""One stream and connection API for both transports (QUIC and TLS over TCP).

A ``Stream`` is a reliable, ordered, bidirectional byte stream inside a ``Connection``.
The transport behind it implements the small ``_StreamSink`` protocol; everything the
application sees is here:

- ``read(max_bytes)`` returns what is buffered (``b""`` at end of stream);
  ``readexactly(n)``; ``read_message()`` / ``write_message()`` frame messages with a
  4-byte big-endian length prefix, bounded by ``max_size``.
- ``write(data)`` waits while the transport's send buffer for this stream is above its
  high-water mark (back-pressure), ``close()`` half-closes (FIN) our direction,
  ``reset()`` abandons the stream in both directions.
- A reset or lost connection raises ``StreamReset`` / ``ConnectionClosed`` from pending
  and later reads and writes.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Protocol

from stack.transport.errors import (ConnectionClosed, FrameTooLarge, ProtocolViolation,
                                    StreamReset, TransportError)

__all__ = ["Stream", "DEFAULT_MAX_MESSAGE"]

DEFAULT_MAX_MESSAGE = 1 << 20  # bytes; length-prefixed messages larger than this are refused
_LEN = struct.Struct(">I")


class _StreamSink(Protocol):
    def _stream_send(self, stream: Stream, data: bytes, fin: bool) -> None: ...
    def _stream_reset(self, stream: Stream) -> None: ...
    def _stream_consumed(self, stream: Stream, count: int) -> None: ...
    def _stream_blocked(self, stream: Stream) -> bool: ...
    def _stream_finished(self, stream: Stream) -> None: ...


class Stream:
    """A bidirectional byte stream. Created by the transports, never directly."""

    def __init__(self, sink: _StreamSink, stream_id: int) -> None:
        self.stream_id = stream_id
        self._sink = sink
        self._buffer = bytearray()
        self._eof = False
        self._error: TransportError | None = None
        self._data_ready = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self.write_closed = False
        self._reported_finished = False

    # --- called by the transport ----------------------------------------------------

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def finished(self) -> bool:
        """Both directions done (FIN both ways) or the stream failed."""
        return self._error is not None or (self._eof and self.write_closed)

    def _feed(self, data: bytes) -> None:
        if self._error is None and data:
            self._buffer += data
            self._data_ready.set()

    def _feed_eof(self) -> None:
        self._eof = True
        self._data_ready.set()
        self._report_if_finished()

    def _fail(self, error: TransportError) -> None:
        if self._error is None:
            self._error = error
        self._data_ready.set()
        self._writable.set()
        self._report_if_finished()

    def _report_if_finished(self) -> None:
        """Tell the transport once that both directions are done (for per-peer limits)."""
        if self.finished and not self._reported_finished:
            self._reported_finished = True
            self._sink._stream_finished(self)

    def _wake_writer(self) -> None:
        self._writable.set()

    # --- application API --------------------------------------------------------------

    async def read(self, max_bytes: int = 65536) -> bytes:
        """Up to ``max_bytes`` bytes; waits for at least one; ``b""`` at end of stream."""
        while not self._buffer:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            self._data_ready.clear()
            await self._data_ready.wait()
        data = bytes(self._buffer[:max_bytes])
        del self._buffer[:max_bytes]
        self._sink._stream_consumed(self, len(data))
        return data

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; ``ProtocolViolation`` if the stream ends first."""
        while len(self._buffer) < n:
            if self._error is not None:
                raise self._error
            if self._eof:
                raise ProtocolViolation(f"stream ended after {len(self._buffer)} of {n} bytes")
            self._data_ready.clear()
            await self._data_ready.wait()
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        self._sink._stream_consumed(self, n)
        return data

    async def read_all(self, limit: int = DEFAULT_MAX_MESSAGE) -> bytes:
        """Everything until the peer's FIN; ``FrameTooLarge`` beyond ``limit`` bytes."""
        chunks = bytearray()
        while chunk := await self.read():
            chunks += chunk
            if len(chunks) > limit:
                self.reset()
                raise FrameTooLarge(f"stream carried more than {limit} bytes")
        return bytes(chunks)

    async def write(self, data: bytes) -> None:
        """Queue ``data``; waits while the send buffer is above the high-water mark."""
        if self._error is not None:
            raise self._error
        if self.write_closed:
            raise ConnectionClosed("write after close() on this stream")
        self._sink._stream_send(self, data, False)
        while self._sink._stream_blocked(self):
            if self._error is not None:
                raise self._error
            self._writable.clear()
            await self._writable.wait()

    async def close(self) -> None:
        """Half-close: send FIN. Reading stays possible until the peer's FIN."""
        if self.write_closed or self._error is not None:
            return
        self.write_closed = True
        self._sink._stream_send(self, b"", True)
        self._report_if_finished()

    def reset(self) -> None:
        """Abandon the stream both ways; the peer sees ``StreamReset``."""
        if self._error is None:
            self._sink._stream_reset(self)
            self._fail(StreamReset("stream reset locally"))

    async def write_message(self, payload: bytes) -> None:
        await self.write(_LEN.pack(len(payload)) + payload)

    async def next_message(self, max_size: int = DEFAULT_MAX_MESSAGE) -> bytes | None:
        """Like ``read_message``, but None when the peer ended the stream cleanly first."""
        while not self._buffer and not self._eof and self._error is None:
            self._data_ready.clear()
            await self._data_ready.wait()
        if not self._buffer and self._eof and self._error is None:
            return None
        return await self.read_message(max_size)

    async def read_message(self, max_size: int = DEFAULT_MAX_MESSAGE) -> bytes:
        """One length-prefixed message; ``FrameTooLarge`` (and a reset) above ``max_size``."""
        (length,) = _LEN.unpack(await self.readexactly(4))
        if length > max_size:
            self.reset()
            raise FrameTooLarge(f"message of {length} bytes exceeds {max_size}")
        return await self.readexactly(length)
