"""Introductions and welcomes: how members learn of a newcomer from its inviter (seed 002).

After an admission (``rooms.admission``) the newcomer reaches its inviter on a direct,
authenticated connection; the inviter answers with a **welcome** (who the room's admin is
and who its members are, each with the admission that let it in) and tells every other
member about the newcomer with an **introduction**, on *their* direct connections, never
through the rendezvous ("to avoid MITM"). Each member then checks the newcomer for itself
before connecting to it: the admission inside the introduction must be the inviter's
signature over (this room, the newcomer's peer id), and the inviter must be a member this
member verified. The connection it then dials by peer id proves the newcomer holds that
key.

Both are signed by the inviter (``rooms.signed``'s envelope, domains of their own):

=============  ===========================  =============================================
record         payload_type                 payload (msgpack array)
=============  ===========================  =============================================
introduction   ``/p2pstack/room-intro/1``   ``[room_id, admission, addrs[str], issued_ms]``
welcome        ``/p2pstack/room-welcome/1`` ``[room_id, admin(38), members, issued_ms]``;
                                            members: ``[[peer(38), admission | b"",
                                            addrs[str]], ...]`` (the admin's admission is
                                            empty: nobody admitted it)
=============  ===========================  =============================================

Rules of ``verify_intro`` (each refusal named; the node counts them):

1. framing, a signature that fails, a record of another type or room, an admission that is
   not the signer's over the named newcomer: ``ForgedIntroduction``;
2. the record not signed by the peer whose connection carried it (an introduction is
   first-hand, so a forwarder cannot pass on what it heard): ``ForgedIntroduction``;
3. the signer is not a member we verified: ``NotAMember``;
4. the newcomer was removed from the room: ``PeerRemoved``.

``verify_welcome`` checks the signer is who admitted us, the admin appears with no
admission, and every other member's admission is signed by a member of the list (the
chain back to the admin): ``ForgedIntroduction`` otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from stack.base.errors import RemoteError
from stack.base.identity import PEER_ID_LENGTH, Identity, PeerId, verify_signature
from stack.base.records import signed_bytes
from rooms.admission import Admission, verify_admission
from rooms.errors import BadSignature, ForgedAdmission, MalformedMessage, RoomError
from rooms.membership import MAX_MEMBER_ADDRS
from rooms.signed import pack, unpack

__all__ = ["IntroductionError", "ForgedIntroduction", "NotAMember", "PeerRemoved",
           "INTRO_TYPE", "WELCOME_TYPE", "VOUCH_TYPE", "REMOVAL_TYPE", "Introduction",
           "Welcome", "WelcomeMember",
           "sign_intro", "verify_intro", "sign_welcome", "verify_welcome", "seal_record",
           "open_record", "MAX_INTRO", "MAX_WELCOME", "peer_bytes", "to_peer", "check_addrs"]

MAX_INTRO = 2048       # bytes
MAX_WELCOME = 48 * 1024  # bytes: up to 64 members with an admission and 8 addresses each

INTRO_TYPE = b"/p2pstack/room-intro/1"
WELCOME_TYPE = b"/p2pstack/room-welcome/1"
VOUCH_TYPE = b"/p2pstack/room-vouch/1"
REMOVAL_TYPE = b"/p2pstack/room-removal/1"
_DOMAINS = {
    INTRO_TYPE: b"p2pstack-room-intro",
    WELCOME_TYPE: b"p2pstack-room-welcome",
    VOUCH_TYPE: b"p2pstack-room-vouch",
    REMOVAL_TYPE: b"p2pstack-room-removal",
}


class IntroductionError(RemoteError, RoomError):
    """A room statement (introduction, welcome, vouch, removal) that was refused;
    ``reason`` is its name on the wire and in counters."""

    reason = "refused"


class ForgedIntroduction(IntroductionError):
    reason = "forged_introduction"


class NotAMember(IntroductionError):
    reason = "not_member"


class PeerRemoved(IntroductionError):
    reason = "removed"


# ----------------------------------------------------------------- signed envelopes

def seal_record(identity: Identity, payload_type: bytes, payload: bytes) -> bytes:
    sig = identity.sign(signed_bytes(_DOMAINS[payload_type], payload_type, payload))
    return pack((identity.public_key, payload_type, payload, sig))


def open_record(data: bytes, payload_type: bytes, max_size: int,
                error: type[IntroductionError] = ForgedIntroduction) -> tuple[PeerId, tuple[
                    object, ...]]:
    """(signer, payload fields) of an envelope of ``payload_type``; ``error`` for bad
    framing, another type, or a signature that fails."""
    try:
        obj = unpack(data, "room record", max_size)
        if len(obj) != 4:
            raise MalformedMessage("room record: not 4 fields")
        pk, ptype, payload, sig = obj
        if (type(pk) is not bytes or len(pk) != 32 or type(sig) is not bytes
                or len(sig) != 64 or type(payload) is not bytes or type(ptype) is not bytes):
            raise MalformedMessage("room record: field types")
        if ptype != payload_type:
            raise MalformedMessage(f"room record: a {ptype!r}, not a {payload_type!r}")
        if not verify_signature(pk, signed_bytes(_DOMAINS[payload_type], ptype, payload), sig):
            raise BadSignature("room record: the signature does not verify")
        fields = unpack(payload, "room record payload", max_size)
    except (MalformedMessage, BadSignature) as exc:
        raise error(str(exc)) from None
    return PeerId.from_public_key(pk), fields


def peer_bytes(peer: PeerId) -> bytes:
    return peer.multihash


def to_peer(value: object, what: str) -> PeerId:
    if type(value) is not bytes or len(value) != PEER_ID_LENGTH:
        raise ForgedIntroduction(f"{what}: not a peer id")
    try:
        return PeerId.from_bytes(value)
    except ValueError:
        raise ForgedIntroduction(f"{what}: not a peer id") from None


def check_addrs(value: object, what: str) -> tuple[str, ...]:
    if (type(value) is not tuple or len(value) > MAX_MEMBER_ADDRS
            or any(type(a) is not str or not 0 < len(a) <= 255 for a in value)):
        raise ForgedIntroduction(f"{what}: addresses")
    return value


def _admission(raw: object, room_id: bytes, newcomer: PeerId | None = None,
               inviter: PeerId | None = None) -> Admission:
    if type(raw) is not bytes:
        raise ForgedIntroduction("the admission is not bytes")
    try:
        return verify_admission(raw, room_id=room_id, newcomer=newcomer, inviter=inviter)
    except ForgedAdmission as exc:
        raise ForgedIntroduction(f"the admission inside: {exc}") from None


# ---------------------------------------------------------------------- introduction

@dataclass(frozen=True, slots=True)
class Introduction:
    """A verified introduction: ``admission.inviter`` admitted ``admission.newcomer``."""

    room_id: bytes
    admission: Admission
    addrs: tuple[str, ...]
    issued_ms: int

    @property
    def newcomer(self) -> PeerId:
        return self.admission.newcomer

    @property
    def inviter(self) -> PeerId:
        return self.admission.inviter


def sign_intro(identity: Identity, room_id: bytes, admission: bytes,
               addrs: Iterable[str], now: float) -> bytes:
    return seal_record(identity, INTRO_TYPE, pack(
        (room_id, admission, tuple(addrs)[:MAX_MEMBER_ADDRS], int(now * 1000))))


def verify_intro(data: bytes, *, room_id: bytes, sender: PeerId,
                 members: Iterable[PeerId], removed: Iterable[PeerId] = ()) -> Introduction:
    """The introduction in ``data`` carried by ``sender``'s connection (rules above)."""
    signer, fields = open_record(data, INTRO_TYPE, MAX_INTRO)
    if len(fields) != 4:
        raise ForgedIntroduction("introduction: not 4 fields")
    rid, raw, addrs, issued = fields
    if rid != room_id:
        raise ForgedIntroduction("introduction: for another room")
    if type(issued) is not int or issued < 0:
        raise ForgedIntroduction("introduction: time")
    admission = _admission(raw, room_id, inviter=signer)
    if signer != sender:
        raise ForgedIntroduction("introduction: not first-hand (signed by another peer than "
                                 "the one who sent it)")
    if signer not in set(members):
        raise NotAMember(f"introduction by {signer}, who is not a member we verified")
    if admission.newcomer in set(removed):
        raise PeerRemoved(f"{admission.newcomer} was removed from the room")
    return Introduction(room_id, admission, check_addrs(addrs, "introduction"), issued)


# --------------------------------------------------------------------------- welcome

@dataclass(frozen=True, slots=True)
class WelcomeMember:
    peer_id: PeerId
    admission: Admission | None   # None for the admin
    addrs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Welcome:
    room_id: bytes
    admin: PeerId
    members: tuple[WelcomeMember, ...] = field(default=())


def sign_welcome(identity: Identity, room_id: bytes, admin: PeerId,
                 members: Iterable[tuple[PeerId, bytes | None, Iterable[str]]],
                 now: float) -> bytes:
    rows = tuple((peer_bytes(p), a or b"", tuple(addrs)[:MAX_MEMBER_ADDRS])
                 for p, a, addrs in members)
    return seal_record(identity, WELCOME_TYPE,
                       pack((room_id, peer_bytes(admin), rows, int(now * 1000))))


def verify_welcome(data: bytes, *, room_id: bytes, inviter: PeerId) -> Welcome:
    signer, fields = open_record(data, WELCOME_TYPE, MAX_WELCOME)
    if signer != inviter:
        raise ForgedIntroduction("welcome: not from the member who admitted us")
    if len(fields) != 4 or fields[0] != room_id or type(fields[2]) is not tuple:
        raise ForgedIntroduction("welcome: shape or room")
    admin = to_peer(fields[1], "welcome admin")
    members: list[WelcomeMember] = []
    for row in fields[2]:
        if type(row) is not tuple or len(row) != 3:
            raise ForgedIntroduction("welcome: a member row")
        peer = to_peer(row[0], "welcome member")
        if peer == admin:
            if row[1] != b"":
                raise ForgedIntroduction("welcome: the admin was admitted by nobody")
            admission = None
        else:
            admission = _admission(row[1], room_id, newcomer=peer)
        members.append(WelcomeMember(peer, admission, check_addrs(row[2], "welcome")))
    ids = {m.peer_id for m in members}
    if admin not in ids or inviter not in ids:
        raise ForgedIntroduction("welcome: the admin and the inviter are members")
    for m in members:
        if m.admission is not None and m.admission.inviter not in ids:
            raise ForgedIntroduction(f"welcome: {m.peer_id} was admitted by a non-member")
    return Welcome(room_id, admin, tuple(members))
