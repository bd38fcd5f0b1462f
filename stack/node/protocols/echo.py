"""``/p2pstack/echo/1``: one message, echoed back, then FIN."""

from __future__ import annotations

import asyncio

from stack.base.errors import UsageError
from stack.base.interfaces import Connection, Stream
from stack.node.router import open_protocol

__all__ = ["PROTO_ECHO", "MAX_ECHO", "EchoProtocol", "echo"]

PROTO_ECHO = b"/p2pstack/echo/1"
MAX_ECHO = 64 * 1024  # bytes


class EchoProtocol:
    protocol_id = PROTO_ECHO

    async def handle(self, conn: Connection, stream: Stream) -> None:
        await stream.write_message(await stream.read_message(MAX_ECHO))
        await stream.close()


async def echo(conn: Connection, message: bytes, timeout: float) -> tuple[bytes, float]:
    """Send ``message``; returns (reply, RTT seconds). ``TimeoutError`` after ``timeout``;
    ``UsageError`` for a message over ``MAX_ECHO`` (the peer would reset the stream)."""
    if len(message) > MAX_ECHO:
        raise UsageError(f"an echo message carries at most {MAX_ECHO} bytes, "
                         f"not {len(message)}")
    stream = await open_protocol(conn, PROTO_ECHO)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await stream.write_message(message)
    async with asyncio.timeout(timeout):
        reply = await stream.read_message(MAX_ECHO)
    rtt = loop.time() - start
    await stream.close()
    return reply, rtt
