"""The room document core (``rooms.state``): state-vector sync between members, a
newcomer's full sync, convergence after a partition, membership chains, and stored
state that does not decode."""

from __future__ import annotations

import pytest

from stack.base.identity import Identity
from rooms.admission import sign_admission
from rooms.errors import MalformedMessage
from rooms.names import room_id
from rooms.state import (MAX_UPDATE, MAX_VALUE, Change, CorruptState, NotAMember, RoomDoc,
                         StateFull, verify_chain)

A, B, C, X = (Identity.from_seed(bytes([i]) * 32) for i in (1, 2, 3, 9))
ROOM = room_id("club")
SESSION = bytes(32)


def sync(one: RoomDoc, other: RoomDoc) -> None:
    """One state-vector exchange each way (what two members do on connect)."""
    to_other, to_one = one.missing(other.state_vector()), other.missing(one.state_vector())
    other.apply(to_other)
    one.apply(to_one)


def test_a_set_reaches_the_others_and_is_heard_once() -> None:
    heard: list[Change] = []
    a, b = RoomDoc(ROOM), RoomDoc(ROOM, on_change=heard.append)
    update = a.set("topic", "rust")
    b.apply(update, origin=A.peer_id)
    b.apply(update, origin=A.peer_id)            # a duplicate changes nothing
    assert b.items() == {"topic": "rust"}
    assert heard == [Change("topic", "rust", str(A.peer_id))]


def test_a_newcomer_syncs_the_whole_state() -> None:
    a = RoomDoc(ROOM)
    for i in range(20):
        a.set(f"k{i}", str(i))
    c = RoomDoc(ROOM)
    sync(c, a)
    assert c.items() == a.items() and len(c.items()) == 20


def test_convergence_after_a_partition() -> None:
    a, b = RoomDoc(ROOM), RoomDoc(ROOM)
    b.apply(a.set("shared", "before"))
    a.set("shared", "a-side")                    # both sides change while apart
    a.set("only-a", "1")
    b.set("shared", "b-side")
    b.set("only-b", "2")
    sync(a, b)
    assert a.items() == b.items()
    assert a.items()["only-a"] == "1" and a.items()["only-b"] == "2"
    assert a.get("shared") in {"a-side", "b-side"}


def test_chains_of_admissions() -> None:
    ab = sign_admission(A, ROOM, B.peer_id, 1.0, SESSION)   # A (admin) admitted B
    bc = sign_admission(B, ROOM, C.peer_id, 2.0, SESSION)   # B admitted C
    assert verify_chain([], room_id=ROOM, peer=A.peer_id, anchors={A.peer_id}) == []
    assert [link.inviter for link in verify_chain(
        [bc, ab], room_id=ROOM, peer=C.peer_id, anchors={A.peer_id})] == [B.peer_id, A.peer_id]
    # B accepts the peer it admitted before it knows the rest of the chain
    assert len(verify_chain([bc], room_id=ROOM, peer=C.peer_id, anchors={B.peer_id})) == 1
    xs = sign_admission(X, ROOM, C.peer_id, 2.0, SESSION)   # an outsider "admits" C
    other = sign_admission(A, room_id("other"), B.peer_id, 1.0, SESSION)
    for chain, peer in (([], X.peer_id), ([xs], C.peer_id), ([bc], C.peer_id),
                        ([bc, other], C.peer_id), ([ab], C.peer_id), ([b"junk"], C.peer_id)):
        with pytest.raises(NotAMember):
            verify_chain(chain, room_id=ROOM, peer=peer, anchors={A.peer_id})


def test_encode_decode_and_corrupt_state() -> None:
    a = RoomDoc(ROOM, chain=[b"credential"])
    a.set("k", "v")
    again = RoomDoc.decode(a.encode())
    assert again.items() == {"k": "v"} and again.chain == [b"credential"]
    assert again.room_id == ROOM
    for bad in (b"", b"{not msgpack", a.encode()[:-3]):
        with pytest.raises(CorruptState):
            RoomDoc.decode(bad)


def test_bad_input_is_named() -> None:
    a = RoomDoc(ROOM)
    with pytest.raises(MalformedMessage):
        a.apply(b"garbage")
    with pytest.raises(MalformedMessage):
        a.missing(b"\xff\xff\xff")
    for key, value in (("", "v"), ("k" * 300, "v"), ("k", "v" * 20000)):
        with pytest.raises(MalformedMessage):
            a.set(key, value)


def test_a_set_that_would_outgrow_one_update_is_state_full() -> None:
    """The whole document must stay one update (a newcomer's sync, our own file)."""
    doc = RoomDoc(ROOM)
    value = "v" * MAX_VALUE
    with pytest.raises(StateFull):
        for n in range(MAX_UPDATE // MAX_VALUE + 1):
            doc.set(f"k{n}", value)
    assert 0 < len(doc.missing(RoomDoc(ROOM).state_vector())) <= MAX_UPDATE
    assert RoomDoc.decode(doc.encode()).items() == doc.items()   # our file still loads
    doc.set("small", "still fits")
    # a member's update that could take it over the bound is refused, and not applied
    other = RoomDoc(ROOM)
    big = other.set("big", "w" * MAX_VALUE)
    before = doc.items()
    with pytest.raises(StateFull):
        doc.apply(big)
    assert doc.items() == before
