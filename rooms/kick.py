"""Removing a member for everyone (issue 13 section 2, seed 002: "when discovered, the
conspiring peer can be disconnected, cutting off the illegitimate peer as well").

The room's admin signs a **removal** (``rooms.intro``'s envelope,
``/p2pstack/room-removal/1``); payload, a msgpack array:

    [room_id(32), peer(38), issued_ms, reason(str, <= 200)]

Members pass it on to each other (it is the admin's signature that counts, not who carried
it), so members the admin cannot reach still learn it. ``verify_removal`` refuses, by
name: bad framing, a signature that fails, another room (``ForgedRemoval``); a signer
other than the admin our roster names, or a removal of the admin itself (``NotAdmin``).

``apply_removal`` then cuts off, with the removed member, every peer it admitted that no
remaining member vouches for (in the vouches we hold, ``rooms.graph``, and our own
roster), transitively: what the conspiring member let in leaves with it; a peer other
members checked for themselves stays. The removed are forgotten as members, their vouches
dropped, and kept in ``roster.removed`` with why, so they are never added again. A
removal of ourselves empties our roster (we are no longer in the room).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stack.base.identity import Identity, PeerId
from rooms.graph import verify_vouch
from rooms.intro import (REMOVAL_TYPE, IntroductionError, open_record, peer_bytes,
                         seal_record, to_peer)
from rooms.roster import Roster
from rooms.signed import pack

__all__ = ["ForgedRemoval", "NotAdmin", "Removal", "sign_removal", "verify_removal",
           "apply_removal", "MAX_REMOVAL", "MAX_REASON"]

MAX_REMOVAL = 1024  # bytes
MAX_REASON = 200    # characters


class ForgedRemoval(IntroductionError):
    reason = "forged_removal"


class NotAdmin(IntroductionError):
    reason = "not_admin"


@dataclass(frozen=True, slots=True)
class Removal:
    room_id: bytes
    peer_id: PeerId
    admin: PeerId
    issued_ms: int
    reason: str
    raw: bytes = field(repr=False, compare=False)


def sign_removal(identity: Identity, room_id: bytes, peer: PeerId, now: float,
                 reason: str) -> bytes:
    return seal_record(identity, REMOVAL_TYPE, pack(
        (room_id, peer_bytes(peer), int(now * 1000), reason[:MAX_REASON])))


def verify_removal(data: bytes, roster: Roster) -> Removal:
    signer, fields = open_record(data, REMOVAL_TYPE, MAX_REMOVAL, ForgedRemoval)
    if len(fields) != 4 or fields[0] != roster.room_id:
        raise ForgedRemoval("removal: shape or room")
    try:
        peer = to_peer(fields[1], "removal")
    except IntroductionError as exc:
        raise ForgedRemoval(str(exc)) from None
    issued, reason = fields[2], fields[3]
    if type(issued) is not int or issued < 0 or type(reason) is not str \
            or len(reason) > MAX_REASON:
        raise ForgedRemoval("removal: time or reason")
    if roster.admin is None or signer != roster.admin:
        raise NotAdmin(f"a removal signed by {signer}, who is not the room's admin")
    if peer == roster.admin:
        raise NotAdmin("the admin cannot be removed")
    return Removal(roster.room_id, peer, signer, issued, reason, data)


def apply_removal(roster: Roster, peer: PeerId, why: str) -> list[tuple[PeerId, str]]:
    """Remove ``peer`` and cut off whom only it let in (see the module docstring).
    Returns the newly removed, ``peer`` first, with why; [] if it was removed before."""
    if peer in roster.removed:
        return []
    if peer == roster.me:  # we are out: we vouch for nobody and hear from nobody here
        roster.removed[peer] = why
        roster.members = {peer: roster.members[peer]}
        roster.statements.clear()
        return [(peer, why)]
    vouches = {p: verify_vouch(raw, roster.room_id) for p, raw in roster.statements.items()}
    gone: list[tuple[PeerId, str]] = [(peer, why)]
    out = {peer}
    candidates = set(roster.members) | {p for v in vouches.values()
                                        for p in v.verified | v.admitted}
    changed = True
    while changed:
        changed = False
        for p in sorted(candidates - out - {roster.me}, key=str):
            member = roster.members.get(p)
            admitters = {s for s, v in vouches.items() if p in v.admitted}
            if member is not None and member.inviter is not None:
                admitters.add(member.inviter)
            if not admitters & out:
                continue
            vouchers = {s for s, v in vouches.items() if p in v.verified and s not in out}
            if p in roster.members:
                vouchers.add(roster.me)  # we checked it ourselves
            if vouchers:
                continue
            by = sorted(str(a) for a in admitters & out)
            gone.append((p, f"cut off: admitted by {', '.join(by)}, who was removed, and "
                            "verified by no other member"))
            out.add(p)
            changed = True
    for p, reason in gone:
        roster.removed[p] = reason
        roster.members.pop(p, None)
        roster.statements.pop(p, None)
    return gone
