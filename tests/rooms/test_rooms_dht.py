"""Rooms found through the DHT (``rooms.record``, ``stack.node.roomdht``; issue 13 section
1): the signed room record and its refusals, driven directly; replicas refuse forged,
expired, replayed and misplaced records by name; on real nodes on 127.0.0.1 a lookup names
a missing, forged or expired record, a member that restarts with the rendezvous down
finds the room's record and reaches the other member directly, and newcomers join with
no rendezvous at all (the PAKE, and the PIN, on a direct connection to a listed member)."""

from __future__ import annotations

import time

import pytest

from stack.base.identity import Identity
from stack.node import RoomAdmissionFailed
from stack.node.events import RoomMemberVerified, RoomPinIssued, RoomReached
from stack.node.rooms import NoRendezvous
from discovery.records import OK, RecordInfo, RecordStore
from rooms.errors import (ForgedRoomRecord, InviteUnknown, RoomNotFound, RoomRecordExpired,
                          WrongCode)
from rooms.names import room_id
from rooms.record import MAX_ROOM_RECORD, sign_room_record, verify_room_record
from rooms.invites import parse_code
from rooms.words import WORDS
from stack.node.protocols.roomadmit import admit_direct
from stack.node.roomdht import NodeRecordValidator
from tests.rooms.roomnodes import admit
from tests.rooms.roomnodes import addr

T = 10.0
RID = room_id("club")
A = Identity.from_seed(bytes([1]) * 32)
B = Identity.from_seed(bytes([2]) * 32)
T0 = 1_000_000.0


def flip(data: bytes, at: int) -> bytes:
    raw = bytearray(data)
    raw[at] ^= 0x01
    return bytes(raw)


def test_the_record_lists_the_signer_first_and_fits_the_dht() -> None:
    others = [Identity.from_seed(bytes([i]) * 32).peer_id for i in range(3, 40)]
    data = sign_room_record(A, RID, [B.peer_id, *others], ["/ip4/127.0.0.1/udp/1/quic-v1"], T0)
    rec = verify_room_record(data, T0 + 1, RID)
    assert rec.signer == A.peer_id and rec.members[:2] == (A.peer_id, B.peer_id)
    assert len(data) <= MAX_ROOM_RECORD and 2 < len(rec.members) <= 16
    assert rec.addrs == ("/ip4/127.0.0.1/udp/1/quic-v1",)


def test_forged_expired_and_misplaced_records_are_named() -> None:
    data = sign_room_record(A, RID, [B.peer_id], [], T0)
    with pytest.raises(ForgedRoomRecord):
        verify_room_record(flip(data, len(data) - 3), T0)      # the signature
    with pytest.raises(ForgedRoomRecord):
        verify_room_record(flip(data, 60), T0)                 # the payload
    with pytest.raises(ForgedRoomRecord):
        verify_room_record(data, T0, room_id("other"))         # found under another key
    with pytest.raises(ForgedRoomRecord):
        verify_room_record(b"\x94garbage", T0)
    with pytest.raises(RoomRecordExpired):
        verify_room_record(data, T0 + 1800)
    with pytest.raises(RoomRecordExpired):                     # would stay fresh too long
        verify_room_record(sign_room_record(A, RID, [], [], T0, ttl=7200), T0)
    with pytest.raises(RoomRecordExpired):                     # issued in the future
        verify_room_record(data, T0 - 120)


def test_replicas_refuse_forged_expired_replayed_and_misplaced_records() -> None:
    validator = NodeRecordValidator()
    store = RecordStore(validator, window=24 * 3600.0, max_records=16)
    old = sign_room_record(A, RID, [B.peer_id], [], T0)
    new = sign_room_record(B, RID, [A.peer_id], [], T0 + 5)
    assert validator.check(old, T0)[0] == OK
    assert validator.check(old, T0)[1].key == RID
    assert store.offer(RID, flip(old, len(old) - 3), T0) == "forged_room_record"
    assert store.offer(RID, old, T0 + 3600) == "room_record_expired"
    assert store.offer(room_id("other"), old, T0) == "wrong_key"
    assert store.offer(RID, new, T0 + 5) == "stored"
    assert store.offer(RID, old, T0 + 6) == "stale_seq"         # an older one, replayed
    assert store.get(RID, T0 + 6) == new
    # announcements still go through the announcement validator
    assert validator.check(b"\x94junk", T0)[1] is None


class Permissive:
    """A lying replica's validator: keeps anything, under the key it is given."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def check(self, data: bytes, now: float):
        return OK, RecordInfo(bytes(38), 1, now, key=self.key)


async def dht_nodes(nodes, *names: str):
    """Nodes on one DHT (servers: each enters the others' routing tables)."""
    first = await nodes(names[0], dht=True, dht_server=True)
    await first.join(timeout=T)
    out = [first]
    for name in names[1:]:
        node = await nodes(name, dht=True, dht_server=True,
                           bootstrap=(f"127.0.0.1:{first.udp_address[1]}",))
        await node.join(timeout=T)
        out.append(node)
    for node in out:  # each node's own announcement, where members find its addresses
        assert await node.announce(timeout=T) >= 1
    return out


async def test_a_lookup_names_a_missing_forged_or_expired_record(nodes) -> None:
    a, m, x = await dht_nodes(nodes, "a", "m", "x")
    with pytest.raises(RoomNotFound):
        await x.roomdht.find("club")
    # a lying replica serves a forged record, and an expired one under another room
    forged = flip(sign_room_record(A, RID, [B.peer_id], [], time.time()), -3)
    m.dht.core.store.validator = Permissive(RID)
    assert m.dht.core.store.offer(RID, forged, time.time()) == "stored"
    with pytest.raises(ForgedRoomRecord):
        await x.roomdht.find("club")
    late = room_id("late")
    m.dht.core.store.validator = Permissive(late)
    stale = sign_room_record(A, late, [], [], time.time() - 7200, ttl=600)
    assert m.dht.core.store.offer(late, stale, time.time()) == "stored"
    with pytest.raises(RoomRecordExpired):
        await x.roomdht.find("late")
    # honest replicas refuse both when they are put
    assert a.dht.core.store.offer(RID, forged, time.time()) == "forged_room_record"
    assert a.dht.core.store.offer(late, stale, time.time()) == "room_record_expired"


async def test_a_restarted_member_reaches_the_others_without_the_rendezvous(
        nodes) -> None:
    r = await nodes("r", rendezvous=True)
    a, b = await dht_nodes(nodes, "a", "b")
    await a.rooms.create("club", addr(r))
    await admit(a, b, "club", addr(r))
    # B's record is in the DHT (put once its welcome is in; here at once, to wait on it)
    assert await b.roomdht.publish("club") >= 1
    found = await a.roomdht.find("club")                      # (A's, or B's, the freshest)
    assert found.signer in found.members and set(found.members) <= {a.peer_id, b.peer_id}
    await r.stop(grace=0.1)                                   # the rendezvous is down
    await b.stop(grace=0.1)
    again = await nodes("b", dht=True, dht_server=True,
                        bootstrap=(f"127.0.0.1:{a.udp_address[1]}",))
    reached = again.next_event(RoomReached, room="club", peer_id=a.peer_id, timeout=T)
    await again.join(timeout=T)                               # wakes the room.dht service
    assert (await reached).via == "dht"
    assert a.peer_id in {c.peer_id for c in again.connections if not c.closed}


async def test_join_with_no_rendezvous_through_the_rooms_record(nodes) -> None:
    a, b, c = await dht_nodes(nodes, "a", "b", "c")
    await a.rooms.create("club")                              # no rendezvous at all
    assert await a.roomdht.publish("club") >= 1
    with pytest.raises(RoomNotFound):
        await b.rooms.join("nowhere", "1-acorn-acorn")
    code = (await a.rooms.invite("club"))["code"]
    welcomed = b.next_event(RoomMemberVerified, room="club", peer_id=a.peer_id,
                            via="inviter", timeout=T)
    out = await b.rooms.join("club", code)
    assert out["admitted_by"] == str(a.peer_id) and out["rendezvous"] is None
    await welcomed                                            # then on direct connections
    assert a.peer_id in b.roomtrust.roster("club").verified()
    # (B dialled A, by peer id, before the admission: its trust entry of A says tofu)
    # with a PIN, over the same direct stream (whichever member's record C finds, it
    # reaches A: B, if asked first, holds no such invite)
    assert await b.roomdht.publish("club") >= 1
    invite = await a.rooms.invite("club", pin=True)
    issued = a.next_event(RoomPinIssued, room="club", timeout=T)
    asked = await c.rooms.join("club", invite["code"])
    assert asked["pin_required"] is True
    out = await c.rooms.pin("club", (await issued).pin)
    assert out["admitted_by"] == str(a.peer_id) and b.roomadmit.stats["served"] == 0
    # a member that holds no such invite says so: nothing spent, nothing reported
    code = (await a.rooms.invite("club"))["code"]
    d = await nodes("d", dht=True, dht_server=True,
                    bootstrap=(f"127.0.0.1:{a.udp_address[1]}",))
    await d.join(timeout=T)
    unknown = b.roomadmit.stats["invite_unknown"]
    with pytest.raises(InviteUnknown):
        await admit_direct(await d.connect(addr(b)), identity=d.identity, room_id=RID,
                           code=parse_code(code), clock=d.clock)
    assert b.roomadmit.stats["invite_unknown"] == unknown + 1
    assert a.rooms.has_invite(RID, parse_code(code).number)
    # a wrong code: named on both sides, reported by the inviter, and the invite is spent
    failed = a.next_event(RoomAdmissionFailed, role="inviter", timeout=T)
    other = WORDS[(WORDS.index(code.split("-")[1]) + 1) % 256]
    with pytest.raises(WrongCode):
        await d.rooms.join("club", f"{code.split('-')[0]}-{other}-{code.split('-')[2]}")
    assert (await failed).reason == "wrong_code"
    with pytest.raises(InviteUnknown):                        # one guess
        await d.rooms.join("club", code)


async def test_no_dht_no_rendezvous_is_named(nodes) -> None:
    a = await nodes("a")
    await a.rooms.create("solo")
    with pytest.raises(NoRendezvous):
        await a.rooms.invite("solo")
    with pytest.raises(NoRendezvous):
        await a.rooms.join("other", "1-acorn-acorn")
