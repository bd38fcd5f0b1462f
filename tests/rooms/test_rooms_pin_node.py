"""The PIN challenge (``room invite --pin``, ``rooms.pin``) on real nodes on 127.0.0.1,
through a rendezvous: the PIN the inviter's node shows admits; a wrong PIN, no PIN and
a replayed PIN message are each named on both sides, reported by the inviter's node and
spend the invite (one guess); a mistyped PIN is caught before it is sent."""

from __future__ import annotations

import pytest

from stack.base.errors import UsageError
from stack.node import RoomAdmissionFailed, RoomAdmitted
from stack.node import operations
from stack.node.events import RoomPinIssued, RoomPinRequested
from stack.node.protocols.rendezvous import RendezvousService
from stack.node.rooms import NoPinAsked
from stack.store.trust_model import Source
from rooms.errors import InvalidPin, InviteUnknown, NoPin, ReplayedPin, WrongPin
from tests.rooms.roomnodes import addr

T = 10.0


async def pin_invite(a, b, room: str, rv: str):
    """A ``--pin`` invite from ``a``, joined by ``b`` up to the PIN prompt: (invite, the
    PIN ``a`` shows)."""
    invite = await a.rooms.invite(room, pin=True)
    issued = a.next_event(RoomPinIssued, room=room, timeout=T)
    asked = b.next_event(RoomPinRequested, room=room, timeout=T)
    out = await b.rooms.join(room, invite["code"], rv)
    assert out["pin_required"] is True and out["digits"] == 6
    shown = await issued
    assert shown.newcomer == b.peer_id and (await asked).digits == 6
    step = await a.rooms.invite_wait(room, invite["number"], "open")
    assert step["state"] == "pin" and step["pin"] == shown.pin
    assert step["newcomer"] == str(b.peer_id)
    return invite, shown.pin


async def test_the_pin_the_inviter_shows_admits(nodes) -> None:
    r = await nodes("r", rendezvous=True)
    a, b = await nodes("a"), await nodes("b")
    await a.rooms.create("club", addr(r))
    invite, pin = await pin_invite(a, b, "club", addr(r))
    assert b.rooms.list() == {"rooms": []}        # not admitted before the PIN
    with pytest.raises(InvalidPin):               # a typo: nothing sent, still waiting
        await b.rooms.pin("club", pin[:5])
    admitted = a.next_event(RoomAdmitted, role="inviter", timeout=T)
    out = await b.rooms.pin("club", f"{pin[:3]} {pin[3:]}")
    assert out["admitted_by"] == str(a.peer_id)
    assert (await admitted).peer_id == b.peer_id
    step = await a.rooms.invite_wait("club", invite["number"], "pin")
    assert step == {"room": "club", "number": invite["number"], "state": "admitted",
                    "peer_id": str(b.peer_id)}
    assert a.trust.get(b.peer_id).source is Source.INVITE
    assert b.trust.get(a.peer_id).source is Source.INVITE
    with pytest.raises(NoPinAsked):
        await b.rooms.pin("club", pin)


async def test_a_wrong_pin_is_named_reported_and_spends_the_invite(nodes) -> None:
    r = await nodes("r", rendezvous=True)
    a, b = await nodes("a"), await nodes("b")
    await a.rooms.create("club", addr(r))
    invite, pin = await pin_invite(a, b, "club", addr(r))
    failed = a.next_event(RoomAdmissionFailed, role="inviter", timeout=T)
    mine = b.next_event(RoomAdmissionFailed, role="newcomer", timeout=T)
    with pytest.raises(WrongPin):
        await b.rooms.pin("club", str((int(pin) + 1) % 10**6).zfill(6))
    assert (await failed).reason == "wrong_pin" and (await mine).reason == "wrong_pin"
    assert a.rooms.stats["inviter.wrong_pin"] == 1 and b.rooms.stats["newcomer.wrong_pin"] == 1
    assert operations.status(a)["rooms"]["admissions"] == {"inviter.wrong_pin": 1}
    step = await a.rooms.invite_wait("club", invite["number"], "pin")
    assert step["state"] == "failed" and step["reason"] == "wrong_pin"
    with pytest.raises(InviteUnknown):            # one guess: the slot is gone
        await b.rooms.join("club", invite["code"], addr(r))
    assert b.rooms.list() == {"rooms": []} and a.trust.get(b.peer_id) is None
    with pytest.raises(UsageError):
        await a.rooms.invite_wait("club", 999)


async def test_no_pin_is_named_on_both_sides(nodes) -> None:
    r = await nodes("r", rendezvous=True)
    a, b = await nodes("a"), await nodes("b")
    await a.rooms.create("club", addr(r))
    invite, _ = await pin_invite(a, b, "club", addr(r))
    failed = a.next_event(RoomAdmissionFailed, role="inviter", timeout=T)
    with pytest.raises(NoPin):                    # the user declined (empty line, EOF)
        await b.rooms.pin("club", None)
    assert (await failed).reason == "no_pin"
    assert (await a.rooms.invite_wait("club", invite["number"], "pin"))["reason"] == "no_pin"


class RecordingRendezvous(RendezvousService):
    """Keeps the PIN messages it forwards to inviters; with ``replay`` set, sends the
    first one it kept in place of the next."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.pins: list[bytes] = []
        self.replay = False

    def forward(self, data: bytes, to_inviter: bool) -> bytes:
        if to_inviter and data[:2] == b"\x92\x06":  # msgpack [6, pin_mac]
            self.pins.append(data)
            if self.replay:
                return self.pins[0]
        return data


async def test_a_replayed_pin_message_is_named(nodes) -> None:
    r = await nodes("r")
    rv = RecordingRendezvous(clock=r.clock, timeout=T)
    r.router.add(rv)                              # the rendezvous, built by the test
    a, b, c = await nodes("a"), await nodes("b"), await nodes("c")
    await a.rooms.create("club", addr(r))
    _, pin = await pin_invite(a, b, "club", addr(r))
    await b.rooms.pin("club", pin)
    assert len(rv.pins) == 1
    rv.replay = True                              # C's PIN message is swapped for B's
    _, pin = await pin_invite(a, c, "club", addr(r))
    failed = a.next_event(RoomAdmissionFailed, role="inviter", timeout=T)
    with pytest.raises(ReplayedPin):
        await c.rooms.pin("club", pin)
    assert (await failed).reason == "replayed_pin"
    assert c.rooms.list() == {"rooms": []} and a.trust.get(c.peer_id) is None
