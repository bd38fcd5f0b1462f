"""The trust graph's core (``rooms.graph``): vouches signed, kept newest-first and only
first-hand from members; the gaps a conspiring member's outsider shows; no gaps in a room
where everyone verified everyone."""

from __future__ import annotations

import random

import pytest

from stack.base.identity import Identity
from rooms.graph import accept_vouch, build_graph, sign_vouch, verify_vouch
from rooms.intro import ForgedIntroduction, NotAMember
from rooms.names import room_id
from rooms.roster import Member, Roster, Via

RID = room_id("club")
rng = random.Random(13)
A, B, C, X = (Identity.from_rng(rng) for _ in range(4))


def roster_of_a() -> Roster:
    roster = Roster(RID, A.peer_id, A.peer_id)
    roster.add(Member(B.peer_id, Via.ADMITTED, A.peer_id))
    roster.add(Member(C.peer_id, Via.INTRODUCED, B.peer_id))
    return roster


def vouch(who: Identity, t: int, verified, admitted=(), connected=None) -> bytes:
    ids = [p.peer_id for p in verified]
    return sign_vouch(who, RID, t, ids, [p.peer_id for p in admitted],
                      ids if connected is None else [p.peer_id for p in connected])


def test_vouches_are_first_hand_from_members_and_newest_wins() -> None:
    roster = roster_of_a()
    record = vouch(B, 5, [A, C], [C])
    assert verify_vouch(record, RID).admitted == {C.peer_id}
    assert accept_vouch(roster, record, B.peer_id) is not None
    assert accept_vouch(roster, vouch(B, 5, [A]), B.peer_id) is None       # not newer
    with pytest.raises(ForgedIntroduction):
        accept_vouch(roster, record, C.peer_id)                            # forwarded
    with pytest.raises(NotAMember):
        accept_vouch(roster, vouch(X, 1, [C]), X.peer_id)
    with pytest.raises(ForgedIntroduction):
        accept_vouch(roster, record[:-1] + bytes([record[-1] ^ 1]), B.peer_id)
    with pytest.raises(ForgedIntroduction):
        verify_vouch(record, room_id("other"))


def test_gaps_of_a_conspiring_members_outsider() -> None:
    roster = roster_of_a()
    roster.statements[A.peer_id] = vouch(A, 1, [B, C], [B])
    roster.statements[B.peer_id] = vouch(B, 1, [A, C], [C])
    assert build_graph(roster)["gaps"] == [
        {"kind": "no_statement", "peer": str(C.peer_id),
         "why": f"we hold no signed statement of whom {C.peer_id} verified"}]
    roster.statements[C.peer_id] = vouch(C, 1, [A, B])
    assert build_graph(roster)["gaps"] == []
    roster.statements[C.peer_id] = vouch(C, 2, [A, B, X], [X])
    graph = build_graph(roster)
    assert graph["outsiders"] == [str(X.peer_id)]
    assert [(g["kind"], g.get("member"), g["peer"]) for g in graph["gaps"]] == [
        ("outside_peer", str(C.peer_id), str(X.peer_id)),
        ("single_voucher", None, str(X.peer_id))]
    assert graph["gaps"][1]["not_verified_by"] == sorted([str(A.peer_id), str(B.peer_id)])
    assert {"from": str(C.peer_id), "to": str(X.peer_id), "kind": "admitted"} \
        in graph["edges"]
    assert next(m for m in graph["members"] if m["peer_id"] == str(A.peer_id))["admin"]
    assert Roster.from_json(roster.to_json()).statements == roster.statements
