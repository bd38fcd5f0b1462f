"""``/p2pstack/room-link/1``: what room members tell each other on their direct connections.

Never through a rendezvous: these streams run on a connection the two members hold with
each other, authenticated by peer id (the QUIC/TLS handshake), so a rendezvous cannot
insert, alter or drop one without the members seeing a failed stream.

One request per stream, a msgpack array ``[verb, room_id(32), record]``; the answer
``["ok", data]`` or ``["error", reason]``, then FIN. The records are ``rooms.intro``'s and
``rooms.roster``'s signed ones, checked by the receiving member (``stack.node.roomtrust``):

============  ==========================  ==================================================
verb          from -> to                  record / answer data
============  ==========================  ==================================================
``joined``    newcomer -> its inviter     the newcomer's signed membership announcement
                                          (its addresses); data: the signed welcome
``intro``     inviter -> other members    the signed introduction of the newcomer
``greet``     member -> newcomer          empty: "I verified you and connected"
``vouch``     member -> members           its signed statement of whom it verified
                                          (``rooms.graph``), pushed when it changes
``remove``    any member -> members       the admin's signed removal (``rooms.kick``),
                                          passed on by whoever took it first
============  ==========================  ==================================================

A refusal's reason is the ``rooms.intro`` / ``rooms.kick`` error's name
(``forged_introduction``, ``not_member``, ``removed``, ``forged_removal``, ``not_admin``)
or ``malformed_message``, ``unknown_room``; the receiver counts each in ``stats``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


from stack.base.interfaces import Connection, Stream
from rooms.errors import MalformedMessage, RoomError
from rooms.names import ROOM_ID_LENGTH
from rooms.signed import pack, unpack_verb
from stack.node.router import open_protocol

__all__ = ["PROTO_ROOM_LINK", "RoomLinkRefused", "RoomLinkProtocol", "request",
           "MAX_LINK_MESSAGE", "VERBS"]

PROTO_ROOM_LINK = b"/p2pstack/room-link/1"
MAX_LINK_MESSAGE = 64 * 1024  # bytes: a welcome of a full room fits
VERBS = frozenset({"joined", "intro", "greet", "vouch", "remove"})

#: the receiver's side: (connection, verb, room id, record) -> answer data; raising a
#: ``RoomError`` with a ``reason`` refuses with that reason
Handler = Callable[[Connection, str, bytes, bytes], Awaitable[bytes]]


class RoomLinkRefused(RoomError):
    """The other member refused our request; ``reason`` is its word for why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the member refused: {reason}")



class RoomLinkProtocol:
    """The router handler: decodes a request, hands it to ``handler``, answers."""

    protocol_id = PROTO_ROOM_LINK

    def __init__(self, handler: Handler, timeout: float) -> None:
        self._handler = handler
        self._timeout = timeout

    async def handle(self, conn: Connection, stream: Stream) -> None:
        async with asyncio.timeout(self._timeout):
            raw = await stream.read_message(MAX_LINK_MESSAGE)
        try:
            req = unpack_verb(raw, "room link")
            if (len(req) != 3 or req[0] not in VERBS or type(req[1]) is not bytes
                    or len(req[1]) != ROOM_ID_LENGTH or type(req[2]) is not bytes):
                raise MalformedMessage("room link: not a request")
            data = await self._handler(conn, req[0], req[1], req[2])
        except RoomError as exc:
            reason = getattr(exc, "reason", "refused")
            await stream.write_message(pack(("error", str(reason)[:64])))
        else:
            await stream.write_message(pack(("ok", data)))
        await stream.close()


async def request(conn: Connection, verb: str, room_id: bytes, record: bytes,
                  timeout: float) -> bytes:
    """Send one request on ``conn``; its answer data, or ``RoomLinkRefused``."""
    stream = await open_protocol(conn, PROTO_ROOM_LINK)
    try:
        await stream.write_message(pack((verb, room_id, record)))
        async with asyncio.timeout(timeout):
            answer = unpack_verb(await stream.read_message(MAX_LINK_MESSAGE), "room link")
    except BaseException:
        stream.reset()
        raise
    await stream.close()
    if answer[0] == "error":
        reason = answer[1] if len(answer) > 1 and type(answer[1]) is str else "?"
        raise RoomLinkRefused(reason[:64])
    if answer[0] != "ok" or len(answer) != 2 or type(answer[1]) is not bytes:
        raise MalformedMessage("room link: not an answer")
    data: bytes = answer[1]
    return data
