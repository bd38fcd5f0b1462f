"""The rooms package's errors: one root, local and remote branches (DESIGN.md section 9).

Every refusal has its own name, so the CLI, the events and the tests say *which* rule
refused, never just "failed". A core never raises these for remote data: it reports them
inside an ``AdmissionFailed`` event or returns them as a verdict; the node's drivers and
the CLI raise them.

====================  ======  =============================================================
error                 side    meaning
====================  ======  =============================================================
InvalidRoomName       local   empty, too long, or not printable
InvalidInviteCode     local   not ``NUMBER-WORD-WORD...`` with words from the list (a typo
                              is caught here, before it burns the invite)
InviteUnknown         remote  no open invite has that number in that room
InviteExpired         remote  the invite's time ran out before anyone used it
InviteUsed            remote  the invite was already spent (one use, right or wrong)
WrongCode             remote  the PAKE keys differ: the code did not match, or a PAKE
                              message was altered on the way (the two are the same to
                              the PAKE, which is the point)
ReplayedTranscript    remote  a PAKE message seen before (a recorded session replayed)
TamperedMessage       remote  a message sealed under the agreed key fails to open: it
                              was altered on the way after the keys matched
ForgedAdmission       remote  an admission whose signature, room, newcomer or inviter is
                              not what this session agreed on
MalformedMessage      remote  bytes that are not a rooms message of the expected shape
UnexpectedMessage     remote  a well-formed message in the wrong state of the exchange
AdmissionTimeout      remote  the other side went quiet before the exchange finished
AdmissionAborted      remote  the other side gave up and said why (``reason``)
InvalidPin            local   a typed PIN that is not the challenge's number of digits
                              (caught before it is sent, so it is not the one guess)
WrongPin              remote  the newcomer's PIN is not the one the inviter's node showed
NoPin                 remote  the inviter asked for a PIN and none came in time (or the
                              newcomer's user gave none)
ReplayedPin           remote  a PIN message seen before (one recorded from another
                              session and sent again)
BadSignature          remote  a signed membership announcement whose signature fails
AnnouncementExpired   remote  a membership announcement past its expiry
AnnouncementTooLong   remote  a membership announcement whose expiry is further away
                              than ``MAX_MEMBER_TTL`` (or issued in the future)
RoomFull              remote  a rendezvous bound (rooms, members per room) is reached
ForgedRoomRecord      remote  a room's DHT record whose framing or signature fails, or that
                              names another room than the key it was found under
RoomRecordExpired     remote  a room's DHT record past its expiry (or whose expiry is
                              further away than ``MAX_RECORD_TTL``, or issued in the future)
RoomNotFound          remote  no valid record under the room's DHT key (nobody published
                              one, or none of those offered was valid)
====================  ======  =============================================================
"""

from __future__ import annotations

from stack.base.errors import RemoteError, StackError, UsageError

__all__ = [
    "RoomError", "InvalidRoomName", "InvalidInviteCode", "AdmissionError",
    "InviteUnknown", "InviteExpired", "InviteUsed", "WrongCode", "ReplayedTranscript",
    "TamperedMessage", "ForgedAdmission", "MalformedMessage", "UnexpectedMessage",
    "AdmissionTimeout", "AdmissionAborted", "InvalidPin", "WrongPin", "NoPin", "ReplayedPin",
    "MembershipError", "BadSignature",
    "AnnouncementExpired", "AnnouncementTooLong", "RoomFull", "RoomRecordError",
    "ForgedRoomRecord", "RoomRecordExpired", "RoomNotFound", "ABORT_REASONS",
]


class RoomError(StackError):
    """Root of the rooms package's errors."""


class InvalidRoomName(UsageError, RoomError):
    """A room name that cannot be used."""


class InvalidInviteCode(UsageError, RoomError):
    """A code that is not ``NUMBER-WORD-WORD...`` with words from the list."""


class AdmissionError(RemoteError, RoomError):
    """An admission that did not happen. ``reason`` is the short name used on the wire
    (in an abort message) and in events."""

    reason = "failed"


class InviteUnknown(AdmissionError):
    reason = "invite_unknown"


class InviteExpired(AdmissionError):
    reason = "invite_expired"


class InviteUsed(AdmissionError):
    reason = "invite_used"


class WrongCode(AdmissionError):
    reason = "wrong_code"


class ReplayedTranscript(AdmissionError):
    reason = "replayed_transcript"


class TamperedMessage(AdmissionError):
    reason = "tampered_message"


class ForgedAdmission(AdmissionError):
    reason = "forged_admission"


class MalformedMessage(AdmissionError):
    reason = "malformed_message"


class UnexpectedMessage(AdmissionError):
    reason = "unexpected_message"


class AdmissionTimeout(AdmissionError):
    reason = "timeout"


class AdmissionAborted(AdmissionError):
    """The other side aborted; ``peer_reason`` is the reason it gave (claimed: an abort
    is not authenticated, so a rendezvous can forge one; it can only deny service)."""

    reason = "aborted"

    def __init__(self, peer_reason: str) -> None:
        self.peer_reason = peer_reason
        super().__init__(f"the other side aborted: {peer_reason}")


class InvalidPin(UsageError, RoomError):
    """A PIN that is not the digits the challenge asks for."""


class WrongPin(AdmissionError):
    reason = "wrong_pin"


class NoPin(AdmissionError):
    reason = "no_pin"


class ReplayedPin(AdmissionError):
    reason = "replayed_pin"


class MembershipError(RemoteError, RoomError):
    """A membership announcement that was refused."""

    reason = "refused"


class BadSignature(MembershipError):
    reason = "bad_signature"


class AnnouncementExpired(MembershipError):
    reason = "expired"


class AnnouncementTooLong(MembershipError):
    reason = "expiry_too_far"


class RoomFull(MembershipError):
    reason = "room_full"


class RoomRecordError(RemoteError, RoomError):
    """A room's DHT record that was refused, or none found."""

    reason = "room_record_refused"


class ForgedRoomRecord(RoomRecordError):
    reason = "forged_room_record"


class RoomRecordExpired(RoomRecordError):
    reason = "room_record_expired"


class RoomNotFound(RoomRecordError):
    reason = "room_not_found"


#: abort reasons an inviter may send (an unknown one reads as ``AdmissionAborted``)
ABORT_REASONS: dict[str, type[AdmissionError]] = {
    cls.reason: cls for cls in (InviteUnknown, InviteExpired, InviteUsed, WrongCode,
                                ReplayedTranscript, TamperedMessage, ForgedAdmission,
                                MalformedMessage, UnexpectedMessage, AdmissionTimeout,
                                WrongPin, NoPin, ReplayedPin)
}

