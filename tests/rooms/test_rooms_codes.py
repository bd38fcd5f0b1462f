"""Room ids, invite codes and the inviter's book: formats, one use, expiry (issue 13)."""

from __future__ import annotations

import random

import pytest

from rooms.errors import (InvalidInviteCode, InvalidRoomName, InviteExpired, InviteUnknown,
                          InviteUsed, RoomError)
from rooms.invites import DEFAULT_INVITE_TTL, InviteBook, InviteCode, parse_code
from rooms.names import normalize_room_name, room_id
from rooms.words import WORDS

RID = room_id("book-club")


def seeded(seed: int = 7):
    rng = random.Random(seed)
    return rng.randbytes


def test_room_id_golden_and_normalised() -> None:
    # SHA-256("p2pstack-room/1\0" || "book-club"): the rendezvous key, fixed forever
    assert RID.hex() == "82ab03bd5d287393cb56e8817ea603371c83aa2d7e293bbe8c44376525e08949"
    assert room_id("  book-club\n") == RID
    assert room_id("Book-club") != RID
    assert room_id("cafe\u0301") == room_id("caf\u00e9")  # NFC


@pytest.mark.parametrize("name", ["", "   ", "a/b", "x" * 65, "tab\there", 7])
def test_bad_room_names_are_named_usage_errors(name) -> None:
    with pytest.raises(InvalidRoomName):
        normalize_room_name(name)


def test_word_list_is_256_distinct_words() -> None:
    assert len(WORDS) == 256 and len(set(WORDS)) == 256
    assert all(w.isalpha() and w.islower() for w in WORDS)


def test_parse_code_accepts_what_people_type() -> None:
    code = parse_code(" 7 Guitar-orbit ")
    assert code == InviteCode(7, ("guitar", "orbit"))
    assert str(code) == "7-guitar-orbit" and code.password == b"7-guitar-orbit"


@pytest.mark.parametrize("text", ["", "guitar-orbit", "0-guitar-orbit", "7", "7-",
                                  "12345-guitar", "7-guitar-0rbit", "7_guitar_orbit", None])
def test_malformed_codes_are_refused(text) -> None:
    with pytest.raises(InvalidInviteCode):
        parse_code(text)


def test_a_misspelt_word_is_caught_before_it_spends_the_invite() -> None:
    with pytest.raises(InvalidInviteCode, match="guitr"):
        parse_code("7-guitr-orbit")


def test_create_then_claim_once() -> None:
    book = InviteBook(entropy=seeded())
    invite = book.create(RID, 1000.0)
    assert invite.number == 1 and len(invite.code.words) == 2
    assert invite.expires_at == 1000.0 + DEFAULT_INVITE_TTL == 1600.0
    assert parse_code(str(invite.code)) == invite.code
    assert book.next_number(RID) == 2 and book.next_number(room_id("other")) == 1
    assert book.open_invites(1000.0) == [invite]
    assert book.claim(RID, 1, 1001.0) is invite
    with pytest.raises(InviteUsed):
        book.claim(RID, 1, 1002.0)
    assert book.open_invites(1002.0) == []


def test_codes_are_drawn_from_the_entropy_source() -> None:
    a = InviteBook(entropy=seeded(1)).create(RID, 0.0)
    b = InviteBook(entropy=seeded(1)).create(RID, 0.0)
    c = InviteBook(entropy=seeded(2)).create(RID, 0.0)
    assert a.code == b.code != c.code


def test_unknown_and_expired_invites() -> None:
    book = InviteBook(entropy=seeded())
    with pytest.raises(InviteUnknown):
        book.claim(RID, 1, 0.0)
    book.create(RID, 0.0, number=42, ttl=10.0)
    with pytest.raises(InviteUnknown):
        book.claim(room_id("other"), 42, 1.0)
    with pytest.raises(InviteExpired):
        book.claim(RID, 42, 10.0)
    with pytest.raises(InviteUsed):  # an expired invite stays spent
        book.claim(RID, 42, 11.0)


def test_a_spent_number_can_be_issued_again_a_live_one_cannot() -> None:
    book = InviteBook(entropy=seeded())
    first = book.create(RID, 0.0, number=4)
    with pytest.raises(RoomError, match="already in use"):
        book.create(RID, 1.0, number=4)
    book.claim(RID, 4, 1.0)
    second = book.create(RID, 2.0, number=4)  # the rendezvous handed the number out again
    assert book.get(RID, 4) is second and second.code != first.code and not second.used


def test_tombstones_leave_one_ttl_after_expiry() -> None:
    book = InviteBook(entropy=seeded(), ttl=10.0)
    book.create(RID, 0.0)
    book.expire(19.9)
    assert book.get(RID, 1) is not None
    book.expire(20.0)
    assert book.get(RID, 1) is None


def test_bounds_are_named() -> None:
    book = InviteBook(entropy=seeded(), max_open=2)
    book.create(RID, 0.0)
    book.create(RID, 0.0)
    with pytest.raises(RoomError, match="at most 2"):
        book.create(RID, 0.0)
    other = InviteBook(entropy=seeded())
    other.create(RID, 0.0, number=3)
    with pytest.raises(RoomError, match="already in use"):
        other.create(RID, 0.0, number=3)
    with pytest.raises(InvalidInviteCode):
        InviteBook(entropy=seeded()).create(RID, 0.0, number=10000)
    with pytest.raises(InvalidInviteCode):
        InviteBook(words=0)
