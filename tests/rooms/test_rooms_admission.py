"""The SPAKE2 admission state machines, driven directly (no sockets, no sleeps): the happy
path and every refusal (wrong code, replay, expired, reused, unknown, forged, tampered,
malformed, unexpected, timeout, abort)."""

from __future__ import annotations

import random
from collections.abc import Callable

import msgpack
import pytest

from stack.base.identity import Identity, PeerId
from rooms.admission import (Admitted, AdmissionFailed, InviterSession, Kind,
                             NewcomerSession, ReplayGuard, Role, sign_admission,
                             verify_admission)
from rooms.errors import (AdmissionAborted, AdmissionTimeout, ForgedAdmission,
                          InviteExpired, InviteUnknown, InviteUsed, MalformedMessage,
                          ReplayedTranscript, TamperedMessage, UnexpectedMessage, WrongCode)
from rooms.invites import InviteBook, InviteCode
from rooms.names import room_id
from rooms.words import WORDS

RID = room_id("book-club")
INVITER = Identity.from_seed(bytes([1]) * 32)
NEWCOMER = Identity.from_seed(bytes([2]) * 32)
MALLORY = Identity.from_seed(bytes([3]) * 32)
T0 = 1_000_000.0

Tamper = Callable[[int, bytes], bytes]


def book() -> InviteBook:
    return InviteBook(entropy=random.Random(5).randbytes)


def wrong(code: InviteCode) -> InviteCode:
    other = WORDS[(WORDS.index(code.words[0]) + 1) % 256]
    return InviteCode(code.number, (other, *code.words[1:]))


def run(newcomer: NewcomerSession, make_inviter: Callable[[bytes], InviterSession],
        tamper: Tamper | None = None, now: float = T0 + 1) -> tuple[InviterSession, list]:
    """Pump messages both ways until neither side has more; ``tamper(kind, data)`` sees
    (and may change) every message on the way, as a rendezvous could."""
    def t(data: bytes) -> bytes:
        kind = msgpack.unpackb(data)[0]
        return tamper(kind, data) if tamper is not None else data

    wire: list[bytes] = []
    [first] = newcomer.outgoing()
    wire.append(first)
    inviter = make_inviter(t(first))
    while True:
        moved = False
        for m in inviter.outgoing():
            wire.append(m)
            newcomer.receive(t(m), now)
            moved = True
        for m in newcomer.outgoing():
            wire.append(m)
            inviter.receive(t(m), now)
            moved = True
        if not moved:
            return inviter, wire


def flip(kind: int, index: int = -1) -> Tamper:
    def tamper(k: int, data: bytes) -> bytes:
        if k != kind:
            return data
        obj = msgpack.unpackb(data)
        field = bytearray(obj[index])
        field[len(field) // 2] ^= 0x01
        obj[index] = bytes(field)
        return msgpack.packb(obj, use_bin_type=True)
    return tamper


def events(session) -> list:
    out = []
    while (e := session.next_event()) is not None:
        out.append(e)
    return out


def setup(code_for_newcomer: Callable[[InviteCode], InviteCode] = lambda c: c, **kw):
    b = book()
    invite = b.create(RID, T0)
    guard = ReplayGuard()
    rng = random.Random(kw.pop("seed", 11))  # the SPAKE2 scalars: runs are reproducible
    newcomer = NewcomerSession(NEWCOMER, RID, code_for_newcomer(invite.code), T0,
                               entropy=rng.randbytes)
    make = kw.pop("make", None) or (lambda first: InviterSession(
        INVITER, b, guard, first, T0 + 1, room_id=RID, entropy=rng.randbytes))
    return b, invite, guard, newcomer, make


def failure(session) -> Exception:
    [event] = events(session)
    assert isinstance(event, AdmissionFailed)
    return event.error


# ------------------------------------------------------------------------ success

def test_matching_codes_admit_with_a_bound_signed_admission() -> None:
    b, invite, _, newcomer, make = setup()
    inviter, wire = run(newcomer, make)
    [got] = events(newcomer)
    [gave] = events(inviter)
    assert isinstance(got, Admitted) and isinstance(gave, Admitted)
    assert got.role is Role.NEWCOMER and gave.role is Role.INVITER
    assert got.peer_id == INVITER.peer_id and gave.peer_id == NEWCOMER.peer_id
    assert got.admission == gave.admission
    adm = got.admission
    assert (adm.room_id, adm.newcomer, adm.inviter) == (RID, NEWCOMER.peer_id, INVITER.peer_id)
    assert verify_admission(adm.raw, room_id=RID, newcomer=NEWCOMER.peer_id,
                            inviter=INVITER.peer_id) == adm
    assert [msgpack.unpackb(m)[0] for m in wire] == [1, 2, 3, 4]
    assert b.get(RID, invite.number).outcome == "admitted"
    assert newcomer.done and inviter.done and newcomer.next_timer() is None
    # nothing on the wire names the code's words
    assert not any(w.encode() in m for m in wire for w in invite.code.words)


# ------------------------------------------------------------------- wrong code etc

def test_a_wrong_code_burns_the_invite_and_the_inviter_reports_it() -> None:
    b, invite, guard, newcomer, make = setup(wrong)
    inviter, _ = run(newcomer, make)
    assert isinstance(failure(inviter), WrongCode)        # the inviter's own report
    assert isinstance(failure(newcomer), WrongCode)       # from the inviter's abort
    assert b.get(RID, invite.number).outcome == "wrong_code"
    # the right code afterwards: the invite is spent (one guess per invite)
    retry = NewcomerSession(NEWCOMER, RID, invite.code, T0 + 2)
    inviter2, _ = run(retry, lambda first: InviterSession(INVITER, b, guard, first, T0 + 2))
    assert isinstance(failure(inviter2), InviteUsed)
    assert isinstance(failure(retry), InviteUsed)


def test_reusing_a_spent_invite_is_invite_used() -> None:
    b, invite, guard, newcomer, make = setup()
    run(newcomer, make)
    again = NewcomerSession(MALLORY, RID, invite.code, T0 + 2)
    inviter, _ = run(again, lambda first: InviterSession(INVITER, b, guard, first, T0 + 2))
    assert isinstance(failure(inviter), InviteUsed)
    assert isinstance(failure(again), InviteUsed)


def test_an_expired_invite() -> None:
    b, _invite, guard, newcomer, _ = setup()
    late = T0 + 601
    inviter, _ = run(newcomer, lambda first: InviterSession(INVITER, b, guard, first, late))
    assert isinstance(failure(inviter), InviteExpired)
    assert isinstance(failure(newcomer), InviteExpired)


def test_an_unknown_number() -> None:
    b, invite, guard, _, _ = setup()
    newcomer = NewcomerSession(NEWCOMER, RID, InviteCode(99, invite.code.words), T0)
    inviter, _ = run(newcomer, lambda first: InviterSession(INVITER, b, guard, first, T0))
    assert isinstance(failure(inviter), InviteUnknown)
    assert not b.get(RID, invite.number).used


def test_another_room_never_completes() -> None:
    b, invite, guard, _, _ = setup()
    other = NewcomerSession(NEWCOMER, room_id("other"), invite.code, T0)
    inviter, _ = run(other, lambda first: InviterSession(INVITER, b, guard, first, T0,
                                                         room_id=RID))
    assert isinstance(failure(inviter), MalformedMessage)
    assert not b.get(RID, invite.number).used


# ------------------------------------------------------------------------- replay

def test_a_replayed_transcript_is_refused_without_spending_anything() -> None:
    b, _invite, guard, newcomer, make = setup()
    _, wire = run(newcomer, make)
    fresh = b.create(RID, T0 + 2)  # a new invite: the replay must not get it either
    pake1, _, pake3, _ = wire
    # the recorded first message, its number rewritten to the fresh invite
    obj = msgpack.unpackb(pake1)
    obj[2] = fresh.number
    for first in (pake1, msgpack.packb(obj, use_bin_type=True)):
        replay = InviterSession(INVITER, b, guard, first, T0 + 3)
        replay.receive(pake3, T0 + 3)
        assert isinstance(failure(replay), ReplayedTranscript)
    assert not b.get(RID, fresh.number).used


def test_a_replayed_reply_is_refused_by_the_newcomer() -> None:
    guard = ReplayGuard()
    b, _invite, _, newcomer, make = setup()
    _, wire = run(newcomer, make)
    second = b.create(RID, T0)
    guard.check_and_add(msgpack.unpackb(wire[1])[1], T0)  # the newcomer saw that PAKE2
    n2 = NewcomerSession(NEWCOMER, RID, second.code, T0, guard=guard)
    n2.outgoing()
    n2.receive(wire[1], T0 + 1)
    assert isinstance(failure(n2), ReplayedTranscript)


def test_replay_guard_forgets_after_its_ttl_and_stays_bounded() -> None:
    g = ReplayGuard(ttl=10.0, max_entries=2)
    assert g.check_and_add(b"a", 0.0) and not g.check_and_add(b"a", 5.0)
    assert g.check_and_add(b"a", 10.0)  # forgotten, then seen anew
    g.check_and_add(b"b", 11.0)
    g.check_and_add(b"c", 11.0)  # pushes out the oldest
    assert len(g._seen) == 2


# -------------------------------------------------------- tampering and forgeries

@pytest.mark.parametrize("kind, index, inviter_error, newcomer_error", [
    # spake_a: a flipped point is off the group (malformed) or another one (keys differ)
    (Kind.PAKE1, 3, (MalformedMessage, WrongCode), (MalformedMessage, WrongCode)),
    (Kind.PAKE3, 1, WrongCode, WrongCode),        # confirm_a
    (Kind.PAKE3, 2, TamperedMessage, TamperedMessage),  # box_a
])
def test_tampering_before_admission_fails_both_sides(kind, index, inviter_error,
                                                     newcomer_error) -> None:
    _b, _invite, _, newcomer, make = setup()
    inviter, _ = run(newcomer, make, flip(kind, index))
    assert isinstance(failure(inviter), inviter_error)
    assert isinstance(failure(newcomer), newcomer_error)


def test_a_tampered_spake_b_fails_and_nobody_is_admitted() -> None:
    _b, _invite, _, newcomer, make = setup()
    inviter, _ = run(newcomer, make, flip(Kind.PAKE2, 1))
    # a flipped point is either off the curve (malformed) or another point (keys differ)
    assert isinstance(failure(newcomer), (MalformedMessage, WrongCode))
    assert isinstance(failure(inviter), (AdmissionAborted, MalformedMessage, WrongCode))


@pytest.mark.parametrize("index, error", [(1, WrongCode), (2, TamperedMessage)])
def test_a_tampered_admit_fails_the_newcomer(index, error) -> None:
    _b, _invite, _, newcomer, make = setup()
    inviter, _ = run(newcomer, make, flip(Kind.ADMIT, index))
    assert isinstance(failure(newcomer), error)
    [gave] = events(inviter)  # the inviter admitted the right peer: the one with the code
    assert isinstance(gave, Admitted) and gave.peer_id == NEWCOMER.peer_id


class DishonestInviter(InviterSession):
    """Knows the code but signs an admission the newcomer did not agree to."""

    forge: Callable[[InviterSession, PeerId, float], bytes]

    def _admission_for(self, newcomer: PeerId, now: float) -> bytes:
        return type(self).forge(self, newcomer, now)


@pytest.mark.parametrize("forge", [
    lambda s, n, now: sign_admission(INVITER, RID, MALLORY.peer_id, now, s._th),
    lambda s, n, now: sign_admission(INVITER, room_id("other"), n, now, s._th),
    lambda s, n, now: sign_admission(INVITER, RID, n, now, bytes(32)),
    lambda s, n, now: (lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]))(
        sign_admission(INVITER, RID, n, now, s._th)),
    lambda s, n, now: b"not an admission",
], ids=["other-newcomer", "other-room", "other-session", "bad-signature", "garbage"])
def test_a_forged_admission_is_refused(forge) -> None:
    b, _invite, guard, newcomer, _ = setup()
    cls = type("Forger", (DishonestInviter,), {"forge": staticmethod(forge)})
    run(newcomer, lambda first: cls(INVITER, b, guard, first, T0 + 1))
    assert isinstance(failure(newcomer), ForgedAdmission)


def test_verify_admission_checks_every_binding() -> None:
    raw = sign_admission(INVITER, RID, NEWCOMER.peer_id, T0, bytes(32))
    verify_admission(raw, room_id=RID, newcomer=NEWCOMER.peer_id, inviter=INVITER.peer_id,
                     session=bytes(32))
    for kwargs in ({"room_id": room_id("x")}, {"newcomer": MALLORY.peer_id},
                   {"inviter": MALLORY.peer_id}, {"session": bytes([1]) * 32}):
        with pytest.raises(ForgedAdmission):
            verify_admission(raw, **kwargs)
    # an admission naming an inviter other than its signer
    from rooms.signed import ADMISSION_TYPE, pack, seal
    payload = pack((RID, NEWCOMER.peer_id.multihash, INVITER.peer_id.multihash, 0, bytes(32)))
    with pytest.raises(ForgedAdmission, match="not signed by"):
        verify_admission(seal(MALLORY, ADMISSION_TYPE, payload))


# --------------------------------------------------- malformed, unexpected, timers

def test_garbage_first_message_spends_nothing() -> None:
    b, invite, guard, _, _ = setup()
    s = InviterSession(INVITER, b, guard, b"\x93\x01\x02\x03", T0)
    assert isinstance(failure(s), MalformedMessage)
    assert msgpack.unpackb(s.outgoing()[0]) == [0, "malformed_message"]
    assert not b.get(RID, invite.number).used


def test_a_point_off_the_curve_is_malformed() -> None:
    b, invite, guard, _newcomer, _ = setup()
    first = msgpack.packb([1, RID, invite.number, b"A" + b"\x00" * 32], use_bin_type=True)
    s = InviterSession(INVITER, b, guard, first, T0)
    assert isinstance(failure(s), MalformedMessage)


def test_out_of_order_messages_are_unexpected() -> None:
    _b, invite, _guard, newcomer, make = setup()
    [first] = newcomer.outgoing()
    inviter = make(first)
    inviter.outgoing()
    inviter.receive(first, T0 + 1)  # a second PAKE1 into a running session
    assert isinstance(failure(inviter), UnexpectedMessage)
    n2 = NewcomerSession(NEWCOMER, RID, invite.code, T0)
    n2.receive(msgpack.packb([4, bytes(32), b"x"], use_bin_type=True), T0)
    assert isinstance(failure(n2), UnexpectedMessage)


def test_silence_times_out_and_late_messages_are_dropped() -> None:
    _b, _invite, _guard, newcomer, _make = setup()
    assert newcomer.next_timer() == T0 + 30.0
    newcomer.handle_timer(T0 + 29.9)
    assert newcomer.next_event() is None
    newcomer.handle_timer(T0 + 30.0)
    assert isinstance(failure(newcomer), AdmissionTimeout)
    assert newcomer.next_timer() is None
    newcomer.receive(b"late", T0 + 31)
    assert newcomer.dropped == 1 and newcomer.next_event() is None


def test_an_abort_with_an_unknown_reason() -> None:
    _b, _invite, _guard, newcomer, _ = setup()
    newcomer.receive(msgpack.packb([0, "gremlins"]), T0)
    error = failure(newcomer)
    assert isinstance(error, AdmissionAborted) and error.peer_reason == "gremlins"


def test_a_lost_carrier_fails_the_session_once() -> None:
    _b, _invite, _guard, newcomer, make = setup()
    inviter = make(newcomer.outgoing()[0])
    inviter.connection_lost()
    error = failure(inviter)
    assert isinstance(error, AdmissionAborted) and error.peer_reason == "connection lost"
    assert inviter.outgoing()[1:] == []  # PAKE2 was queued; no abort is sent to nobody
    inviter.connection_lost()
    assert inviter.next_event() is None


@pytest.mark.parametrize("kind, index", [(Kind.PAKE1, 3), (Kind.PAKE2, 1)])
def test_every_flipped_byte_of_a_spake_message_fails_cleanly(kind, index) -> None:
    """Off the curve, outside the group, another side's byte or another point: a failed
    admission on both sides, never an exception or an admission."""
    for position in range(33):
        def tamper(k: int, data: bytes, position=position) -> bytes:
            if k != kind:
                return data
            obj = msgpack.unpackb(data)
            field = bytearray(obj[index])
            field[position] ^= 0x01
            obj[index] = bytes(field)
            return msgpack.packb(obj, use_bin_type=True)
        _b, _invite, _guard, newcomer, make = setup(seed=position)
        inviter, _ = run(newcomer, make, tamper)
        assert isinstance(events(newcomer)[-1], AdmissionFailed), position
        assert isinstance(events(inviter)[-1], AdmissionFailed), position
