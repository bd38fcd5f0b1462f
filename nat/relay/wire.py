"""Relay messages (circuit relay v2 semantics, our own compact encoding).

Each message is one length-prefixed message on the stream (the ``Stream`` framing:
``u32 length || body``) whose body is one msgpack array, fields in the order of the
libp2p protobuf (``relay/circuit-v2.md``), so that the mapping is one to one:

    hop  = [type, peer, reservation, limit, status]     type: RESERVE=0 CONNECT=1 STATUS=2
    stop = [type, peer, limit, status]                  type: CONNECT=0 STATUS=1

    field        type                       meaning
    -----------  -------------------------  ------------------------------------------
    peer         bin 38 | nil               a peer-id multihash: CONNECT's target (hop)
                                            or initiator (stop); claimed, the end-to-end
                                            QUIC handshake is what proves it
    reservation  [expire, [addr, ...]] | nil  STATUS OK of a RESERVE: expiry (Unix
                                            seconds, UTC, uint) and the relay's public
                                            multiaddrs with /p2p/<relay> (no p2p-circuit)
    limit        [duration, data] | nil     per-circuit limits: seconds (uint32) and
                                            bytes in each direction (uint64); 0 or nil:
                                            no limit
    status       int | nil                  STATUS only: a ``Status`` code

Status codes are libp2p's numbers (OK=100, RESERVATION_REFUSED=200, ...), so the names a
client reports are the spec's. Why not the protobuf itself: the streams under it are not
libp2p's (no multistream-select, u32 frames, our protocol ids) and the circuit carries
QUIC datagrams rather than a libp2p connection, so byte compatibility would buy no
interop; msgpack arrays are the repository's codec style (``stack.base.records``,
``discovery.wire``). A protobuf codec would be a drop-in: same fields, same numbers.

Strict decoding: exactly one msgpack array of this shape with exact types, at most
``MAX_MESSAGE`` bytes; anything else raises ``MalformedMessage`` (the handler answers
MALFORMED_MESSAGE). A well-formed message of the wrong type for the moment (a STATUS sent
to the relay) is the handler's UNEXPECTED_MESSAGE.

Circuit framing (after STATUS OK both ends of the circuit speak this, and the relay
parses it to count and limit): ``u16 length || datagram`` for each QUIC datagram
(length >= 1); ``0x0000 || u16 status`` is the relay's last word: it ended the circuit
with that status (RESOURCE_LIMIT_EXCEEDED for a data or duration limit), then FIN.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack

from stack.base.identity import PEER_ID_LENGTH

__all__ = [
    "PROTO_HOP", "PROTO_STOP", "Status", "HopType", "StopType", "Limit", "Reservation",
    "HopMessage", "StopMessage",
    "MalformedMessage", "encode_hop", "decode_hop", "encode_stop", "decode_stop",
    "MAX_MESSAGE", "MAX_ADDRS", "MAX_FRAME", "FRAME_HEADER", "encode_frame", "end_frame",
]

PROTO_HOP = b"/p2pstack/relay/hop/1"    # client <-> relay: RESERVE, CONNECT
PROTO_STOP = b"/p2pstack/relay/stop/1"  # relay -> target: CONNECT (a circuit arrives)
MAX_MESSAGE = 4096   # bytes of one hop/stop message
MAX_ADDRS = 8        # relay addresses in a reservation
MAX_FRAME = 0xFFFF   # largest datagram on a circuit
FRAME_HEADER = struct.Struct(">H")


class Status(IntEnum):
    """libp2p circuit v2 status codes (``relay/circuit-v2.md``, "Protobuf")."""
    OK = 100
    RESERVATION_REFUSED = 200
    RESOURCE_LIMIT_EXCEEDED = 201
    PERMISSION_DENIED = 202
    CONNECTION_FAILED = 203
    NO_RESERVATION = 204
    MALFORMED_MESSAGE = 400
    UNEXPECTED_MESSAGE = 401


class HopType(IntEnum):
    RESERVE = 0
    CONNECT = 1
    STATUS = 2


class StopType(IntEnum):
    CONNECT = 0
    STATUS = 1


class MalformedMessage(ValueError):
    """Bytes that are not a well-formed relay message (answered MALFORMED_MESSAGE)."""


@dataclass(frozen=True, slots=True)
class Limit:
    duration: int = 0   # seconds a circuit may last; 0: unlimited
    data: int = 0       # bytes per direction; 0: unlimited


@dataclass(frozen=True, slots=True)
class Reservation:
    expire: int                 # Unix seconds (UTC)
    addrs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HopMessage:
    type: HopType
    peer: bytes | None = None
    reservation: Reservation | None = None
    limit: Limit | None = None
    status: Status | None = None


@dataclass(frozen=True, slots=True)
class StopMessage:
    type: StopType
    peer: bytes | None = None
    limit: Limit | None = None
    status: Status | None = None


def _packb(obj: object) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def _limit(limit: Limit | None) -> list[int] | None:
    return None if limit is None else [limit.duration, limit.data]


def encode_hop(msg: HopMessage) -> bytes:
    res = msg.reservation
    return _packb([int(msg.type), msg.peer,
                   None if res is None else [res.expire, list(res.addrs)],
                   _limit(msg.limit), None if msg.status is None else int(msg.status)])


def encode_stop(msg: StopMessage) -> bytes:
    return _packb([int(msg.type), msg.peer, _limit(msg.limit),
                   None if msg.status is None else int(msg.status)])


def _uint(value: Any, bits: int) -> int:
    if type(value) is not int or not 0 <= value < 1 << bits:
        raise MalformedMessage(f"not a uint{bits}: {value!r}")
    return value


def _array(data: bytes, length: int) -> list[Any]:
    if len(data) > MAX_MESSAGE:
        raise MalformedMessage(f"message of {len(data)} bytes (at most {MAX_MESSAGE})")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise MalformedMessage(f"not one msgpack object: {exc}") from None
    if type(obj) is not list or len(obj) != length:
        raise MalformedMessage(f"not an array of {length}")
    return obj


def _peer(value: Any) -> bytes | None:
    if value is None:
        return None
    if type(value) is not bytes or len(value) != PEER_ID_LENGTH:
        raise MalformedMessage("peer: not a peer-id multihash")
    return value


def _limit_of(value: Any) -> Limit | None:
    if value is None:
        return None
    if type(value) is not list or len(value) != 2:
        raise MalformedMessage("limit: not [duration, data]")
    return Limit(_uint(value[0], 32), _uint(value[1], 64))


def _status(value: Any) -> Status | None:
    if value is None:
        return None
    try:
        return Status(_uint(value, 32))
    except ValueError:
        raise MalformedMessage(f"unknown status {value!r}") from None


def _kind(value: Any, kinds: type[IntEnum]) -> Any:
    try:
        return kinds(_uint(value, 8))
    except ValueError:
        raise MalformedMessage(f"unknown message type {value!r}") from None


def decode_hop(data: bytes) -> HopMessage:
    kind, peer, res, limit, status = _array(data, 5)
    reservation = None
    if res is not None:
        if type(res) is not list or len(res) != 2 or type(res[1]) is not list:
            raise MalformedMessage("reservation: not [expire, [addr, ...]]")
        addrs = res[1]
        if len(addrs) > MAX_ADDRS or not all(type(a) is str for a in addrs):
            raise MalformedMessage("reservation: addrs must be at most 8 strings")
        reservation = Reservation(_uint(res[0], 64), tuple(addrs))
    return HopMessage(_kind(kind, HopType), _peer(peer), reservation, _limit_of(limit),
                      _status(status))


def decode_stop(data: bytes) -> StopMessage:
    kind, peer, limit, status = _array(data, 4)
    return StopMessage(_kind(kind, StopType), _peer(peer), _limit_of(limit), _status(status))


def encode_frame(datagram: bytes) -> bytes:
    """One datagram on a circuit: ``u16 length || datagram`` (1..65535 bytes)."""
    if not 0 < len(datagram) <= MAX_FRAME:
        raise ValueError(f"a circuit datagram is 1..{MAX_FRAME} bytes")
    return FRAME_HEADER.pack(len(datagram)) + datagram


def end_frame(status: Status) -> bytes:
    """The relay's last frame on a circuit: it ended it with ``status``."""
    return FRAME_HEADER.pack(0) + FRAME_HEADER.pack(int(status))
