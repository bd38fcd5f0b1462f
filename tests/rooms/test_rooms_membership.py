"""Signed, expiring membership announcements and the rendezvous's bounded directory."""

from __future__ import annotations

import msgpack
import pytest

from stack.base.identity import Identity
from rooms.errors import (AnnouncementExpired, AnnouncementTooLong, BadSignature,
                          MalformedMessage, RoomFull)
from rooms.membership import MemberDirectory, sign_member, verify_member
from rooms.names import room_id
from rooms.signed import MEMBER_TYPE, pack, seal

RID = room_id("book-club")
ALICE = Identity.from_seed(bytes([1]) * 32)
BOB = Identity.from_seed(bytes([2]) * 32)
ADDR = "/ip4/127.0.0.1/udp/39001/quic-v1"


def test_round_trip() -> None:
    data = sign_member(ALICE, RID, [ADDR], 1000.0, ttl=60.0)
    ann = verify_member(data, 1030.0)
    assert ann.peer_id == ALICE.peer_id and ann.room_id == RID and ann.addrs == (ADDR,)
    assert ann.expires_ms - ann.issued_ms == 60_000 and ann.raw == data


def test_a_flipped_signature_is_bad_signature() -> None:
    data = bytearray(sign_member(ALICE, RID, [ADDR], 1000.0))
    data[-1] ^= 1
    with pytest.raises(BadSignature):
        verify_member(bytes(data), 1000.0)


def test_the_signer_must_be_the_member() -> None:
    payload = pack((RID, BOB.peer_id.multihash, (ADDR,), 1_000_000, 1_060_000))
    with pytest.raises(MalformedMessage, match="signer"):
        verify_member(seal(ALICE, MEMBER_TYPE, payload), 1000.0)


def test_expiry_and_bounds() -> None:
    data = sign_member(ALICE, RID, [ADDR], 1000.0, ttl=60.0)
    with pytest.raises(AnnouncementExpired):
        verify_member(data, 1060.0)
    with pytest.raises(AnnouncementTooLong):
        verify_member(sign_member(ALICE, RID, [ADDR], 1000.0, ttl=3601.0), 1000.0)
    with pytest.raises(AnnouncementTooLong):  # issued more than the drift ahead of us
        verify_member(sign_member(ALICE, RID, [ADDR], 1100.0), 1000.0)


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x94" + b"\xc0" * 4, b"x" * 2000])
def test_garbage_is_malformed(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        verify_member(data, 0.0)


def test_a_re_encoded_record_is_refused() -> None:
    """A forwarder must pass the bytes as signed: a longer (non-canonical) msgpack form of
    the same array is malformed, though its signature would still verify."""
    data = sign_member(ALICE, RID, [ADDR], 1000.0)
    obj = msgpack.unpackb(data)
    padded = b"\xdc\x00\x04" + b"".join(msgpack.packb(x, use_bin_type=True) for x in obj)
    with pytest.raises(MalformedMessage, match="canonical"):
        verify_member(padded, 1000.0)


def test_directory_keeps_the_newest_and_forgets_the_expired() -> None:
    d = MemberDirectory()
    d.put(sign_member(ALICE, RID, ["/ip4/1.1.1.1/udp/1/quic-v1"], 1000.0, ttl=60.0), 1000.0)
    d.put(sign_member(ALICE, RID, [ADDR], 1010.0, ttl=60.0), 1010.0)
    d.put(sign_member(ALICE, RID, ["/ip4/9.9.9.9/udp/1/quic-v1"], 1005.0), 1011.0)  # older
    d.put(sign_member(BOB, RID, [ADDR], 1010.0, ttl=10.0), 1010.0)
    assert {(a.peer_id, a.addrs) for a in d.members(RID, 1011.0)} == {
        (ALICE.peer_id, (ADDR,)), (BOB.peer_id, (ADDR,))}
    assert [a.peer_id for a in d.members(RID, 1020.0)] == [ALICE.peer_id]
    d.expire(1070.0)
    assert d.members(RID, 1070.0) == [] and d.room_count == 0


def test_directory_bounds_are_room_full() -> None:
    d = MemberDirectory(max_rooms=1, max_members=1)
    d.put(sign_member(ALICE, RID, [ADDR], 0.0), 0.0)
    d.put(sign_member(ALICE, RID, [ADDR], 1.0), 1.0)  # a refresh is not a new member
    with pytest.raises(RoomFull):
        d.put(sign_member(BOB, RID, [ADDR], 1.0), 1.0)
    with pytest.raises(RoomFull):
        d.put(sign_member(BOB, room_id("other"), [ADDR], 1.0), 1.0)
    d.remove(RID, ALICE.peer_id)
    d.put(sign_member(BOB, room_id("other"), [ADDR], 1.0), 1.0)
    assert d.room_count == 1
