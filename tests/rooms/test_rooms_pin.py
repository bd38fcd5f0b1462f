"""The PIN challenge (``rooms.pin``) in the admission state machines, driven directly (no
sockets, no sleeps): the right PIN admits; a wrong PIN, no PIN (declined, or the timer),
a replayed PIN message, a PIN message where none is asked for, a tampered challenge are
each refused by name and spend the invite; a mistyped PIN sends nothing."""

from __future__ import annotations

import random

import pytest

from stack.base.identity import Identity
from rooms.admission import (Admitted, AdmissionFailed, InviterSession, NewcomerSession,
                             ReplayGuard, Role)
from rooms.errors import (InvalidPin, NoPin, ReplayedPin, RoomError, TamperedMessage,
                          UnexpectedMessage, WrongPin)
from rooms.invites import InviteBook
from rooms.names import room_id
from rooms.pin import DEFAULT_PIN_DIGITS, PinIssued, PinRequested, draw_pin, normalize_pin
from tests.rooms.test_rooms_admission import flip, run

RID = room_id("book-club")
INVITER = Identity.from_seed(bytes([1]) * 32)
NEWCOMER = Identity.from_seed(bytes([2]) * 32)
T0 = 1_000_000.0


def events(session) -> list:
    out = []
    while (e := session.next_event()) is not None:
        out.append(e)
    return out


class Pair:
    """One PIN invite, its newcomer and the inviter's session, pumped up to the point
    where the newcomer's user is asked for the PIN."""

    def __init__(self, seed: int = 7, guard: ReplayGuard | None = None, pin: bool = True,
                 tamper=None) -> None:
        self.book = InviteBook(entropy=random.Random(seed).randbytes)
        self.invite = self.book.create(RID, T0, pin=pin)
        self.guard = guard if guard is not None else ReplayGuard()
        rng = random.Random(seed + 1)
        self.newcomer = NewcomerSession(NEWCOMER, RID, self.invite.code, T0 + 1,
                                        entropy=rng.randbytes)
        self.inviter, self.wire = run(
            self.newcomer,
            lambda first: InviterSession(INVITER, self.book, self.guard, first, T0 + 1,
                                         room_id=RID, entropy=rng.randbytes),
            tamper=tamper)

    def pump(self, now: float = T0 + 2) -> None:
        while True:
            moved = False
            for m in self.newcomer.outgoing():
                self.wire.append(m)
                self.inviter.receive(m, now)
                moved = True
            for m in self.inviter.outgoing():
                self.wire.append(m)
                self.newcomer.receive(m, now)
                moved = True
            if not moved:
                return


def test_draw_and_normalize() -> None:
    rng = random.Random(1)
    pins = {draw_pin(rng.randbytes) for _ in range(200)}
    assert all(len(p) == DEFAULT_PIN_DIGITS and p.isdigit() for p in pins) and len(pins) > 190
    assert normalize_pin(" 123-456 ", 6) == "123456"
    for bad in ("12345", "1234567", "12a456", "١٢٣٤٥٦", 123456):
        with pytest.raises(InvalidPin):
            normalize_pin(bad, 6)
    with pytest.raises(InvalidPin):
        draw_pin(rng.randbytes, 2)


def test_the_pin_shown_by_the_inviter_admits() -> None:
    p = Pair()
    [issued] = events(p.inviter)
    [asked] = events(p.newcomer)
    assert isinstance(issued, PinIssued) and issued.newcomer == NEWCOMER.peer_id
    assert isinstance(asked, PinRequested) and asked.digits == len(issued.pin) == 6
    assert asked.expires == issued.expires == T0 + 1 + 120
    assert not p.inviter.done and not p.newcomer.done
    # the PIN itself never travels: only a person who was told it can answer
    assert not any(issued.pin.encode() in m for m in p.wire)
    p.newcomer.answer_pin(f"{issued.pin[:3]} {issued.pin[3:]}", T0 + 2)
    p.pump()
    [done] = events(p.inviter)
    [joined] = events(p.newcomer)
    assert isinstance(done, Admitted) and done.peer_id == NEWCOMER.peer_id
    assert isinstance(joined, Admitted) and joined.peer_id == INVITER.peer_id
    assert p.invite.outcome == "admitted"


def test_a_wrong_pin_is_refused_by_name_and_spends_the_invite() -> None:
    p = Pair()
    [issued] = events(p.inviter)
    events(p.newcomer)
    wrong = str((int(issued.pin) + 1) % 10**6).zfill(6)
    p.newcomer.answer_pin(wrong, T0 + 2)
    p.pump()
    [failed] = events(p.inviter)
    assert isinstance(failed, AdmissionFailed) and isinstance(failed.error, WrongPin)
    assert failed.role is Role.INVITER and p.invite.outcome == "wrong_pin"
    assert isinstance(p.newcomer.result, AdmissionFailed)
    assert isinstance(p.newcomer.result.error, WrongPin)  # named by the inviter's abort
    with pytest.raises(RoomError):                          # one guess: nothing waits now
        p.newcomer.answer_pin(issued.pin, T0 + 3)


def test_a_mistyped_pin_sends_nothing_and_is_not_the_guess() -> None:
    p = Pair()
    [issued] = events(p.inviter)
    with pytest.raises(InvalidPin):
        p.newcomer.answer_pin("12", T0 + 2)
    assert p.newcomer.outgoing() == [] and not p.newcomer.done
    p.newcomer.answer_pin(issued.pin, T0 + 2)
    p.pump()
    assert isinstance(p.inviter.result, Admitted)


def test_no_pin_declined_or_timed_out_is_named() -> None:
    p = Pair()
    events(p.inviter)
    p.newcomer.decline_pin()
    p.pump()
    assert isinstance(p.newcomer.result.error, NoPin)
    assert isinstance(p.inviter.result.error, NoPin) and p.invite.outcome == "no_pin"
    # nobody types anything: the inviter's timer names it (and the newcomer's as well)
    q = Pair(seed=9)
    assert q.inviter.next_timer() == T0 + 1 + 120
    q.inviter.handle_timer(T0 + 120)
    assert not q.inviter.done
    q.inviter.handle_timer(T0 + 121)
    assert isinstance(q.inviter.result.error, NoPin) and q.invite.outcome == "no_pin"
    q.newcomer.handle_timer(T0 + 121)
    assert isinstance(q.newcomer.result.error, NoPin)


def test_a_replayed_pin_message_is_refused_by_name() -> None:
    guard = ReplayGuard()
    first = Pair(seed=11, guard=guard)
    [issued] = events(first.inviter)
    first.newcomer.answer_pin(issued.pin, T0 + 2)
    [recorded] = first.newcomer.outgoing()
    first.inviter.receive(recorded, T0 + 2)
    assert isinstance(first.inviter.result, Admitted)
    # a second session of the same inviter (a second invite): the recorded PIN message
    second = Pair(seed=12, guard=guard)
    second.inviter.receive(recorded, T0 + 3)
    assert isinstance(second.inviter.result.error, ReplayedPin)
    assert second.invite.outcome == "replayed_pin"


def test_a_pin_message_where_none_was_asked_and_a_tampered_challenge() -> None:
    plain = Pair(pin=False)
    assert isinstance(plain.inviter.result, Admitted)     # no challenge without --pin
    p = Pair(seed=13)
    [issued] = events(p.inviter)
    p.newcomer.answer_pin(issued.pin, T0 + 2)
    [pin_message] = p.newcomer.outgoing()
    p.inviter.receive(pin_message, T0 + 2)
    assert isinstance(p.inviter.result, Admitted)
    q = Pair(seed=14)
    q.newcomer.receive(p.inviter.outgoing()[0], T0 + 2)   # an ADMIT while asking our user
    assert isinstance(q.newcomer.result.error, UnexpectedMessage)
    t = Pair(seed=15, tamper=flip(5))                     # the CHALLENGE altered on the way
    assert isinstance(t.newcomer.result.error, TamperedMessage)
    assert isinstance(t.inviter.result.error, TamperedMessage)
