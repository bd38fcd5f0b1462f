"""The trust graph's core (``rooms.graph``): vouches signed, kept newest-first and only
first-hand from members; the gaps a conspiring member's outsider shows; no gaps in a room
where everyone verified everyone. Removals (``rooms.kick``): the admin's only, and whom the
removed member alone let in goes with it."""

from __future__ import annotations

import random

import pytest

from stack.base.identity import Identity
from rooms.graph import accept_vouch, build_graph, sign_vouch, verify_vouch
from rooms.intro import ForgedIntroduction, NotAMember
from rooms.kick import ForgedRemoval, NotAdmin, apply_removal, sign_removal, verify_removal
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


def test_a_removal_cuts_off_only_whom_nobody_else_verified() -> None:
    D = Identity.from_rng(rng)
    roster = roster_of_a()
    roster.add(Member(D.peer_id, Via.INTRODUCED, C.peer_id))      # C admitted D openly
    roster.statements[B.peer_id] = vouch(B, 1, [A, C, D], [C])
    roster.statements[C.peer_id] = vouch(C, 1, [A, B, D, X], [D, X])
    with pytest.raises(NotAdmin):
        verify_removal(sign_removal(B, RID, C.peer_id, 1.0, "coup"), roster)
    with pytest.raises(NotAdmin):
        verify_removal(sign_removal(A, RID, A.peer_id, 1.0, "self"), roster)
    record = sign_removal(A, RID, C.peer_id, 1.0, "conspired")
    with pytest.raises(ForgedRemoval):
        verify_removal(record[:-1] + bytes([record[-1] ^ 1]), roster)
    removal = verify_removal(record, roster)
    gone = apply_removal(roster, removal.peer_id, removal.reason)
    assert [p for p, _ in gone] == [C.peer_id, X.peer_id]          # D: A and B verified it
    assert roster.verified() == {B.peer_id, D.peer_id}
    assert C.peer_id not in roster.statements and X.peer_id in roster.removed
    assert apply_removal(roster, C.peer_id, "again") == []
    assert roster.add(Member(X.peer_id, Via.INTRODUCED, B.peer_id)) is False
