"""The rooms package's signed records: an RFC 0003-shaped envelope with its own domains.

Wire: msgpack ``[public_key(32), payload_type, payload, signature(64)]``, all ``bin``; the
signature covers ``signed_bytes(domain, payload_type, payload)`` (``stack.base.records``),
with the domain taken from the payload type below, so a room signature never verifies as
an announcement or an identity exchange, nor one kind of room record as another.

==========================  ==============================  ==============================
record                      payload_type                    domain
==========================  ==============================  ==============================
membership announcement     ``/p2pstack/room-member/1``     ``p2pstack-room-member``
admission                   ``/p2pstack/room-admission/1``  ``p2pstack-room-admission``
PAKE proof of peer id       ``/p2pstack/room-pake-id/1``    ``p2pstack-room-pake-id``
room's DHT record           ``/p2pstack/room-record/1``     ``p2pstack-room-record``
==========================  ==============================  ==============================

Strict decoding as in ``stack.base.records``: exact types, no trailing bytes, canonical
encoding (a re-encoding by a forwarder is refused), size checked before parsing.
"""

from __future__ import annotations

from typing import Any

import msgpack

from stack.base.identity import Identity, PeerId, verify_signature
from stack.base.records import signed_bytes
from rooms.errors import BadSignature, MalformedMessage

__all__ = ["MEMBER_TYPE", "ADMISSION_TYPE", "PAKE_ID_TYPE", "ROOM_RECORD_TYPE", "seal",
           "open_signed", "unpack", "pack", "unpack_verb"]

MEMBER_TYPE = b"/p2pstack/room-member/1"
ADMISSION_TYPE = b"/p2pstack/room-admission/1"
PAKE_ID_TYPE = b"/p2pstack/room-pake-id/1"
ROOM_RECORD_TYPE = b"/p2pstack/room-record/1"
_DOMAINS = {
    MEMBER_TYPE: b"p2pstack-room-member",
    ADMISSION_TYPE: b"p2pstack-room-admission",
    PAKE_ID_TYPE: b"p2pstack-room-pake-id",
    ROOM_RECORD_TYPE: b"p2pstack-room-record",
}
_UNPACK_ERRORS = (ValueError, TypeError, msgpack.UnpackException)


def pack(obj: object) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def unpack(data: bytes, what: str, max_size: int) -> tuple[Any, ...]:
    """Exactly one msgpack array of at most ``max_size`` bytes, in canonical form."""
    if type(data) is not bytes:
        raise MalformedMessage(f"{what}: not bytes")
    if len(data) > max_size:
        raise MalformedMessage(f"{what}: {len(data)} bytes, more than {max_size}")
    try:
        obj = msgpack.unpackb(data, use_list=False)
    except _UNPACK_ERRORS as exc:
        raise MalformedMessage(f"{what}: not msgpack ({type(exc).__name__})") from None
    if type(obj) is not tuple:
        raise MalformedMessage(f"{what}: not an array")
    try:
        canonical = pack(obj) == data
    except (ValueError, TypeError):
        canonical = False
    if not canonical:
        raise MalformedMessage(f"{what}: not in canonical form")
    return obj


def unpack_verb(data: bytes, what: str) -> tuple[Any, ...]:
    """A protocol message: a msgpack array whose first field is its verb (a string).

    Used by the room protocols (rendezvous, room link) on stream messages whose size the
    stream already bounded; ``what`` names the protocol in the ``MalformedMessage``."""
    try:
        obj = msgpack.unpackb(data, use_list=False)
    except _UNPACK_ERRORS:
        raise MalformedMessage(f"{what}: not msgpack") from None
    if type(obj) is not tuple or not obj or type(obj[0]) is not str:
        raise MalformedMessage(f"{what}: not a message")
    return obj


def seal(identity: Identity, payload_type: bytes, payload: bytes) -> bytes:
    sig = identity.sign(signed_bytes(_DOMAINS[payload_type], payload_type, payload))
    return pack((identity.public_key, payload_type, payload, sig))


def open_signed(data: bytes, payload_type: bytes, max_size: int) -> tuple[PeerId, bytes]:
    """Verify an envelope of ``payload_type``: (signer, payload). ``MalformedMessage`` for
    bad framing or another type, ``BadSignature`` for a signature that fails."""
    obj = unpack(data, "signed record", max_size)
    if len(obj) != 4:
        raise MalformedMessage("signed record: not 4 fields")
    pk, ptype, payload, sig = obj
    if (type(pk) is not bytes or len(pk) != 32 or type(sig) is not bytes or len(sig) != 64
            or type(payload) is not bytes or type(ptype) is not bytes):
        raise MalformedMessage("signed record: field types")
    if ptype != payload_type:
        raise MalformedMessage(f"signed record: a {ptype!r}, not a {payload_type!r}")
    if not verify_signature(pk, signed_bytes(_DOMAINS[payload_type], ptype, payload), sig):
        raise BadSignature("signed record: the signature does not verify")
    return PeerId.from_public_key(pk), payload
