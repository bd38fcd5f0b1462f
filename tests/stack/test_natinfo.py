"""The NAT glue's pure parts: what a report says against DHT server mode, how a re-run
on the same port keeps what it could not test again, and the keepalive core (rounds,
routing of STUN answers, a moved mapping shortening the interval). No sockets, no
sleeps: time is a fake clock, datagrams are collected."""

from __future__ import annotations

import asyncio
import random

import pytest

from nat.detect import NatReport
from nat.stun.codec import Class, Message, Method, decode, encode
from stack.node.events import EventBus, MappingChanged
from stack.node.keepalive import DEFAULT_INTERVAL, MIN_INTERVAL, Keepalive
from stack.node.natinfo import merge, vetoes_server

EIM = EIF = "endpoint-independent"
ADF = ADM = "address-dependent"
APDF = APDM = "address-and-port-dependent"
PUB = ("203.0.113.9", 39001)


def report(mapping, filtering, kind, nat=True, public=PUB, hairpin=None):
    return NatReport(public, nat, mapping, filtering, hairpin, kind)


@pytest.mark.parametrize("rep, veto", [
    (None, False),                                               # nothing known: dial-back decides
    (report(EIM, EIF, "open", nat=False), False),
    (report(EIM, EIF, "full-cone"), False),
    (report(EIM, None, None), False),                            # filtering untestable
    (report(EIM, ADF, "restricted-cone"), True),
    (report(EIM, APDF, "port-restricted-cone"), True),
    (report(None, None, "symmetric"), True),                     # "not EIM" across servers
    (report(ADM, None, "symmetric"), True),
])
def test_what_vetoes_dht_server_mode(rep, veto) -> None:
    assert vetoes_server(rep) is veto


def test_a_rerun_keeps_what_it_could_not_test_on_the_same_mapping() -> None:
    first = report(EIM, ADF, "restricted-cone", hairpin=True)
    later = NatReport(PUB, True, EIM, None, None, None,
                      ("filtering untestable: no server gave OTHER-ADDRESS (RFC 5780)",
                       "classic type unknown: mapping or filtering untestable"))
    merged = merge(first, later)
    assert (merged.mapping, merged.filtering, merged.type, merged.hairpin) == \
        (EIM, ADF, "restricted-cone", True)
    assert merged.notes == ("filtering from an earlier run on this mapping",)
    # a moved mapping is a fresh one: nothing carried over
    moved = NatReport(("203.0.113.9", 40000), True, EIM, None, None, None)
    assert merge(first, moved) == moved
    # a symmetric NAT shows every server another address, and stays symmetric
    sym = merge(report(APDM, APDF, "symmetric"),
                NatReport(("203.0.113.9", 5555), True, None, None, False, "symmetric"))
    assert (sym.mapping, sym.filtering, sym.type) == (APDM, APDF, "symmetric")
    # no NAT stays "open" whatever the earlier filtering was
    assert merge(report(EIM, EIF, "open", nat=False),
                 report(EIM, None, "open", nat=False)).type == "open"
    assert merge(None, later) is later


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t


def answer(data: bytes, mapped) -> object:
    txid = decode(data).transaction_id
    return decode(encode(Message(Method.BINDING, Class.RESPONSE, txid,
                                 {"XOR-MAPPED-ADDRESS": mapped})))


async def test_keepalive_rounds_answers_and_a_moved_mapping() -> None:
    clock, events, sent = FakeClock(), EventBus(), []
    behind = [False]
    changes = []
    neighbours = [("198.51.100.1", 39001), ("198.51.100.2", 39001), ("198.51.100.3", 39001),
                  ("198.51.100.4", 39001)]
    keep = Keepalive(send=lambda d, a: sent.append((d, a)), clock=clock, events=events,
                     behind_nat=lambda: behind[0], targets=lambda n: neighbours[:n],
                     on_change=lambda: changes.append(1), rng=random.Random(1))
    relay = ("192.0.2.7", 4001)
    keep.add_targets(lambda: [relay, neighbours[0]])  # the relay hook; duplicates once
    assert keep.interval == DEFAULT_INTERVAL and keep.tick() == 0 and not sent  # public: quiet
    behind[0] = True
    assert keep.tick() == 4
    assert [a for _, a in sent] == [*neighbours[:3], relay]
    for data, addr in sent:
        assert keep.owns(decode(data).transaction_id)
        keep.feed(answer(data, PUB), addr)
    assert keep.answered == 4 and keep.to_json()["targets"][-1] == "192.0.2.7:4001"
    waiter = events.next_event(MappingChanged, timeout=1)
    sent.clear()
    clock.t += 25.0
    keep.tick()
    data, addr = sent[0]
    keep.feed(answer(data, ("203.0.113.9", 40000)), addr)  # the NAT forgot it in 25 s
    event = await waiter
    assert event.old == "203.0.113.9:39001" and event.new == "203.0.113.9:40000"
    assert keep.interval == event.interval == 12.5 and changes == [1]
    # unanswered ones are forgotten at the next round; a stranger's answer is not ours
    assert not keep.owns(b"\x00" * 12)
    for _ in range(4):
        clock.t += keep.interval
        keep.tick()
    assert keep.interval >= MIN_INTERVAL
    with pytest.raises(ValueError):
        Keepalive(send=lambda d, a: None, clock=clock, events=events, behind_nat=lambda: True,
                  targets=lambda n: [], interval=0)
    assert asyncio.iscoroutinefunction(keep.service)


async def test_a_first_answer_is_compared_with_the_discovered_mapping() -> None:
    """After a NAT reboot the very first keepalive answer may already be the new mapping:
    ``expected()`` (what NAT discovery found) is the baseline."""
    clock, events, sent = FakeClock(), EventBus(), []
    keep = Keepalive(send=lambda d, a: sent.append((d, a)), clock=clock, events=events,
                     behind_nat=lambda: True, targets=lambda n: [("198.51.100.1", 39001)],
                     expected=lambda: PUB, rng=random.Random(2))
    waiter = events.next_event(MappingChanged, timeout=1)
    keep.tick()
    (data, addr), = sent
    keep.feed(answer(data, ("203.0.113.9", 41000)), addr)
    assert (await waiter).old == "203.0.113.9:39001"
