"""A room's DHT record: how a room is found without a rendezvous (issue 13 section 1).

Members put a record they sign themselves (``rooms.signed``, type
``/p2pstack/room-record/1``) under the room's DHT key, which is the room id
(``rooms.names.room_id``: SHA-256 of the name, in the DHT's key space). Payload, a msgpack
array:

    [room_id(32), members[peer_id(38), <= MAX_RECORD_MEMBERS], addrs[str, <= 4],
     issued_ms, expires_ms]

``members`` starts with the signer, then the other members it verified (as many as fit
in the DHT's 1000 bytes); ``addrs`` are the signer's own addresses, so a reader can dial
it without a second lookup (the others' come from their own signed DHT announcements).
That is what the rendezvous holds too (peer ids and addresses): nothing sensitive. There
is one record per key in the DHT: each member re-puts its own, and replicas keep the one
with the highest ``seq = issued_ms`` (strictly increasing, so an older record, replayed,
is refused as ``stale_seq``, and expired ones are refused outright).

Rules (``verify_room_record``, in this order; each refusal a named error):

1. framing, types, sizes, the signature over the payload: ``ForgedRoomRecord``; also a
   record of another room than the key it was found under (a valid record moved to
   another key), and a member list that does not start with the signer;
2. ``issued_ms`` more than ``DRIFT`` in the future, or ``expires_ms - issued_ms`` above
   ``MAX_RECORD_TTL``: ``RoomRecordExpired`` (a record that would stay fresh too long, or
   win every seq comparison, is refused like a stale one);
3. ``now`` at or past ``expires_ms``: ``RoomRecordExpired``.

What a valid record proves: the holder of the signer's key claims to be in the room, with
those members, at those addresses. Not that it is a member: anyone can sign a record for
any room id (the DHT cannot know who was admitted), so a reader treats the list as
*where to look*, never as trust. A member that restarts reaches only peers of its own
roster, dialled by peer id (the QUIC handshake proves them); a newcomer still needs the
code and the PAKE (``rooms.admission``). An outsider who puts a fresher record under the
key can deny service (point readers at nobody), which a compromised rendezvous can too.

Sans-I/O: ``now`` is Unix seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stack.base.identity import PEER_ID_LENGTH, Identity, PeerId
from rooms.errors import (BadSignature, ForgedRoomRecord, MalformedMessage,
                          RoomRecordExpired)
from rooms.names import ROOM_ID_LENGTH
from rooms.signed import ROOM_RECORD_TYPE, open_signed, pack, seal, unpack

__all__ = ["RoomRecord", "sign_room_record", "verify_room_record", "MAX_ROOM_RECORD",
           "MAX_RECORD_MEMBERS", "MAX_RECORD_ADDRS", "MAX_RECORD_TTL", "DEFAULT_RECORD_TTL",
           "DRIFT"]

MAX_ROOM_RECORD = 1000       # bytes: the DHT's record bound
MAX_RECORD_MEMBERS = 16
MAX_RECORD_ADDRS = 4
MAX_RECORD_TTL = 3600.0      # seconds
DEFAULT_RECORD_TTL = 1800.0  # members re-put theirs well before (stack.node.roomdht)
DRIFT = 60.0                 # seconds of clock skew tolerated on issued_ms


@dataclass(frozen=True, slots=True)
class RoomRecord:
    room_id: bytes
    signer: PeerId
    members: tuple[PeerId, ...]  # the signer first; claimed, not verified
    addrs: tuple[str, ...]       # the signer's
    issued_ms: int
    expires_ms: int
    raw: bytes = field(repr=False, compare=False)


def sign_room_record(identity: Identity, room_id: bytes, members: list[PeerId] | tuple[PeerId, ...],
                     addrs: list[str] | tuple[str, ...], now: float,
                     ttl: float = DEFAULT_RECORD_TTL) -> bytes:
    """Our record for ``room_id``: us, then as many of ``members`` as fit in 1000 bytes."""
    if len(room_id) != ROOM_ID_LENGTH:
        raise ValueError("a room id is 32 bytes")
    me = identity.peer_id
    listed = [me, *[m for m in members if m != me]][:MAX_RECORD_MEMBERS]
    issued = int(now * 1000)
    while True:
        payload = pack((room_id, tuple(m.multihash for m in listed),
                        tuple(addrs[:MAX_RECORD_ADDRS]), issued, issued + int(ttl * 1000)))
        data = seal(identity, ROOM_RECORD_TYPE, payload)
        if len(data) <= MAX_ROOM_RECORD:
            return data
        if len(listed) == 1:
            raise ValueError(f"a room record of {len(data)} bytes: the addresses are too long")
        listed.pop()  # the last member listed makes room (the signer stays)


def verify_room_record(data: bytes, now: float, room_id: bytes | None = None) -> RoomRecord:
    """The record in ``data`` if it follows the rules above (and is of ``room_id``)."""
    try:
        signer, payload = open_signed(data, ROOM_RECORD_TYPE, MAX_ROOM_RECORD)
        obj = unpack(payload, "room record", MAX_ROOM_RECORD)
    except (MalformedMessage, BadSignature) as exc:
        raise ForgedRoomRecord(f"room record: {exc}") from None
    if len(obj) != 5:
        raise ForgedRoomRecord("room record: not 5 fields")
    rid, members, addrs, issued, expires = obj
    if type(rid) is not bytes or len(rid) != ROOM_ID_LENGTH:
        raise ForgedRoomRecord("room record: room id")
    if room_id is not None and rid != room_id:
        raise ForgedRoomRecord("room record: of another room than its key")
    if (type(members) is not tuple or not 1 <= len(members) <= MAX_RECORD_MEMBERS
            or any(type(m) is not bytes or len(m) != PEER_ID_LENGTH for m in members)
            or members[0] != signer.multihash):
        raise ForgedRoomRecord("room record: members (the signer first)")
    try:
        peers = tuple(PeerId.from_bytes(m) for m in members)
    except ValueError:
        raise ForgedRoomRecord("room record: a member is not a peer id") from None
    if (type(addrs) is not tuple or len(addrs) > MAX_RECORD_ADDRS
            or any(type(a) is not str or not 0 < len(a) <= 255 for a in addrs)):
        raise ForgedRoomRecord("room record: addresses")
    if type(issued) is not int or type(expires) is not int or not 0 <= issued <= expires:
        raise ForgedRoomRecord("room record: times")
    now_ms = int(now * 1000)
    if issued > now_ms + DRIFT * 1000 or expires - issued > MAX_RECORD_TTL * 1000:
        raise RoomRecordExpired(f"room record: issued in the future or valid for more than "
                                f"{MAX_RECORD_TTL:.0f} s")
    if now_ms >= expires:
        raise RoomRecordExpired("room record: expired")
    return RoomRecord(rid, signer, peers, addrs, issued, expires, data)
