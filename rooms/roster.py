"""One member's own view of its room: whom it verified, who admitted whom, who is gone.

Every member keeps a ``Roster`` per room and decides by it alone (seed 002: "both peers
... individually connect to the new peer when they resolve it"): a peer is in *our*
roster only if we checked it ourselves, in one of these ways (``Via``):

==============  =============================================================================
via             how we know it
==============  =============================================================================
``self``        we are it
``admitted``    we ran the PAKE with it and admitted it (``rooms.admission``)
``inviter``     it ran the PAKE with us and admitted us
``welcome``     our inviter's signed welcome listed it, with an admission signed by a
                member of that list (``rooms.intro.verify_welcome``)
``introduced``  a member of our roster introduced it on a direct connection, with its
                admission signed by that member (``rooms.intro.verify_intro``)
==============  =============================================================================

A removed peer (``removed``: peer -> why) is never added again. ``statements`` holds the
newest signed vouch of each member (``rooms.graph``), as received. Sans-I/O: no clock, no I/O;
``to_json``/``from_json`` let the node keep it in its data directory.
"""

from __future__ import annotations

import base64
import enum
from dataclasses import dataclass, field
from typing import Any

from stack.base.identity import PeerId
from rooms.intro import Welcome

__all__ = ["Via", "Member", "Roster"]


class Via(enum.StrEnum):
    SELF = "self"
    ADMITTED = "admitted"
    INVITER = "inviter"
    WELCOME = "welcome"
    INTRODUCED = "introduced"


@dataclass
class Member:
    peer_id: PeerId
    via: Via
    inviter: PeerId | None = None       # who admitted it (None: the admin, or not known yet)
    admission: bytes | None = None      # that admission, signed by the inviter
    addrs: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"via": self.via.value,
                "inviter": None if self.inviter is None else str(self.inviter),
                "admission": None if self.admission is None
                else base64.b64encode(self.admission).decode(),
                "addrs": list(self.addrs)}

    @classmethod
    def from_json(cls, peer: str, obj: dict[str, Any]) -> Member:
        inv, adm = obj["inviter"], obj["admission"]
        return cls(PeerId.parse(peer), Via(obj["via"]),
                   None if inv is None else PeerId.parse(inv),
                   None if adm is None else base64.b64decode(adm, validate=True),
                   tuple(str(a) for a in obj["addrs"]))


@dataclass
class Roster:
    """A member's view of one room (see the module docstring)."""

    room_id: bytes
    me: PeerId
    admin: PeerId | None = None
    members: dict[PeerId, Member] = field(default_factory=dict)
    removed: dict[PeerId, str] = field(default_factory=dict)
    # the newest signed vouch of each member (``rooms.graph``), ours included
    statements: dict[PeerId, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.members.setdefault(self.me, Member(self.me, Via.SELF))

    def is_member(self, peer: PeerId) -> bool:
        return peer in self.members

    def verified(self) -> set[PeerId]:
        """The peers we vouch for: every member but us."""
        return set(self.members) - {self.me}

    def add(self, member: Member) -> bool:
        """Add (or complete) a member; False if it was removed. An existing entry keeps
        its ``via`` (the first way we verified it) and gains what it lacked."""
        if member.peer_id in self.removed:
            return False
        old = self.members.get(member.peer_id)
        if old is None:
            self.members[member.peer_id] = member
            return True
        if old.admission is None and member.admission is not None:
            old.inviter, old.admission = member.inviter, member.admission
        if member.addrs:
            old.addrs = member.addrs
        return True

    def apply_welcome(self, welcome: Welcome) -> list[PeerId]:
        """Our inviter's welcome: the admin and the members it lists. Returns the peers
        that are new to us."""
        self.admin = welcome.admin
        new = []
        for row in welcome.members:
            if row.peer_id == self.me:
                continue
            fresh = row.peer_id not in self.members
            admission = row.admission
            if self.add(Member(row.peer_id, Via.WELCOME,
                               None if admission is None else admission.inviter,
                               None if admission is None else admission.raw,
                               row.addrs)) and fresh:
                new.append(row.peer_id)
        return new

    def welcome_rows(self) -> list[tuple[PeerId, bytes | None, tuple[str, ...]]]:
        """What a welcome we sign lists: every member, with its admission and addresses."""
        return [(m.peer_id, m.admission, m.addrs) for m in self.members.values()]

    # ------------------------------------------------------------------ storage

    def to_json(self) -> dict[str, Any]:
        return {"room_id": self.room_id.hex(), "me": str(self.me),
                "admin": None if self.admin is None else str(self.admin),
                "members": {str(p): m.to_json() for p, m in self.members.items()},
                "removed": {str(p): why for p, why in self.removed.items()},
                "statements": {str(p): base64.b64encode(raw).decode()
                               for p, raw in self.statements.items()}}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Roster:
        admin = obj["admin"]
        roster = cls(bytes.fromhex(obj["room_id"]), PeerId.parse(obj["me"]),
                     None if admin is None else PeerId.parse(admin),
                     {PeerId.parse(p): Member.from_json(p, m)
                      for p, m in obj["members"].items()},
                     {PeerId.parse(p): str(why) for p, why in obj["removed"].items()},
                     {PeerId.parse(p): base64.b64decode(raw, validate=True)
                      for p, raw in obj.get("statements", {}).items()})
        return roster
