"""Sans-I/O STUN client transactions: RFC 8489 schedule, matching, events, drops."""

from __future__ import annotations

import random

import pytest

from nat.stun.codec import Class, Message, Method, decode, encode
from nat.stun.transaction import (
    BindingError,
    BindingSuccess,
    RetransmitConfig,
    StunClient,
    TransactionTimeout,
)

SERVER = ("203.0.113.2", 3478)
MAPPED = ("198.51.100.7", 40000)


def response(txid: bytes, attrs: dict | None = None, cls: Class = Class.RESPONSE,
             **kw) -> bytes:
    attrs = {"XOR-MAPPED-ADDRESS": MAPPED} if attrs is None else attrs
    return encode(Message(Method.BINDING, cls, txid, attrs), **kw)


def run_until_quiet(client: StunClient, start: float = 0.0) -> list[float]:
    """Drive the timers to the end; return the times datagrams went out."""
    sends = [start] * len(client.outgoing())
    while (t := client.next_timer()) is not None:
        client.handle_timer(t)
        sends += [t] * len(client.outgoing())
    return sends


def test_default_schedule_is_rfc8489() -> None:
    client = StunClient(rng=random.Random(1))
    txid = client.request(SERVER, 0.0)
    sends = run_until_quiet(client)
    assert sends == pytest.approx([0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5])
    event = client.next_event()
    assert event == TransactionTimeout(txid, SERVER, 7)
    assert client.next_event() is None and client.pending == 0


def test_schedule_is_configurable_and_the_cap_cuts_it() -> None:
    client = StunClient(RetransmitConfig(rto=0.1, rc=3, rm=2), random.Random(1))
    client.request(SERVER, 10.0)
    assert run_until_quiet(client, 10.0) == pytest.approx([10.0, 10.1, 10.3])
    assert client.next_event() is not None  # timed out at 10.3 + 0.2
    capped = StunClient(RetransmitConfig(timeout=2.0), random.Random(1))
    capped.request(SERVER, 0.0)
    assert run_until_quiet(capped) == pytest.approx([0, 0.5, 1.5])
    assert isinstance(capped.next_event(), TransactionTimeout)


def test_timeout_time_is_39_5_seconds_by_default() -> None:
    client = StunClient(rng=random.Random(1))
    client.request(SERVER, 0.0)
    client.outgoing()
    times = []
    while (t := client.next_timer()) is not None:
        times.append(t)
        client.handle_timer(t)
    assert times[-1] == pytest.approx(39.5)


@pytest.mark.parametrize("bad", [dict(rto=0), dict(rc=0), dict(rm=-1), dict(timeout=0)])
def test_bad_config_is_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        RetransmitConfig(**bad)


def test_success_matches_id_and_source_and_carries_rfc5780_attributes() -> None:
    client = StunClient(rng=random.Random(2))
    txid = client.request(SERVER, 0.0)
    [(data, dest)] = client.outgoing()
    assert dest == SERVER and decode(data).transaction_id == txid
    client.receive(response(txid, {"XOR-MAPPED-ADDRESS": MAPPED,
                                   "RESPONSE-ORIGIN": SERVER,
                                   "OTHER-ADDRESS": ("203.0.113.3", 3479)}), SERVER, 0.25)
    event = client.next_event()
    assert event == BindingSuccess(txid, SERVER, SERVER, MAPPED, SERVER,
                                   ("203.0.113.3", 3479), 0.25)
    assert client.next_timer() is None


def test_mapped_address_falls_back_to_mapped_address_attribute() -> None:
    client = StunClient(rng=random.Random(2))
    txid = client.request(SERVER, 0.0)
    client.receive(response(txid, {"MAPPED-ADDRESS": MAPPED}), SERVER, 0.1)
    event = client.next_event()
    assert isinstance(event, BindingSuccess) and event.mapped_address == MAPPED


def test_response_from_the_wrong_source_is_dropped_and_retransmission_goes_on() -> None:
    client = StunClient(rng=random.Random(3))
    txid = client.request(SERVER, 0.0)
    client.outgoing()
    client.receive(response(txid), ("203.0.113.66", 3478), 0.1)
    client.receive(response(txid), (SERVER[0], 9999), 0.1)
    assert client.next_event() is None and client.dropped["wrong-source"] == 2
    client.handle_timer(0.5)
    assert len(client.outgoing()) == 1


def test_expect_from_accepts_the_changed_source_only() -> None:
    client = StunClient(rng=random.Random(3))
    other = ("203.0.113.3", 3479)
    txid = client.request(SERVER, 0.0, change_ip=True, change_port=True, expect_from=other)
    [(data, _)] = client.outgoing()
    assert decode(data).attributes["CHANGE-REQUEST"] == 0x06
    client.receive(response(txid), SERVER, 0.1)
    assert client.dropped["wrong-source"] == 1
    client.receive(response(txid), other, 0.2)
    assert isinstance(client.next_event(), BindingSuccess)


def test_error_response_is_an_event() -> None:
    client = StunClient(rng=random.Random(4))
    txid = client.request(SERVER, 0.0)
    client.receive(response(txid, {"ERROR-CODE": (420, "Unknown Attribute")}, Class.ERROR,
                            unknown_attributes=(3,)), SERVER, 0.1)
    assert client.next_event() == BindingError(txid, SERVER, SERVER, 420, "Unknown Attribute")


def test_response_with_unknown_required_attribute_is_discarded() -> None:
    """RFC 8489 section 6.3.3: discard it; the transaction keeps retransmitting."""
    client = StunClient(rng=random.Random(4))
    txid = client.request(SERVER, 0.0)
    data = response(txid)
    data = data[:2] + (len(data) - 20 + 8).to_bytes(2, "big") + data[4:] + \
        bytes.fromhex("7f010004 00000000")
    client.receive(data, SERVER, 0.1)
    assert client.next_event() is None and client.dropped["unknown-attribute"] == 1
    assert client.owns(txid)


def test_garbage_and_strays_are_counted_never_raised() -> None:
    client = StunClient(rng=random.Random(5))
    txid = client.request(SERVER, 0.0)
    client.receive(b"\x00\x01garbage", SERVER, 0.1)
    client.receive(response(b"x" * 12), SERVER, 0.1)
    client.receive(encode(Message(Method.BINDING, Class.REQUEST, txid)), SERVER, 0.1)
    client.receive(response(txid, {}), SERVER, 0.1)  # success without a mapped address
    assert client.dropped == {"truncated": 1, "unknown-transaction": 1, "not-a-response": 1,
                              "no-mapped-address": 1}
    assert client.next_event() is None and client.owns(txid)
    client.cancel(txid)
    assert client.pending == 0 and client.next_timer() is None


def test_transaction_ids_differ_and_follow_the_rng() -> None:
    a = StunClient(rng=random.Random(9))
    b = StunClient(rng=random.Random(9))
    ids_a = [a.request(SERVER, 0.0) for _ in range(3)]
    assert ids_a == [b.request(SERVER, 0.0) for _ in range(3)]
    assert len(set(ids_a)) == 3
