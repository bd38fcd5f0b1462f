"""The trust graph (issue 13 section 3): members' signed statements of whom they verified,
and the *gaps* they show (seed 002: "a malicious peer will visually show up as a gap in
the network topology").

A **vouch** is a member's statement about one room, signed by it (``rooms.intro``'s
envelope, ``/p2pstack/room-vouch/1``); payload, a msgpack array:

    [room_id(32), issued_ms, verified[peer(38)], admitted[peer(38)], connected[peer(38)]]

``verified``: the peers in its roster (``rooms.roster``: it checked each itself);
``admitted``: those it ran the PAKE with; ``connected``: the peers it holds a connection
with for this room. Members push their own vouch to each other on their direct connections
whenever it changes; a receiver keeps the newest of each member (by ``issued_ms``; an
older or equal one is ``stale``, ignored) and only first-hand ones from members of its own
roster (``ForgedIntroduction``, ``NotAMember`` otherwise, as for introductions).

``build_graph`` reads one member's roster and the vouches it holds (its own included):

- nodes: the members of its roster, the peers any vouch names (an outsider is one that is
  not in the roster), the removed;
- edges: ``verified`` (``admitted`` when the voucher ran the PAKE) from each voucher to each
  peer it vouches for, ``connected`` to a peer outside the room;
- gaps, each with a ``kind`` and a ``why`` in words:

  ==================== ==============================================================
  kind                 when
  ==================== ==============================================================
  ``single_voucher``   exactly one member vouches for the peer while other members
                       whose statements we hold do not verify it
  ``outside_peer``     a member is connected to a peer outside the room (not in our
                       roster)
  ``no_statement``     a member of our roster from whom we hold no statement (we
                       cannot say whom it verified)
  ==================== ==============================================================

Sans-I/O: the caller passes ``now``; nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stack.base.identity import Identity, PeerId
from rooms.intro import (VOUCH_TYPE, ForgedIntroduction, NotAMember, open_record, peer_bytes,
                         seal_record, to_peer)
from rooms.roster import Roster, Via
from rooms.signed import pack

__all__ = ["Vouch", "sign_vouch", "verify_vouch", "accept_vouch", "build_graph",
           "admitted_by_us", "MAX_VOUCH", "GAP_KINDS"]

MAX_VOUCH = 16 * 1024  # bytes: three lists of up to 64 peer ids
MAX_PEERS = 128        # per list
GAP_KINDS = ("single_voucher", "outside_peer", "no_statement")


@dataclass(frozen=True, slots=True)
class Vouch:
    room_id: bytes
    signer: PeerId
    issued_ms: int
    verified: frozenset[PeerId]
    admitted: frozenset[PeerId]
    connected: frozenset[PeerId]
    raw: bytes = field(repr=False, compare=False)


def sign_vouch(identity: Identity, room_id: bytes, issued_ms: int,
               verified: Iterable[PeerId], admitted: Iterable[PeerId],
               connected: Iterable[PeerId]) -> bytes:
    def ids(peers: Iterable[PeerId]) -> tuple[bytes, ...]:
        return tuple(sorted(peer_bytes(p) for p in set(peers)))[:MAX_PEERS]
    return seal_record(identity, VOUCH_TYPE, pack(
        (room_id, issued_ms, ids(verified), ids(admitted), ids(connected))))


def verify_vouch(data: bytes, room_id: bytes) -> Vouch:
    """A sound vouch of ``room_id`` (``ForgedIntroduction`` otherwise); who may send it
    is ``accept_vouch``'s business."""
    signer, fields = open_record(data, VOUCH_TYPE, MAX_VOUCH)
    if len(fields) != 5 or fields[0] != room_id:
        raise ForgedIntroduction("vouch: shape or room")
    issued = fields[1]
    if type(issued) is not int or issued < 0:
        raise ForgedIntroduction("vouch: time")
    lists = []
    for value in fields[2:]:
        if type(value) is not tuple or len(value) > MAX_PEERS:
            raise ForgedIntroduction("vouch: a peer list")
        lists.append(frozenset(to_peer(v, "vouch") for v in value))
    return Vouch(room_id, signer, issued, lists[0], lists[1], lists[2], data)


def accept_vouch(roster: Roster, data: bytes, sender: PeerId) -> Vouch | None:
    """Keep ``sender``'s vouch in ``roster.statements``; None if it is not newer than the
    one we hold. Refusals as for introductions (first-hand, from a member)."""
    vouch = verify_vouch(data, roster.room_id)
    if vouch.signer != sender:
        raise ForgedIntroduction("vouch: not first-hand (signed by another peer than the "
                                 "one who sent it)")
    if sender in roster.removed:
        raise NotAMember(f"a vouch from {sender}, who was removed")
    if not roster.is_member(sender):
        raise NotAMember(f"a vouch from {sender}, who is not a member we verified")
    old = roster.statements.get(sender)
    if old is not None and verify_vouch(old, roster.room_id).issued_ms >= vouch.issued_ms:
        return None
    roster.statements[sender] = data
    return vouch


def _held(roster: Roster) -> dict[PeerId, Vouch]:
    out = {}
    for peer, raw in roster.statements.items():
        if peer in roster.members:
            out[peer] = verify_vouch(raw, roster.room_id)
    return out


def _names(peers: Iterable[PeerId]) -> str:
    return ", ".join(sorted(str(p) for p in peers))


def build_graph(roster: Roster) -> dict[str, Any]:
    """The graph as one member sees it (see the module docstring); JSON-ready."""
    vouches = _held(roster)
    members = {p for p in roster.members if p not in roster.removed}
    named = {p for v in vouches.values() for p in v.verified | v.connected}
    outsiders = named - members - set(roster.removed)
    edges: list[dict[str, str]] = []
    gaps: list[dict[str, Any]] = []
    for signer, v in sorted(vouches.items(), key=lambda kv: str(kv[0])):
        for peer in sorted(v.verified, key=str):
            edges.append({"from": str(signer), "to": str(peer),
                          "kind": "admitted" if peer in v.admitted else "verified"})
        for peer in sorted(v.connected - members, key=str):
            edges.append({"from": str(signer), "to": str(peer), "kind": "connected"})
            gaps.append({"kind": "outside_peer", "member": str(signer), "peer": str(peer),
                         "why": f"member {signer} is connected to {peer}, which is not a "
                                "member of the room"})
    for peer in sorted(members | outsiders, key=str):
        vouchers = {s for s, v in vouches.items() if peer in v.verified}
        silent = {s for s in vouches if s != peer} - vouchers
        if len(vouchers) == 1 and silent:
            (voucher,) = vouchers
            gaps.append({"kind": "single_voucher", "peer": str(peer),
                         "vouched_by": [str(voucher)],
                         "not_verified_by": sorted(str(s) for s in silent),
                         "why": f"only {voucher} vouches for {peer}; {_names(silent)} "
                                f"cannot verify it"})
    for peer in sorted(members - set(vouches), key=str):
        gaps.append({"kind": "no_statement", "peer": str(peer),
                     "why": f"we hold no signed statement of whom {peer} verified"})
    return {
        "room_id": roster.room_id.hex(), "viewer": str(roster.me),
        "admin": None if roster.admin is None else str(roster.admin),
        "members": [{"peer_id": str(p), "via": roster.members[p].via.value,
                     "inviter": None if roster.members[p].inviter is None
                     else str(roster.members[p].inviter),
                     "statement": vouches[p].issued_ms if p in vouches else None,
                     "admin": p == roster.admin}
                    for p in sorted(members, key=str)],
        "outsiders": sorted(str(p) for p in outsiders),
        "removed": [{"peer_id": str(p), "reason": why}
                    for p, why in sorted(roster.removed.items(), key=lambda kv: str(kv[0]))],
        "edges": edges,
        "gaps": gaps,
    }


def admitted_by_us(roster: Roster) -> set[PeerId]:
    """The members we ran the PAKE with (our vouch's ``admitted``)."""
    return {p for p, m in roster.members.items() if m.via is Via.ADMITTED}
