"""``/p2pstack/ping/1``: every message is echoed back until the dialer's FIN."""

from __future__ import annotations

import asyncio
import os

from stack.base.interfaces import Connection, Stream
from stack.node.router import open_protocol
from stack.transport.errors import ProtocolViolation

__all__ = ["PROTO_PING", "PingProtocol", "ping_once"]

PROTO_PING = b"/p2pstack/ping/1"
MAX_PING = 64  # bytes per ping message


class PingProtocol:
    protocol_id = PROTO_PING

    async def handle(self, conn: Connection, stream: Stream) -> None:
        while (msg := await stream.next_message(MAX_PING)) is not None:
            await stream.write_message(msg)
        await stream.close()


async def ping_once(conn: Connection) -> float:
    """One round trip of 32 random bytes; the RTT in seconds (loop time: virtual under
    the simulator). ``ProtocolViolation`` if the reply differs."""
    stream = await open_protocol(conn, PROTO_PING)
    payload = os.urandom(32)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await stream.write_message(payload)
    reply = await stream.read_message(MAX_PING)
    rtt = loop.time() - start
    await stream.close()
    if reply != payload:
        raise ProtocolViolation("ping reply does not match")
    return rtt
