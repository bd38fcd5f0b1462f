"""The hole-punching core (``nat.punch.core``) sans I/O: golden bytes of the punch
datagrams both ways, the coordination messages' checks, the punch schedule and the
peer-reflexive address a punch from an unknown port reveals."""

from __future__ import annotations

import random

import pytest

from nat.punch.core import (DATAGRAM_SIZE, PUNCH, REFLECT_REPLY, REFLECT_REQUEST,
                            MalformedPunch, PeerReflexive, Puncher, decode_datagram,
                            decode_message, encode_message, encode_punch,
                            encode_reflect_reply, encode_reflect_request, sync_delay)

NONCE = bytes(range(1, 9))


def test_golden_bytes_both_ways() -> None:
    request = encode_reflect_request(NONCE)
    assert request == bytes.fromhex("0501" "0102030405060708" "000000000000")
    assert decode_datagram(request).kind == REFLECT_REQUEST
    reply = encode_reflect_reply(NONCE, ("203.0.113.7", 39001))
    assert reply == bytes.fromhex("0502" "0102030405060708" "cb007107" "9859")
    decoded = decode_datagram(reply)
    assert (decoded.kind, decoded.nonce, decoded.address) == (REFLECT_REPLY, NONCE,
                                                              ("203.0.113.7", 39001))
    punch = encode_punch(NONCE, random.Random(1))
    assert punch[:10] == bytes.fromhex("0503" "0102030405060708") and len(punch) == 16
    assert decode_datagram(punch).kind == PUNCH
    # a reply is never larger than its request: no amplification
    assert len(request) == len(reply) == len(punch) == DATAGRAM_SIZE


@pytest.mark.parametrize("data", [b"", b"\x05", b"\x05\x09" + bytes(14), b"\x05\x01" + bytes(15),
                                  b"\x04\x01" + bytes(14)])
def test_garbage_datagrams_are_malformed(data: bytes) -> None:
    with pytest.raises(MalformedPunch):
        decode_datagram(data)


def test_messages_check_their_type_and_addresses() -> None:
    raw = encode_message({"t": "connect", "addrs": ["203.0.113.7:39001"], "public": False})
    assert decode_message(raw, "connect")["addrs"] == [("203.0.113.7", 39001)]
    with pytest.raises(MalformedPunch):
        decode_message(raw, "sync")
    for bad in (["example.com:1"], ["1.2.3.4:0"], ["1.2.3.4"], [7], ["1.2.3.4:1"] * 9, "x"):
        with pytest.raises(MalformedPunch):
            decode_message(encode_message({"t": "connect", "addrs": bad}), "connect")
    with pytest.raises(MalformedPunch):
        decode_message(b"\xc1", "connect")


def test_puncher_schedule_and_peer_reflexive_addresses() -> None:
    puncher = Puncher(NONCE, random.Random(3), interval=0.1)
    targets = [("203.0.113.7", 39001), ("10.0.0.2", 39001)]
    puncher.start(10.0, targets, until=10.5)
    first = puncher.outgoing()
    assert [addr for _, addr in first] == targets
    sends = len(first)
    while (when := puncher.next_timer()) is not None:
        assert when <= 10.5 + 0.15
        puncher.handle_timer(when)
        sends += len(puncher.outgoing())
    assert 6 <= sends <= 2 * 11 and puncher.sent == sends
    # a punch with our token from a known address is no news; from a new port it is
    known = decode_datagram(encode_punch(NONCE, random.Random(0)))
    puncher.receive(known, targets[0], 10.6)
    assert puncher.next_event() is None
    puncher.receive(known, ("203.0.113.7", 61000), 10.6)
    puncher.receive(known, ("203.0.113.7", 61000), 10.7)
    assert puncher.next_event() == PeerReflexive(("203.0.113.7", 61000))
    assert puncher.next_event() is None
    # another token: ignored
    other = decode_datagram(encode_punch(bytes(8), random.Random(0)))
    puncher.receive(other, ("198.51.100.9", 1), 10.8)
    assert puncher.next_event() is None and puncher.received == 3
    assert sync_delay(0.08) == pytest.approx(0.04)
