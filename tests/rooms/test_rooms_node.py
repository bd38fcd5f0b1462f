"""The node's rooms (``stack.node.rooms``) on real nodes, in process: seed 002's flow
(A creates, invites B; B invites C), admitted peers in the trust store with source
``invite``, events for both outcomes, ``rooms.json`` kept across restarts, and every
refusal named."""

from __future__ import annotations

import pytest

from stack.base.errors import CorruptFileError, UsageError
from stack.node import Node, RoomAdmissionFailed, RoomAdmitted
from stack.node.rooms import ROOMS_FILE, NoRendezvous, RoomExists, UnknownRoom
from stack.store.trust_model import Source
from rooms.errors import InvalidInviteCode, InviteUnknown, WrongCode
from rooms.invites import parse_code
from rooms.words import WORDS
from tests.rooms.roomnodes import T, addr


async def admit(inviter: Node, newcomer: Node, room: str, rendezvous: str) -> None:
    code = (await inviter.rooms.invite(room))["code"]
    admitted = inviter.next_event(RoomAdmitted, role="inviter", timeout=T)
    out = await newcomer.rooms.join(room, code, rendezvous)
    assert out["admitted_by"] == str(inviter.peer_id) and out["admin"] is False
    event = await admitted
    assert event.peer_id == newcomer.peer_id and event.room == room


async def test_seed_002_flow_and_trust_source_invite(nodes, tmp_path) -> None:
    r = await nodes("r", rendezvous=True)
    a, b, c = await nodes("a"), await nodes("b"), await nodes("c")
    created = await a.rooms.create("club", addr(r))
    assert created["admin"] is True and created["rendezvous"] == addr(r)
    await admit(a, b, "club", addr(r))
    await admit(b, c, "club", addr(r))           # any member invites, not only the admin
    for node, peer in ((a, b), (b, a), (b, c), (c, b)):
        entry = node.trust.get(peer.peer_id)
        assert entry is not None and entry.source is Source.INVITE, (node, peer)
    assert a.trust.get(c.peer_id) is None        # A has not verified C itself (later step)
    assert [m["admitted"] for m in b.rooms.list()["rooms"]] == [[str(c.peer_id)]]
    assert len(r.rendezvous.directory.members(a.rooms._room("club").room_id,
                                              r.clock.now())) == 3
    # kept across a restart
    await b.stop(grace=0.1)
    again = await nodes("b")
    assert again.rooms.list() == b.rooms.list()
    assert (tmp_path / "b" / ROOMS_FILE).stat().st_mode & 0o777 == 0o600


async def test_a_wrong_code_is_reported_by_the_inviter_and_named_to_the_newcomer(nodes) -> None:
    r = await nodes("r", rendezvous=True)
    a, b = await nodes("a"), await nodes("b")
    await a.rooms.create("club", addr(r))
    invite = await a.rooms.invite("club")
    code = parse_code(invite["code"])
    assert 0 < invite["expires"] - a.clock.now() <= 600
    wrong = f"{code.number}-{WORDS[(WORDS.index(code.words[0]) + 1) % 256]}-{code.words[1]}"
    with pytest.raises(InvalidInviteCode):       # a typo: caught before it spends anything
        await b.rooms.join("club", f"{code.number}-notaword-{code.words[1]}", addr(r))
    failed = a.next_event(RoomAdmissionFailed, role="inviter", timeout=T)
    with pytest.raises(WrongCode):
        await b.rooms.join("club", wrong, addr(r))
    event = await failed
    assert event.reason == "wrong_code" and event.number == code.number
    with pytest.raises(InviteUnknown):           # one guess: the slot is gone
        await b.rooms.join("club", invite["code"], addr(r))
    assert b.rooms.list() == {"rooms": []} and b.trust.get(a.peer_id) is None
    # a fresh invite from the same inviter (the rendezvous hands out a fresh number)
    await admit(a, b, "club", addr(r))
    assert b.trust.get(a.peer_id).source is Source.INVITE


async def test_refusals_are_named(nodes, tmp_path) -> None:
    a = await nodes("a")
    await a.rooms.create("solo")
    with pytest.raises(RoomExists):
        await a.rooms.create(" solo ")
    with pytest.raises(NoRendezvous):
        await a.rooms.invite("solo")
    with pytest.raises(UnknownRoom):
        await a.rooms.invite("nowhere")
    with pytest.raises(RoomExists):
        await a.rooms.join("solo", "1-acorn-acorn", "127.0.0.1:1")
    for bad in ("not an address", 7):
        with pytest.raises(UsageError):
            await a.rooms.create("other", bad)
        with pytest.raises(UsageError):
            await a.rooms.join("other", "1-acorn-acorn", bad)
    with pytest.raises(UsageError):
        await a.rooms.join(7, "1-acorn-acorn", "127.0.0.1:1")
    with pytest.raises(UsageError):
        await a.rooms.join("other", None, "127.0.0.1:1")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / ROOMS_FILE).write_text("{not json")
    b = await nodes("b")                          # a corrupt file does not stop the node
    with pytest.raises(CorruptFileError):
        b.rooms.list()
    assert (tmp_path / "b" / ROOMS_FILE).read_text() == "{not json"


async def test_invites_share_one_connection_to_the_rendezvous(nodes) -> None:
    """Eight open invites (all a rendezvous hosts for one member) and the room's
    announcement all go over the one connection A dialed to the rendezvous: a connection
    each would pass the 8 a node allows per peer."""
    r = await nodes("r", rendezvous=True)
    a = await nodes("a")
    await a.rooms.create("club", addr(r))
    codes = {(await a.rooms.invite("club"))["code"] for _ in range(8)}
    assert len(codes) == 8
    to_r = [c for c in a.connections if c.peer_id == r.peer_id and not c.closed]
    assert len(to_r) == 1, to_r
    b = await nodes("b")
    out = await b.rooms.join("club", codes.pop(), addr(r))   # the invites still work
    assert out["admitted_by"] == str(a.peer_id)
