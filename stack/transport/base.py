"""What QUIC and TLS connections share: stream table, accept queue, limits, shutdown.

A transport subclasses ``BaseConnection`` and implements the ``_StreamSink`` methods
plus ``_new_stream_id()`` and ``_terminate()``; it calls ``_remote_stream(id)`` when the
peer opens a stream and ``_closed_by(error)`` when the connection is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from stack.base.identity import PeerId
from stack.base.interfaces import Path, PathKind
from stack.base.net import Address
from stack.transport.errors import ConnectionClosed, TransportClosed
from stack.transport.options import Registry, TransportOptions
from stack.transport.streams import Stream

__all__ = ["BaseConnection"]


class BaseConnection:
    transport = "?"

    def __init__(self, *, peer_id: PeerId, remote_address: Address, is_client: bool,
                 options: TransportOptions) -> None:
        self.peer_id = peer_id
        self.remote_address = remote_address
        self.is_client = is_client
        self.options = options
        self.streams: dict[int, Stream] = {}
        self._accept: asyncio.Queue[Stream | None] = asyncio.Queue()
        self._closing = False
        self._closed = asyncio.get_running_loop().create_future()
        self._on_close: list[Callable[[BaseConnection], None]] = []
        self.close_reason: str | None = None
        self._progress = asyncio.Event()
        self.registry: Registry | None = None   # set by the transport on admission
        self._counted: set[int] = set()          # peer-opened streams counted per peer

    @property
    def path(self) -> Path:
        """How this connection's packets travel (direct UDP or TCP today)."""
        return Path(PathKind.DIRECT, self.remote_address)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.peer_id} {self.remote_address}>"

    # --- subclass hooks -----------------------------------------------------------------
    def _new_stream_id(self) -> int:
        raise NotImplementedError

    def _terminate(self, reason: str) -> None:
        """Close the underlying session now (no grace)."""
        raise NotImplementedError

    # the _StreamSink methods (stack.transport.streams) every transport implements
    def _stream_send(self, stream: Stream, data: bytes, fin: bool) -> None:
        raise NotImplementedError

    def _stream_reset(self, stream: Stream) -> None:
        raise NotImplementedError

    def _stream_consumed(self, stream: Stream, count: int) -> None:
        raise NotImplementedError

    def _stream_blocked(self, stream: Stream) -> bool:
        raise NotImplementedError

    # --- shared machinery ---------------------------------------------------------------
    def add_close_callback(self, callback: Callable[[BaseConnection], None]) -> None:
        self._on_close.append(callback)

    @property
    def closed(self) -> bool:
        return self._closed.done()

    @property
    def closing(self) -> bool:
        """A graceful close began (or ended): the connection takes no new streams."""
        return self._closing or self._closed.done()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    def _remote_stream(self, stream_id: int) -> Stream | None:
        """A stream the peer opened; None (after resetting it) if over a limit or closing."""
        self._forget_finished()
        stream = Stream(self, stream_id)
        self.streams[stream_id] = stream
        open_count = sum(1 for s in self.streams.values() if not s.finished)
        if (self._closing or open_count > self.options.limits.max_streams_per_connection
                or self.registry is None or not self.registry.open_stream(self.peer_id)):
            stream.reset()
            return None
        self._counted.add(stream_id)
        self._accept.put_nowait(stream)
        return stream

    def _stream_finished(self, stream: Stream) -> None:
        if stream.stream_id in self._counted:
            self._counted.discard(stream.stream_id)
            if self.registry is not None:
                self.registry.close_stream(self.peer_id)

    def _forget_finished(self) -> None:
        done = [sid for sid, s in self.streams.items() if s.finished and not s.buffered]
        for sid in done:
            del self.streams[sid]

    async def open_stream(self) -> Stream:
        if self._closed.done():
            raise ConnectionClosed(self.close_reason or "connection closed")
        if self._closing:
            raise TransportClosed("connection is shutting down")
        self._forget_finished()
        stream = Stream(self, self._new_stream_id())
        self.streams[stream.stream_id] = stream
        return stream

    async def accept_stream(self) -> Stream:
        """The next stream the peer opened; ``ConnectionClosed`` once the connection ends."""
        stream = await self._accept.get()
        if stream is None:
            self._accept.put_nowait(None)  # wake every other waiter too
            raise ConnectionClosed(self.close_reason or "connection closed")
        return stream

    def _closed_by(self, reason: str) -> None:
        """The session is gone: fail every stream, wake acceptors, run callbacks once."""
        if self._closed.done():
            return
        self.close_reason = reason
        for stream in list(self.streams.values()):
            stream._fail(ConnectionClosed(reason))
        self._accept.put_nowait(None)
        self._closed.set_result(None)
        for callback in self._on_close:
            callback(self)

    def _progressed(self) -> None:
        """Transports call this after any stream state change (data, FIN, reset)."""
        self._progress.set()

    async def close(self, grace: float = 5.0) -> None:
        """Graceful shutdown: refuse new streams, let open ones finish (up to ``grace`` s)."""
        if self._closed.done():
            return
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while not self._closed.done() and any(not s.finished for s in self.streams.values()):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), remaining)
            except TimeoutError:
                break
        self.abort("closed")

    def abort(self, reason: str = "aborted") -> None:
        """Close now; open streams fail with ``ConnectionClosed``."""
        if self._closed.done():
            return
        self._terminate(reason)
        self._closed_by(reason)
