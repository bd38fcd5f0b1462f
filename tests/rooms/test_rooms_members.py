"""Members check newcomers themselves (``stack.node.roomtrust``, issue 13 section 2) on
real nodes on 127.0.0.1: seed 002's three-member flow (A creates, invites B; B invites C;
B introduces C to A on their direct connection; A and B both verify C and connect), and
forged introductions refused by name and counted."""

from __future__ import annotations

import asyncio

import pytest

from stack.base.errors import CorruptFileError
from stack.base.identity import Identity
from stack.node import Node
from stack.node.events import RoomGraphChanged, RoomStatementRefused
from stack.node.protocols.roomlink import RoomLinkRefused, request
from stack.node.roomtrust import MEMBERS_FILE, KickRefused
from stack.store.trust_model import Source
from rooms.admission import sign_admission
from rooms.intro import sign_intro
from rooms.kick import sign_removal
from rooms.roster import Via
from tests.rooms.roomnodes import T, addr, admit


def peers_of(node: Node) -> set:
    return {c.peer_id for c in node.connections if not c.closed}


async def test_seed_002_three_members_verify_each_other(nodes) -> None:
    r = await nodes("r", rendezvous=True)
    a, b, c = await nodes("a"), await nodes("b"), await nodes("c")
    await a.rooms.create("club", addr(r))
    await admit(a, b, "club", addr(r))
    await admit(b, c, "club", addr(r), a)        # B introduces C to A; A verifies C itself
    for node in (a, b, c):
        others = {a.peer_id, b.peer_id, c.peer_id} - {node.peer_id}
        roster = node.roomtrust.roster("club")
        assert roster.verified() == others, node
        assert roster.admin == a.peer_id
        for peer in others:
            entry = node.trust.get(peer)
            assert entry is not None and entry.source is Source.INVITE, (node, peer)
    assert c.peer_id in peers_of(a) and a.peer_id in peers_of(c)   # A connected to C
    ra = a.roomtrust.roster("club")
    assert ra.members[c.peer_id].via is Via.INTRODUCED
    assert ra.members[c.peer_id].inviter == b.peer_id
    assert c.roomtrust.roster("club").members[a.peer_id].via is Via.WELCOME
    assert b.roomtrust.stats["introduced"] == 1 and a.roomtrust.stats["verified"] == 1
    assert not any(k.startswith("refused.") for n in (a, b, c) for k in n.roomtrust.stats)
    # the rosters are kept across a restart
    await c.stop(grace=0.1)
    again = await nodes("c")
    assert again.roomtrust.roster("club").verified() == {a.peer_id, b.peer_id}


async def test_forged_introductions_are_refused_by_name_and_counted(nodes) -> None:
    r = await nodes("r", rendezvous=True)
    a, b, z = await nodes("a"), await nodes("b"), await nodes("z")
    await a.rooms.create("club", addr(r))
    await admit(a, b, "club", addr(r))
    rid = a.rooms._room("club").room_id
    ghost = Identity.generate()           # the peer a forger would slip into the room
    now = a.clock.now()
    by_b = b.identity
    cases = [
        # (sender node, record, reason)
        (b, b"\x93not a signed record", "forged_introduction"),        # unsigned garbage
        (b, sign_intro(z.identity, rid, sign_admission(z.identity, rid, ghost.peer_id, now,
                                                       bytes(32)), [], now),
         "forged_introduction"),       # signed, but by Z: not first-hand from B
        (b, sign_intro(by_b, rid, sign_admission(z.identity, rid, ghost.peer_id, now,
                                                 bytes(32)), [], now),
         "forged_introduction"),       # B's signature over an admission Z signed
        (b, sign_intro(by_b, bytes(32), sign_admission(by_b, bytes(32), ghost.peer_id, now,
                                                       bytes(32)), [], now),
         "unknown_room"),
        (z, sign_intro(z.identity, rid, sign_admission(z.identity, rid, ghost.peer_id, now,
                                                       bytes(32)), [], now),
         "not_member"),                # sound, but Z is no member A verified
    ]
    for sender, record, reason in cases:
        conn = await sender.connect(addr(a))
        room_id = bytes(32) if reason == "unknown_room" else rid
        refused = a.next_event(RoomStatementRefused, statement="intro", timeout=T) \
            if reason != "unknown_room" else None
        with pytest.raises(RoomLinkRefused) as info:
            await request(conn, "intro", room_id, record, T)
        assert info.value.reason == reason
        if refused is not None:
            event = await refused
            assert event.reason == reason and event.sender == sender.peer_id
    stats = a.roomtrust.stats
    assert stats["refused.forged_introduction"] == 3
    assert stats["refused.not_member"] == 1 and stats["refused.unknown_room"] == 1
    assert not a.roomtrust.roster("club").is_member(ghost.peer_id)
    assert a.trust.get(ghost.peer_id) is None
    # a greeting from a non-member is refused too
    conn = await z.connect(addr(b))
    with pytest.raises(RoomLinkRefused, match="not_member"):
        await request(conn, "greet", rid, b"", T)
    # a genuine introduction from B of a peer B admitted is accepted (the same path)
    good = sign_intro(by_b, rid, sign_admission(by_b, rid, ghost.peer_id, now, bytes(32)),
                      [], now)
    conn = await b.connect(addr(a))
    assert await request(conn, "intro", rid, good, T) == b""
    assert a.roomtrust.roster("club").is_member(ghost.peer_id)
    assert a.trust.get(ghost.peer_id).source is Source.INVITE


async def graph_until(node: Node, room: str, holds) -> dict:
    """``node``'s graph of ``room`` once ``holds(graph)``: checked now and after each of
    its graph changes (the waiter is registered before each check)."""
    async with asyncio.timeout(T):
        while True:
            waiter = node.next_event(RoomGraphChanged, room=room)
            graph = node.roomtrust.graph(room)
            if holds(graph):
                waiter.cancel()
                return graph
            await waiter


def gaps(graph: dict) -> list[tuple]:
    return sorted((g["kind"], g.get("member"), g["peer"]) for g in graph["gaps"])


async def conspiracy(nodes) -> tuple[Node, ...]:
    """A, B, C verified each other; then C admits X and introduces it to nobody."""
    r = await nodes("r", rendezvous=True)
    a, b, c, x = await nodes("a"), await nodes("b"), await nodes("c"), await nodes("x")
    await a.rooms.create("club", addr(r))
    await admit(a, b, "club", addr(r))
    await admit(b, c, "club", addr(r), a)
    ids = {str(n.peer_id) for n in (a, b, c)}
    healthy = await graph_until(a, "club", lambda g: not g["gaps"])   # all statements held
    assert {m["peer_id"] for m in healthy["members"]} == ids and healthy["outsiders"] == []
    assert {(e["from"], e["to"]) for e in healthy["edges"]} == {
        (p, q) for p in ids for q in ids if p != q}
    kinds = {(e["from"], e["to"]): e["kind"] for e in healthy["edges"]}
    assert kinds[(str(b.peer_id), str(c.peer_id))] == "admitted"
    assert kinds[(str(a.peer_id), str(c.peer_id))] == "verified"

    async def tell_nobody(name, intro, others) -> None:
        c.roomtrust.stats["kept_quiet"] += 1
    c.roomtrust.fan_out = tell_nobody
    knocked = a.next_event(RoomStatementRefused, sender=x.peer_id, statement="vouch",
                           timeout=T)
    await admit(c, x, "club", addr(r))
    assert c.roomtrust.stats["kept_quiet"] == 1
    assert (await knocked).reason == "not_member"   # X pushes its vouch to A: refused
    outsider = str(x.peer_id)
    for viewer in (a, b):
        await graph_until(viewer, "club",
                          lambda g: outsider in g["outsiders"] and len(g["gaps"]) == 2)
    return r, a, b, c, x


async def test_an_outsider_admitted_by_a_conspiring_member_shows_up_as_a_gap(nodes) -> None:
    _, a, b, c, x = await conspiracy(nodes)
    outsider = str(x.peer_id)
    for viewer in (a, b):
        graph = await graph_until(viewer, "club",
                                  lambda g: outsider in g["outsiders"] and len(g["gaps"]) == 2)
        assert gaps(graph) == [("outside_peer", str(c.peer_id), outsider),
                               ("single_voucher", None, outsider)]
        single = next(g for g in graph["gaps"] if g["kind"] == "single_voucher")
        assert single["vouched_by"] == [str(c.peer_id)]
        assert single["not_verified_by"] == sorted([str(a.peer_id), str(b.peer_id)])
        assert outsider in single["why"] and "cannot verify it" in single["why"]
        assert {"from": str(c.peer_id), "to": outsider, "kind": "admitted"} in graph["edges"]
        assert not viewer.roomtrust.roster("club").is_member(x.peer_id)
        entry = viewer.trust.get(x.peer_id)   # its knock on A's door was TOFU, no invite
        assert entry is None or entry.source is not Source.INVITE


async def test_kicking_the_conspiring_member_cuts_the_outsider_off(nodes) -> None:
    _, a, b, c, x = await conspiracy(nodes)
    with pytest.raises(KickRefused, match="only the room's admin"):
        await b.roomtrust.kick("club", str(c.peer_id))
    with pytest.raises(KickRefused, match="no member"):
        await a.roomtrust.kick("club", "12D3KooWnobody")
    told = [n.next_event(RoomGraphChanged, room="club", peer_id=p.peer_id, cause="removed",
                         timeout=T) for n, p in ((b, x), (c, c))]
    out = await a.roomtrust.kick("club", str(c.peer_id)[:20])   # a prefix will do
    assert [r_["peer_id"] for r_ in out["removed"]] == [str(c.peer_id), str(x.peer_id)]
    assert "cut off: admitted by " + str(c.peer_id) in out["removed"][1]["reason"]
    for waiter in told:                        # B heard it from A (X went with C); C too
        await waiter
    for viewer in (a, b):
        # no gaps once the other's newer vouch (no connection to C any more) is in
        graph = await graph_until(viewer, "club", lambda g: not g["gaps"])
        assert {m["peer_id"] for m in graph["members"]} == {str(a.peer_id), str(b.peer_id)}
        assert {r_["peer_id"] for r_ in graph["removed"]} == {str(c.peer_id), str(x.peer_id)}
        assert graph["outsiders"] == []
        assert c.peer_id not in peers_of(viewer)
    assert c.roomtrust.roster("club").removed.keys() == {c.peer_id}  # C knows it is out
    rid = a.rooms._room("club").room_id
    for sender in (c, x):                      # neither gets a word in with A any more
        conn = await sender.connect(addr(a))
        with pytest.raises(RoomLinkRefused, match="removed"):
            await request(conn, "greet", rid, b"", T)
    with pytest.raises(KickRefused, match="no member"):
        await a.roomtrust.kick("club", str(c.peer_id))
    # a forged removal (signed by B, not the admin) is refused by name, and counted
    forged = sign_removal(b.identity, rid, a.peer_id, b.clock.now(), "coup")
    conn = await b.connect(addr(a))
    with pytest.raises(RoomLinkRefused, match="not_admin"):
        await request(conn, "remove", rid, forged, T)
    assert a.roomtrust.stats["refused.not_admin"] == 1


async def test_a_corrupt_members_file_is_named_and_kept(nodes, tmp_path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / MEMBERS_FILE).write_text("{not json")
    a = await nodes("a")                       # a corrupt file does not stop the node
    await a.rooms.create("solo")
    with pytest.raises(CorruptFileError):
        a.roomtrust.graph("solo")
    assert (tmp_path / "a" / MEMBERS_FILE).read_text() == "{not json"
