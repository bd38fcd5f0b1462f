"""The protocol router (iroh's ``protocol::Router``, rust-libp2p's behaviours).

A protocol is an object with a ``protocol_id`` and an ``async handle(conn, stream)``;
optionally ``async start()``, ``async stop()`` and ``on_connection(conn)``. The node
adds protocols to the router; every stream a peer opens names its protocol in its first
length-prefixed message, and the router hands the stream to that protocol's handler. A
new protocol (hole punching, relay, announcement push, rooms) is one more ``add``: the
router and ``Node`` do not change.

Wire: ``[u32 length][protocol id]`` then whatever the protocol speaks. An unknown id,
a name longer than ``MAX_PROTOCOL_ID`` or no name within the timeout resets the stream
and is counted in ``stats``; the handler never sees it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Protocol

import structlog

from stack.base.errors import LocalError
from stack.base.interfaces import Connection, Stream
from stack.transport.errors import TransportError

__all__ = ["ProtocolHandler", "Router", "MAX_PROTOCOL_ID"]

log = structlog.get_logger("p2pstack.router")

MAX_PROTOCOL_ID = 64  # bytes


class ProtocolHandler(Protocol):
    """What the router needs of a protocol. Handlers own the stream: they close or
    reset it. Optional hooks: ``start()``, ``stop()`` (awaitables) and
    ``on_connection(conn)`` (called for every authenticated connection, both ways)."""

    protocol_id: bytes

    async def handle(self, conn: Connection, stream: Stream) -> None: ...


class Router:
    """Dispatches incoming streams by protocol id."""

    def __init__(self, name_timeout: float) -> None:
        self.name_timeout = name_timeout
        self._handlers: dict[bytes, ProtocolHandler] = {}
        self.stats: Counter[str] = Counter()  # unknown_protocol, no_protocol, failed

    def add(self, handler: ProtocolHandler) -> None:
        pid = handler.protocol_id
        if not pid or len(pid) > MAX_PROTOCOL_ID:
            raise LocalError(f"protocol id must be 1..{MAX_PROTOCOL_ID} bytes: {pid!r}")
        if pid in self._handlers:
            raise LocalError(f"protocol {pid.decode(errors='replace')} is already routed")
        self._handlers[pid] = handler

    @property
    def protocols(self) -> list[ProtocolHandler]:
        return list(self._handlers.values())

    def get(self, protocol_id: bytes) -> ProtocolHandler | None:
        return self._handlers.get(protocol_id)

    async def start(self) -> None:
        for handler in self._handlers.values():
            start = getattr(handler, "start", None)
            if start is not None:
                await start()

    async def stop(self) -> None:
        for handler in reversed(self._handlers.values()):
            stop = getattr(handler, "stop", None)
            if stop is not None:
                await stop()

    def connection_opened(self, conn: Connection) -> None:
        for handler in self._handlers.values():
            hook = getattr(handler, "on_connection", None)
            if hook is not None:
                hook(conn)

    async def dispatch(self, conn: Connection, stream: Stream) -> None:
        """Read the stream's protocol id and run its handler; a handler's transport
        failure or timeout resets the stream (logged, counted), never propagates."""
        try:
            async with asyncio.timeout(self.name_timeout):
                protocol_id = await stream.read_message(MAX_PROTOCOL_ID)
        except (TransportError, TimeoutError) as exc:
            self.stats["no_protocol"] += 1
            log.debug("stream.no_protocol", peer_id=str(conn.peer_id), error=str(exc))
            stream.reset()
            return
        handler = self._handlers.get(protocol_id)
        if handler is None:
            self.stats["unknown_protocol"] += 1
            log.debug("stream.unknown_protocol", peer_id=str(conn.peer_id),
                      protocol=protocol_id.decode(errors="replace"))
            stream.reset()
            return
        try:
            await handler.handle(conn, stream)
        except (TransportError, TimeoutError) as exc:
            self.stats["failed"] += 1
            log.debug("stream.failed", peer_id=str(conn.peer_id), error=str(exc),
                      protocol=protocol_id.decode(errors="replace"))
            stream.reset()


async def open_protocol(conn: Connection, protocol_id: bytes) -> Stream:
    """Open a stream on ``conn`` for ``protocol_id`` (the dialer's side of ``dispatch``)."""
    stream = await conn.open_stream()
    await stream.write_message(protocol_id)
    return stream
