"""The rendezvous on real nodes (127.0.0.1, real QUIC): a newcomer joins a room through
it; it never sees a code; a wrong code, an unknown number and every refusal are named;
a rendezvous that tampers with what it forwards causes a failed admission, never a wrong
one (issue 13 sections 1 and 2)."""

from __future__ import annotations

import asyncio
from pathlib import Path as FsPath

import pytest

from stack.base.clock import SystemClock
from stack.node import Node
from stack.node.config import NodeConfig
from stack.node import operations
from stack.node.protocols.rendezvous import (RendezvousLimits, RendezvousRefused,
                                             RendezvousService, announce,
                                             host_invite, join, members, serve_invite)
from rooms.admission import AdmissionFailed, Admitted, ReplayGuard
from rooms.errors import (AdmissionError, InviteUnknown, MalformedMessage, TamperedMessage,
                          WrongCode)
from rooms.invites import InviteBook, InviteCode
from rooms.membership import sign_member
from rooms.names import room_id
from rooms.words import WORDS

T = 10.0
RID = room_id("book-club")


class RecordingRendezvous(RendezvousService):
    """Keeps every message it forwards; with ``tamper`` set to (to_inviter, n), flips one
    byte of the n-th message going that way (0-based), as a compromised rendezvous."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.seen: list[bytes] = []
        self.tamper: tuple[bool, int] | None = None
        self._count = {True: 0, False: 0}

    def forward(self, data: bytes, to_inviter: bool) -> bytes:
        self.seen.append(data)
        n = self._count[to_inviter]
        self._count[to_inviter] += 1
        if self.tamper == (to_inviter, n):
            changed = bytearray(data)
            changed[-5] ^= 0x01
            return bytes(changed)
        return data


@pytest.fixture
async def nodes(tmp_path: FsPath):
    created: list[Node] = []

    async def make(service: RendezvousService | None = None, **overrides) -> Node:
        node = Node(NodeConfig(data_dir=tmp_path / f"n{len(created)}", listen=("127.0.0.1", 0),
                               tls=False, dht=False, dial_back=False, **overrides))
        if service is not None:  # a rendezvous built by the test (one that tampers, say)
            node.router.add(service)
            node.rendezvous = service
        await node.start()
        created.append(node)
        return node

    yield make
    for node in reversed(created):
        await node.stop(grace=0.1)


def addr(node: Node) -> str:
    return f"/ip4/127.0.0.1/udp/{node.udp_address[1]}/quic-v1/p2p/{node.peer_id}"


async def member_with_invite(inviter: Node, rv: Node, book: InviteBook):
    """The inviter announces itself in the room, holds an invite slot and serves it."""
    conn = await inviter.connect(addr(rv))
    await announce(conn, sign_member(inviter.identity, RID, inviter.addrs(), inviter.clock.now()),
                   T)
    hosted = await host_invite(conn, RID, T)
    invite = book.create(RID, inviter.clock.now(), number=hosted.number)
    task = asyncio.ensure_future(serve_invite(
        hosted, identity=inviter.identity, book=book, guard=ReplayGuard(), room_id=RID,
        clock=inviter.clock))
    return invite, task


async def test_a_newcomer_joins_through_the_rendezvous(nodes) -> None:
    service = RecordingRendezvous(clock=SystemClock(), timeout=T)
    rv = await nodes(service)
    a, b = await nodes(), await nodes()
    book = InviteBook()
    invite, served = await member_with_invite(a, rv, book)
    assert invite.number == 1
    conn = await b.connect(addr(rv))
    [listed] = await members(conn, RID, b.clock.now(), T)
    assert listed.peer_id == a.peer_id and listed.addrs == tuple(a.addrs())
    admitted = await join(conn, identity=b.identity, room_id=RID, code=invite.code,
                          clock=b.clock, timeout=T)
    assert admitted.peer_id == a.peer_id
    assert admitted.admission.newcomer == b.peer_id and admitted.admission.inviter == a.peer_id
    result = await asyncio.wait_for(served, T)
    assert isinstance(result, Admitted) and result.peer_id == b.peer_id
    assert result.admission == admitted.admission
    # what the rendezvous carried: four opaque messages, no word of the code in them
    assert len(service.seen) == 4 and service.stats["paired"] == 1
    assert not any(w.encode() in m for m in service.seen for w in invite.code.words)
    assert rv.rendezvous is service
    # the slot paired once: a second join with the same number finds nothing
    with pytest.raises(InviteUnknown):
        await join(conn, identity=b.identity, room_id=RID, code=invite.code, clock=b.clock,
                   timeout=T)


async def test_a_wrong_code_fails_both_sides_and_spends_the_slot(nodes) -> None:
    rv = await nodes(RendezvousService(clock=SystemClock(), timeout=T))
    a, b = await nodes(), await nodes()
    book = InviteBook()
    invite, served = await member_with_invite(a, rv, book)
    w = invite.code.words
    guess = InviteCode(invite.number, (WORDS[(WORDS.index(w[0]) + 1) % 256], *w[1:]))
    conn = await b.connect(addr(rv))
    with pytest.raises(WrongCode):
        await join(conn, identity=b.identity, room_id=RID, code=guess, clock=b.clock,
                   timeout=T)
    result = await asyncio.wait_for(served, T)
    assert isinstance(result, AdmissionFailed) and isinstance(result.error, WrongCode)
    assert book.get(RID, invite.number).outcome == "wrong_code"


@pytest.mark.parametrize("tamper, inviter_outcome", [
    ((True, 1), TamperedMessage),   # PAKE3: the newcomer's sealed proof of its peer id
    ((True, 0), AdmissionError),    # PAKE1: the SPAKE2 element (off the curve / keys differ)
    ((False, 1), Admitted),         # ADMIT: the inviter admitted the right peer; B fails
])
async def test_a_tampering_rendezvous_causes_a_failed_admission_not_a_wrong_one(
        nodes, tamper, inviter_outcome) -> None:
    service = RecordingRendezvous(clock=SystemClock(), timeout=T)
    rv = await nodes(service)
    service.tamper = tamper
    a, b = await nodes(), await nodes()
    invite, served = await member_with_invite(a, rv, InviteBook())
    conn = await b.connect(addr(rv))
    with pytest.raises(AdmissionError):
        await join(conn, identity=b.identity, room_id=RID, code=invite.code, clock=b.clock,
                   timeout=T)
    result = await asyncio.wait_for(served, T)
    if inviter_outcome is Admitted:
        assert isinstance(result, Admitted) and result.peer_id == b.peer_id
    else:
        assert isinstance(result, AdmissionFailed)
        assert isinstance(result.error, inviter_outcome)


async def test_refusals_are_named(nodes) -> None:
    rv = await nodes(RendezvousService(clock=SystemClock(), timeout=T))
    a, b = await nodes(), await nodes()
    conn = await a.connect(addr(rv))
    now = a.clock.now()
    with pytest.raises(RendezvousRefused, match="not_member"):
        await host_invite(conn, RID, T)
    with pytest.raises(RendezvousRefused, match="malformed_message"):  # not first-hand
        await announce(conn, sign_member(b.identity, RID, [], now), T)
    with pytest.raises(RendezvousRefused, match="expired"):
        await announce(conn, sign_member(a.identity, RID, [], now - 120, ttl=60), T)
    with pytest.raises(RendezvousRefused, match="expiry_too_far"):
        await announce(conn, sign_member(a.identity, RID, [], now, ttl=7200), T)
    with pytest.raises(MalformedMessage):
        await announce(conn, b"x" * 1001, T)
    with pytest.raises(InviteUnknown):
        await join(conn, identity=a.identity, room_id=RID, code=InviteCode(5, ("acorn",)),
                   clock=a.clock, timeout=T)
    assert await members(conn, RID, now, T) == []
    stats = rv.rendezvous.stats
    assert stats["refused.not_member"] == 1 and stats["refused.invite_unknown"] == 1


async def test_slots_are_bounded_and_expire(nodes) -> None:
    limits = RendezvousLimits(max_slots_per_peer=1, invite_ttl=1.0)
    rv = await nodes(RendezvousService(clock=SystemClock(), timeout=T, limits=limits))
    a = await nodes()
    conn = await a.connect(addr(rv))  # first: the slot below lives one second
    book = InviteBook()
    invite, served = await member_with_invite(a, rv, book)
    with pytest.raises(RendezvousRefused, match="slots_full"):
        await host_invite(conn, RID, T)
    assert await asyncio.wait_for(served, T) is None  # expired at the rendezvous: FIN
    assert rv.rendezvous.stats["expired"] == 1
    again = await host_invite(conn, RID, T)  # a slot is free again, under a fresh number
    assert again.number == invite.number + 1
    again.stream.reset()


async def test_node_config_serves_the_rendezvous_and_status_shows_it(nodes) -> None:
    rv = await nodes(rendezvous=True)
    plain = await nodes()
    assert isinstance(rv.rendezvous, RendezvousService) and plain.rendezvous is None
    conn = await plain.connect(addr(rv))
    await announce(conn, sign_member(plain.identity, RID, [], plain.clock.now()), T)
    report = operations.status(rv)["rendezvous"]
    assert report == {"rooms": 1, "stats": {"announced": 1}}
    assert operations.status(plain)["rendezvous"] is None
    from stack.cli.status import _text  # what `p2pstack status` prints of it
    assert "rendezvous:   1 rooms (announced 1)" in _text(operations.status(rv)).splitlines()
    assert "rendezvous:" not in _text(operations.status(plain))


class ForgingRendezvous(RendezvousService):
    """Lists members it made up: a record with a broken signature, one of another room,
    an expired one, garbage, and one that is not even bytes."""

    def __init__(self, forged: list, **kw) -> None:
        super().__init__(**kw)
        self.forged = forged

    def listed(self, room_id: bytes) -> list:
        return super().listed(room_id) + self.forged


async def test_forged_membership_records_are_dropped_by_the_client(nodes) -> None:
    from stack.base.identity import Identity
    mallory = Identity.generate()
    now = SystemClock().now()
    broken = bytearray(sign_member(mallory, RID, [], now))
    broken[-1] ^= 1
    forged = [bytes(broken), sign_member(mallory, room_id("other"), [], now),
              sign_member(mallory, RID, [], now - 7200, ttl=60), b"garbage", 7]
    rv = await nodes(ForgingRendezvous(forged, clock=SystemClock(), timeout=T))
    a = await nodes()
    conn = await a.connect(addr(rv))
    await announce(conn, sign_member(a.identity, RID, [], a.clock.now()), T)
    assert [m.peer_id for m in await members(conn, RID, a.clock.now(), T)] == [a.peer_id]
