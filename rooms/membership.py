"""Membership announcements and the rendezvous's bounded directory of them.

A member tells a rendezvous "I am in room R, reach me at these addresses" with a record it
signs itself (``rooms.signed``, type ``/p2pstack/room-member/1``); payload, a msgpack array:

    [room_id(32), peer_id(38), addrs[str, <= 8], issued_ms, expires_ms]

Rules (``verify_member``, in this order; each refusal a named error):

1. framing, types, sizes (``MAX_MEMBER_SIZE``), the signer's key is the peer id's:
   ``MalformedMessage``; a signature that fails: ``BadSignature``;
2. ``issued_ms`` more than ``DRIFT`` in the future, or ``expires_ms - issued_ms`` above
   ``MAX_MEMBER_TTL``: ``AnnouncementTooLong``;
3. ``now`` at or past ``expires_ms``: ``AnnouncementExpired``.

What a valid announcement proves: the holder of that peer id's key claims membership and
those addresses. Not that the room admitted it: the rendezvous cannot know (it never sees
admissions), so members check each other themselves (their admissions, over their direct
connections). A rendezvous that forges or drops announcements can only deny service.

``MemberDirectory`` is the rendezvous's store: per room, the newest announcement of each
peer (by ``issued_ms``; an older one is ignored, not an error), at most ``max_rooms``
rooms and ``max_members`` per room (``RoomFull`` beyond), expired ones dropped by
``expire(now)`` and never returned. Sans-I/O: ``now`` is Unix seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stack.base.identity import PEER_ID_LENGTH, Identity, PeerId
from rooms.errors import (AnnouncementExpired, AnnouncementTooLong, MalformedMessage,
                          RoomFull)
from rooms.names import ROOM_ID_LENGTH
from rooms.signed import MEMBER_TYPE, open_signed, pack, seal, unpack

__all__ = ["MemberAnnouncement", "MemberDirectory", "sign_member", "verify_member",
           "MAX_MEMBER_SIZE", "MAX_MEMBER_TTL", "DEFAULT_MEMBER_TTL", "MAX_MEMBER_ADDRS",
           "DRIFT"]

MAX_MEMBER_SIZE = 1000         # bytes, the DHT's record bound, so the same record fits there
MAX_MEMBER_TTL = 3600.0        # seconds
DEFAULT_MEMBER_TTL = 600.0
MAX_MEMBER_ADDRS = 8
DRIFT = 60.0                   # seconds of clock skew tolerated on issued_ms


@dataclass(frozen=True, slots=True)
class MemberAnnouncement:
    room_id: bytes
    peer_id: PeerId
    addrs: tuple[str, ...]
    issued_ms: int
    expires_ms: int
    raw: bytes = field(repr=False, compare=False)  # the signed bytes, forwarded as they are


def sign_member(identity: Identity, room_id: bytes, addrs: list[str] | tuple[str, ...],
                now: float, ttl: float = DEFAULT_MEMBER_TTL) -> bytes:
    if len(room_id) != ROOM_ID_LENGTH or len(addrs) > MAX_MEMBER_ADDRS:
        raise ValueError("a room id is 32 bytes; at most 8 addresses")
    issued = int(now * 1000)
    payload = pack((room_id, identity.peer_id.multihash, tuple(addrs), issued,
                    issued + int(ttl * 1000)))
    data = seal(identity, MEMBER_TYPE, payload)
    if len(data) > MAX_MEMBER_SIZE:
        raise ValueError(f"membership announcement of {len(data)} bytes: too many addresses")
    return data


def verify_member(data: bytes, now: float) -> MemberAnnouncement:
    signer, payload = open_signed(data, MEMBER_TYPE, MAX_MEMBER_SIZE)
    obj = unpack(payload, "membership", MAX_MEMBER_SIZE)
    if len(obj) != 5:
        raise MalformedMessage("membership: not 5 fields")
    rid, pid, addrs, issued, expires = obj
    if type(rid) is not bytes or len(rid) != ROOM_ID_LENGTH:
        raise MalformedMessage("membership: room id")
    if type(pid) is not bytes or len(pid) != PEER_ID_LENGTH or pid != signer.multihash:
        raise MalformedMessage("membership: the peer id is not the signer's")
    if (type(addrs) is not tuple or len(addrs) > MAX_MEMBER_ADDRS
            or any(type(a) is not str or not 0 < len(a) <= 255 for a in addrs)):
        raise MalformedMessage("membership: addresses")
    if type(issued) is not int or type(expires) is not int or not 0 <= issued <= expires:
        raise MalformedMessage("membership: times")
    now_ms = int(now * 1000)
    if issued > now_ms + DRIFT * 1000 or expires - issued > MAX_MEMBER_TTL * 1000:
        raise AnnouncementTooLong(f"membership: issued in the future or valid for more than "
                                  f"{MAX_MEMBER_TTL:.0f} s")
    if now_ms >= expires:
        raise AnnouncementExpired("membership: expired")
    return MemberAnnouncement(rid, signer, addrs, issued, expires, data)


@dataclass
class MemberDirectory:
    """A rendezvous's announcements, bounded (see the module docstring)."""

    max_rooms: int = 1024
    max_members: int = 64
    _rooms: dict[bytes, dict[PeerId, MemberAnnouncement]] = field(default_factory=dict)

    def put(self, data: bytes, now: float) -> MemberAnnouncement:
        """Verify and keep ``data``; raises the named refusal (the driver counts it)."""
        ann = verify_member(data, now)
        self.expire(now)
        room = self._rooms.get(ann.room_id)
        if room is None:
            if len(self._rooms) >= self.max_rooms:
                raise RoomFull(f"this rendezvous keeps at most {self.max_rooms} rooms")
            room = self._rooms[ann.room_id] = {}
        old = room.get(ann.peer_id)
        if old is None and len(room) >= self.max_members:
            raise RoomFull(f"this rendezvous keeps at most {self.max_members} members a room")
        if old is None or ann.issued_ms > old.issued_ms:
            room[ann.peer_id] = ann
        return ann

    def members(self, room_id: bytes, now: float) -> list[MemberAnnouncement]:
        now_ms = int(now * 1000)
        room = self._rooms.get(room_id, {})
        return [a for a in room.values() if a.expires_ms > now_ms]

    def remove(self, room_id: bytes, peer_id: PeerId) -> None:
        room = self._rooms.get(room_id)
        if room is not None:
            room.pop(peer_id, None)
            if not room:
                del self._rooms[room_id]

    def expire(self, now: float) -> None:
        now_ms = int(now * 1000)
        for rid, room in list(self._rooms.items()):
            for pid, ann in list(room.items()):
                if ann.expires_ms <= now_ms:
                    del room[pid]
            if not room:
                del self._rooms[rid]

    @property
    def room_count(self) -> int:
        return len(self._rooms)
