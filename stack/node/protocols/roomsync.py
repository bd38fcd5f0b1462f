"""``/p2pstack/room-sync/1``: a room's shared document between its members (issue 13 §4).

It runs on a connection two members hold with each other, authenticated by peer id (the
QUIC/TLS handshake); the answering member decides by its *own* roster whether the opener
is a member (``stack.node.roomsync``) before a byte of the room's state leaves it. The
opener only ever opens it to members of its own roster, so neither side sends state to a
peer it did not verify itself.

Each message is a length-prefixed msgpack array:

=========  ============================================  ==========================================
verb       opener -> answerer                            answerer -> opener
=========  ============================================  ==========================================
``sync``   ``["sync", room_id, state_vector]``           ``["ok", missing, state_vector]``; then the
                                                         opener sends ``["rest", missing]`` (what
                                                         the answerer lacks) and FIN
``feed``   ``["feed", room_id, b""]``, then any number   ``["ok"]`` once; then nothing, unless it
           of ``["push", [update, ...]]`` until FIN      refuses a push (below)
=========  ============================================  ==========================================

``sync`` is Yjs's two-step state-vector exchange, both ways in one stream: after it each
side holds everything the other held, so a reconnect after a partition is one exchange.
A ``feed`` is one long-lived stream per room and member carrying our local changes as they
happen (a stream per change cost ~1.8x the CPU of a message on an open stream, measured
here); the answerer checks membership again for every push (a kick takes effect at once).

A refusal is ``["error", reason]`` then FIN, and carries nothing of the room: reasons are
``not_member``, ``removed``, ``unknown_room``, ``state_unusable`` (our stored state is
corrupt and kept aside), ``state_full`` (an update that could take the document over
``rooms.state.MAX_UPDATE``) and ``malformed_message``. Bounds: a message is at most
``MAX_SYNC_MESSAGE`` bytes, a push at most ``MAX_PUSH`` updates; anything else is
``MalformedMessage``, counted in ``stats`` by the side that received it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgpack

from stack.base.interfaces import Connection, Stream
from rooms.errors import MalformedMessage, RoomError
from rooms.names import ROOM_ID_LENGTH
from rooms.state import MAX_UPDATE, RoomDoc
from stack.node.router import open_protocol
from stack.transport.errors import FrameTooLarge

__all__ = ["PROTO_ROOM_SYNC", "RoomSyncRefused", "RoomSyncProtocol", "exchange", "Feed",
           "open_feed", "MAX_SYNC_MESSAGE", "MAX_PUSH", "Admit", "Merge"]

PROTO_ROOM_SYNC = b"/p2pstack/room-sync/1"
MAX_SYNC_MESSAGE = MAX_UPDATE + 64 * 1024  # bytes: a whole room's state plus framing
MAX_PUSH = 256                             # updates in one push

#: the answerer's decision: (connection, room id) -> the room's document, or a
#: ``RoomError`` whose ``reason`` is the refusal
Admit = Callable[[Connection, bytes], Awaitable[RoomDoc]]
#: merge updates a member sent into a document (``MalformedMessage`` for one that is not)
Merge = Callable[[Connection, RoomDoc, Sequence[bytes]], None]


class RoomSyncRefused(RoomError):
    """The other member refused the exchange; ``reason`` is its word for why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the member refused room sync: {reason}")


def _pack(obj: object) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def _unpack(data: bytes) -> tuple[Any, ...]:
    try:
        obj = msgpack.unpackb(data, use_list=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise MalformedMessage("room sync: not msgpack") from None
    if type(obj) is not tuple or not obj or type(obj[0]) is not str:
        raise MalformedMessage("room sync: not a message")
    return obj


async def _read(stream: Stream, timeout: float | None) -> tuple[Any, ...] | None:
    """The next message; None when the other side ended the stream cleanly instead."""
    try:
        async with asyncio.timeout(timeout):
            raw = await stream.next_message(MAX_SYNC_MESSAGE)
    except FrameTooLarge:
        raise MalformedMessage(f"room sync: a message over {MAX_SYNC_MESSAGE} bytes") from None
    return None if raw is None else _unpack(raw)


async def _expect(stream: Stream, timeout: float) -> tuple[Any, ...]:
    msg = await _read(stream, timeout)
    if msg is None:
        raise MalformedMessage("room sync: the stream ended early")
    return msg


def _updates(obj: object) -> tuple[bytes, ...]:
    if (type(obj) is not tuple or not 0 < len(obj) <= MAX_PUSH
            or any(type(u) is not bytes for u in obj)):
        raise MalformedMessage(f"room sync: a push is 1..{MAX_PUSH} updates")
    return obj


class RoomSyncProtocol:
    """The router handler (the answerer's side of both verbs)."""

    protocol_id = PROTO_ROOM_SYNC

    def __init__(self, admit: Admit, merge: Merge, timeout: float,
                 stop: Callable[[], Awaitable[None]] | None = None) -> None:
        self._admit = admit
        self._merge = merge
        self._timeout = timeout
        self._stop = stop
        self.stats: Counter[str] = Counter()

    async def stop(self) -> None:
        if self._stop is not None:
            await self._stop()

    async def handle(self, conn: Connection, stream: Stream) -> None:
        try:
            req = await _expect(stream, self._timeout)
            if (len(req) != 3 or req[0] not in ("sync", "feed") or type(req[1]) is not bytes
                    or len(req[1]) != ROOM_ID_LENGTH or type(req[2]) is not bytes):
                raise MalformedMessage("room sync: not a request")
            doc = await self._admit(conn, req[1])   # refusals: before any state is read
            if req[0] == "feed":
                await stream.write_message(_pack(("ok",)))
                self.stats["feeds_opened"] += 1
                while (msg := await _read(stream, None)) is not None:
                    if len(msg) != 2 or msg[0] != "push":
                        raise MalformedMessage("room sync: not a push")
                    updates = _updates(msg[1])
                    self._merge(conn, await self._admit(conn, req[1]), updates)
                    self.stats["pushes_taken"] += 1
            else:
                missing = doc.missing(req[2])
                await stream.write_message(_pack(("ok", missing, doc.state_vector())))
                rest = await _expect(stream, self._timeout)
                if len(rest) != 2 or rest[0] != "rest":
                    raise MalformedMessage("room sync: not the rest of an exchange")
                self._merge(conn, doc, _updates((rest[1],)))
                self.stats["exchanges_answered"] += 1
        except RoomError as exc:
            reason = str(getattr(exc, "reason", "refused"))[:64]
            self.stats[f"refused.{reason}"] += 1
            await stream.write_message(_pack(("error", reason)))
        await stream.close()


async def _answer(stream: Stream, timeout: float) -> tuple[Any, ...]:
    answer = await _expect(stream, timeout)
    if answer[0] == "error":
        reason = answer[1] if len(answer) > 1 and type(answer[1]) is str else "?"
        raise RoomSyncRefused(reason[:64])
    if answer[0] != "ok":
        raise MalformedMessage("room sync: not an answer")
    return answer


async def exchange(conn: Connection, room_id: bytes, doc: RoomDoc, merge: Merge,
                   timeout: float) -> None:
    """The opener's ``sync``: after it, ``doc`` and the member's document hold the same
    updates (``RoomSyncRefused`` if the member refuses us)."""
    stream = await open_protocol(conn, PROTO_ROOM_SYNC)
    try:
        await stream.write_message(_pack(("sync", room_id, doc.state_vector())))
        answer = await _answer(stream, timeout)
        if len(answer) != 3 or type(answer[2]) is not bytes:
            raise MalformedMessage("room sync: not a sync answer")
        merge(conn, doc, _updates((answer[1],)))
        await stream.write_message(_pack(("rest", doc.missing(answer[2]))))
    except BaseException:
        stream.reset()
        raise
    await stream.close()


class Feed:
    """Our open ``feed`` to one member on ``conn`` (see ``open_feed``)."""

    def __init__(self, conn: Connection, stream: Stream) -> None:
        self.conn = conn
        self.stream = stream

    async def send(self, updates: Sequence[bytes]) -> None:
        """Queue one push (1..``MAX_PUSH`` updates); no answer unless it is refused."""
        await self.stream.write_message(_pack(("push", tuple(updates))))

    async def refusal(self) -> str | None:
        """Wait for the member to end the feed: its refusal's reason, or None (FIN)."""
        try:
            msg = await _read(self.stream, None)
        except MalformedMessage:
            return "malformed_message"
        if msg is None:
            return None
        return msg[1][:64] if msg[0] == "error" and len(msg) > 1 and type(msg[1]) is str \
            else "malformed_message"

    def close(self) -> None:
        self.stream.reset()


async def open_feed(conn: Connection, room_id: bytes, timeout: float) -> Feed:
    """Open a feed of our changes to the member on ``conn`` (``RoomSyncRefused`` if it
    does not take them from us)."""
    stream = await open_protocol(conn, PROTO_ROOM_SYNC)
    try:
        await stream.write_message(_pack(("feed", room_id, b"")))
        await _answer(stream, timeout)
    except BaseException:
        stream.reset()
        raise
    return Feed(conn, stream)
