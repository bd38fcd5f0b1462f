"""Invite codes and the inviter's book of open invites (magic-wormhole style).

A code reads ``7-guitar-orbit``: a number, then words from ``rooms.words`` (8 bits each,
``DEFAULT_WORDS`` = 2 of them, as wormhole's default). The **number** is public: it
selects the invite, so the inviter knows which PAKE to run (wormhole's nameplate); a
rendezvous allocates it and sees it. The **words** are the password; the PAKE runs on the
whole code text, so nothing the rendezvous sees helps guess them. 16 bits are enough
because an attacker gets one guess per invite (a wrong guess burns it, and the inviter
reports it) and an invite lives ``DEFAULT_INVITE_TTL`` seconds.

Rules, in the order ``InviteBook.claim`` checks them:

1. the number names an invite of this room that the book ever issued, else ``InviteUnknown``;
2. it was not used (a claim of any outcome uses it), else ``InviteUsed``;
3. ``now`` is before its expiry, else ``InviteExpired``.

Spent and expired invites stay in the book as tombstones (so a second try reads
``InviteUsed``, not ``InviteUnknown``) until ``expire(now)`` drops them one TTL after
their expiry, or a new invite takes their number (a rendezvous reuses numbers, though
not within a TTL of their release); the book holds at most ``MAX_OPEN_INVITES`` live ones.

Times are Unix seconds (``now``, the clock's wall time: an expiry is shown to people).
Randomness is ``entropy(n) -> bytes`` (``os.urandom``; tests inject a seeded one).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from rooms.errors import (InvalidInviteCode, InviteExpired, InviteUnknown, InviteUsed,
                          RoomError)
from rooms.words import WORD_INDEX, WORDS

__all__ = ["InviteCode", "Invite", "InviteBook", "parse_code", "DEFAULT_WORDS",
           "DEFAULT_INVITE_TTL", "MAX_INVITE_NUMBER", "MAX_OPEN_INVITES", "MAX_WORDS"]

DEFAULT_WORDS = 2
MAX_WORDS = 8
DEFAULT_INVITE_TTL = 600.0   # seconds (10 minutes)
MAX_INVITE_NUMBER = 9999
MAX_OPEN_INVITES = 64        # live invites per book
_CODE = re.compile(r"^([1-9][0-9]{0,3})((?:-[a-z]+){1,8})$")


@dataclass(frozen=True, slots=True)
class InviteCode:
    """``number`` selects the invite; ``words`` are the password."""

    number: int
    words: tuple[str, ...]

    def __str__(self) -> str:
        return "-".join((str(self.number), *self.words))

    @property
    def password(self) -> bytes:
        """What the PAKE runs on: the canonical code text."""
        return str(self).encode("ascii")


def parse_code(text: str) -> InviteCode:
    """``"7-guitar-orbit"`` -> ``InviteCode``; ``InvalidInviteCode`` for anything else
    (spaces become dashes and case is folded, as people type codes)."""
    if not isinstance(text, str):
        raise InvalidInviteCode("an invite code is text")
    cleaned = "-".join(text.strip().lower().replace(" ", "-").split("-"))
    cleaned = re.sub("-+", "-", cleaned)
    m = _CODE.match(cleaned)
    if m is None:
        raise InvalidInviteCode(f"an invite code reads NUMBER-WORD-WORD (e.g. 7-guitar-orbit), "
                                f"not {text!r}")
    words = tuple(m.group(2)[1:].split("-"))
    unknown = [w for w in words if w not in WORD_INDEX]
    if unknown:
        raise InvalidInviteCode(f"not a code word: {', '.join(unknown)} (check the spelling; "
                                f"a mistyped code is caught here and does not use the invite)")
    return InviteCode(int(m.group(1)), words)


@dataclass(slots=True)
class Invite:
    """One invite the inviter issued. ``used`` once any PAKE was run for it."""

    room_id: bytes
    code: InviteCode
    created_at: float
    expires_at: float
    used: bool = False
    outcome: str | None = None   # "admitted" or an error's reason, once used
    pin: bool = False            # admit only on the PIN the inviter's node shows (rooms.pin)

    @property
    def number(self) -> int:
        return self.code.number


@dataclass
class InviteBook:
    """The invites this node issued, by (room id, number)."""

    entropy: Callable[[int], bytes] = os.urandom
    ttl: float = DEFAULT_INVITE_TTL
    words: int = DEFAULT_WORDS
    max_open: int = MAX_OPEN_INVITES
    _invites: dict[tuple[bytes, int], Invite] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= self.words <= MAX_WORDS:
            raise InvalidInviteCode(f"an invite code has 1..{MAX_WORDS} words")

    def next_number(self, room_id: bytes) -> int:
        """The lowest number not held by a live or tombstoned invite of the room (the
        number when no rendezvous allocates one)."""
        taken = {n for (r, n) in self._invites if r == room_id}
        n = 1
        while n in taken:
            n += 1
        return n

    def create(self, room_id: bytes, now: float, number: int | None = None,
               ttl: float | None = None, pin: bool = False) -> Invite:
        """A fresh invite; ``number`` is the rendezvous's allocation (None: our own);
        ``pin``: the admission also needs the PIN challenge (``rooms.pin``)."""
        self.expire(now)
        if sum(1 for i in self._invites.values() if not i.used and i.expires_at > now) \
                >= self.max_open:
            raise RoomError(f"at most {self.max_open} open invites at once")
        if number is None:
            number = self.next_number(room_id)
        if not 1 <= number <= MAX_INVITE_NUMBER:
            raise InvalidInviteCode(f"an invite number is 1..{MAX_INVITE_NUMBER}")
        old = self._invites.get((room_id, number))
        if old is not None and not old.used and old.expires_at > now:
            raise RoomError(f"invite number {number} is already in use in this room")
        # a spent or expired invite's number may come back from a rendezvous: the new
        # invite replaces its tombstone
        raw = self.entropy(self.words)
        code = InviteCode(number, tuple(WORDS[b] for b in raw))
        life = self.ttl if ttl is None else ttl
        invite = Invite(room_id, code, now, now + life, pin=pin)
        self._invites[(room_id, number)] = invite
        return invite

    def get(self, room_id: bytes, number: int) -> Invite | None:
        return self._invites.get((room_id, number))

    def claim(self, room_id: bytes, number: int, now: float) -> Invite:
        """Spend the invite for one PAKE attempt (see the rules above)."""
        invite = self._invites.get((room_id, number))
        if invite is None:
            raise InviteUnknown(f"no invite number {number} in this room")
        if invite.used:
            raise InviteUsed(f"invite {number} was already used ({invite.outcome})")
        if now >= invite.expires_at:
            invite.used, invite.outcome = True, InviteExpired.reason
            raise InviteExpired(f"invite {number} expired")
        invite.used = True
        return invite

    def settle(self, invite: Invite, outcome: str) -> None:
        invite.outcome = outcome

    def open_invites(self, now: float) -> list[Invite]:
        return [i for i in self._invites.values() if not i.used and i.expires_at > now]

    def expire(self, now: float) -> None:
        """Drop tombstones one TTL after their expiry."""
        for key, invite in list(self._invites.items()):
            if now >= invite.expires_at + self.ttl:
                del self._invites[key]
