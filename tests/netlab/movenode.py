"""One Node inside a lab namespace for the move tests (issue 10): driven by commands on
stdin, one a line; reports on stdout as JSON lines, every node event included (by its
log name: ``connection.migrated``, ``connection.replaced``, ``address.changed`` ...).

    python tests/netlab/movenode.py DATA_DIR     (listens on 0.0.0.0:39001, QUIC only)

Commands (each answered by one line whose ``event`` is the command's name):

    connect MULTIADDR [identify]  dial it                     -> {"peer_id", "path"}
    open PEER_ID                  a sink stream on our connection to it, first half written
    finish                        the second half, FIN, the peer's SHA-256 -> {"ok"}
    echo PEER_ID                  an echo over (or after) a dial by peer id -> {"path"}
    quit
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this tree, not an install

import structlog

from stack.base.identity import PeerId
from stack.base.interfaces import Connection, Stream
from stack.node import Node, NodeConfig
from stack.node.events import EVENT_NAMES
from stack.node.router import open_protocol

PORT = 39001
PROTO_SINK = b"/test/sink/1"
TOTAL = 256 << 10
CHUNK = 8 << 10


class Sink:
    protocol_id = PROTO_SINK

    async def handle(self, conn: Connection, stream: Stream) -> None:
        digest = hashlib.sha256()
        while chunk := await stream.read(CHUNK):
            digest.update(chunk)
        await stream.write(digest.digest())
        await stream.close()


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}, default=str), flush=True)


def plain(value: Any) -> Any:
    if isinstance(value, (PeerId, Enum)):
        return str(value)
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    return value


async def report(node: Node) -> None:
    queue = node.subscribe()
    while True:
        event = await queue.get()
        say(EVENT_NAMES[type(event)], **{k: plain(v) for k, v in event.__dict__.items()})


async def main() -> None:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout: ours
    node = Node(NodeConfig(data_dir=Path(sys.argv[1]), listen=("0.0.0.0", PORT), tls=False,
                           dht=False, dial_back_timeout=3.0))
    node.router.add(Sink())
    await node.start()
    reporter = asyncio.ensure_future(report(node))
    say("ready", peer_id=str(node.peer_id), addrs=node.addrs())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    data = os.urandom(TOTAL)
    stream: Stream | None = None
    try:
        while line := (await reader.readline()).decode().split():
            command, args = line[0], line[1:]
            try:
                if command == "connect":
                    conn = await node.connect(args[0], identify="identify" in args[1:])
                    say("connect", peer_id=str(conn.peer_id), path=str(conn.path))
                elif command == "open":
                    peer = PeerId.parse(args[0])
                    conn = next(c for c in node.connections if c.peer_id == peer)
                    stream = await open_protocol(conn, PROTO_SINK)
                    await stream.write(data[:TOTAL // 2])
                    say("open", path=str(conn.path))
                elif command == "finish":
                    assert stream is not None
                    await stream.write(data[TOTAL // 2:])
                    await stream.close()
                    reply = await asyncio.wait_for(stream.read(64), 10)
                    say("finish", ok=reply == hashlib.sha256(data).digest())
                elif command == "echo":
                    conn, reply, _ = await node.echo(PeerId.parse(args[0]), b"moved")
                    say("echo", ok=reply == b"moved", path=str(conn.path))
                elif command == "quit":
                    break
            except Exception as exc:  # reported to the test, which fails on it
                say(command, error=f"{type(exc).__name__}: {exc}")
    finally:
        reporter.cancel()
        await node.stop(0.1)


if __name__ == "__main__":
    asyncio.run(main())
