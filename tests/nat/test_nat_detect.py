"""The detection core directly (golden datagrams, no network) and against servers with
only half of the RFC 5780 alternates (simulated network, virtual time)."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nat.detect import DetectionDone, NatDetector, NatReport, detect_on
from nat.errors import NatUsageError
from nat.stun.codec import Class, Message, Method, decode, encode
from nat.stun.server import ServerConfig
from nat.stun.service import serve
from nat.stun.transaction import RetransmitConfig
from simulations.network import SimNetwork
from simulations.vtime import current_clock, run_virtual

EIM = EIF = "endpoint-independent"
APDM = APDF = "address-and-port-dependent"
LOCAL = ("10.0.0.2", 5000)
PUBLIC = ("198.51.100.7", 5000)
S1, S2 = ("203.0.113.2", 3478), ("192.0.2.50", 3478)
FAST = RetransmitConfig(rto=0.1, rc=2, rm=2)


def reply(detector: NatDetector, server, mapped=PUBLIC, attrs=None, cls=Class.RESPONSE,
          now=0.05, sent=None):
    """Answer the requests to ``server`` among ``sent`` (default: the detector's output)."""
    for data, dest in (detector.outgoing() if sent is None else sent):
        if dest != server:
            continue
        txid = decode(data).transaction_id
        a = {"XOR-MAPPED-ADDRESS": mapped} if attrs is None else attrs
        detector.receive(encode(Message(Method.BINDING, cls, txid, a)), server, now)


def run_timers(detector: NatDetector) -> None:
    while detector.report is None and (t := detector.next_timer()) is not None:
        detector.handle_timer(t)
        detector.outgoing()


def test_needs_a_server_and_starts_once() -> None:
    with pytest.raises(NatUsageError):
        NatDetector([], LOCAL)
    d = NatDetector([S1], LOCAL)
    d.start(0.0)
    with pytest.raises(NatUsageError):
        d.start(0.0)


def test_servers_are_tried_one_at_a_time_until_one_answers() -> None:
    d = NatDetector([S1, S2], LOCAL, config=FAST, rng=random.Random(1))
    d.start(0.0)
    assert [dest for _, dest in d.outgoing()] == [S1]
    sent: list = []
    now = 0.0
    while not any(dest == S2 for _, dest in sent):
        now = d.next_timer()
        d.handle_timer(now)
        sent = d.outgoing()
    assert now == pytest.approx(0.1 + 0.2)  # S1's schedule: sends at 0, 0.1, gives up at 0.3
    reply(d, S2, sent=sent, now=now + 0.05)
    # no OTHER-ADDRESS: no filtering phase; phase 3 is the hairpin test only
    run_timers(d)
    report = d.report
    assert report is not None and report.public_address == PUBLIC and report.nat
    assert report.mapping is None and report.filtering is None and report.type is None
    assert report.hairpin is False
    assert any("mapping untestable" in n for n in report.notes)
    assert d.next_event() == DetectionDone(report) and d.next_event() is None


def test_udp_blocked_when_nothing_answers() -> None:
    d = NatDetector([S1, S2], LOCAL, config=FAST, rng=random.Random(2))
    d.start(0.0)
    run_timers(d)
    assert d.report == NatReport(None, None, None, None, None, "udp-blocked",
                                 ("no STUN server answered",))
    assert d.report.to_json() == {"public_address": None, "nat": None, "mapping": None,
                                  "filtering": None, "hairpin": None, "type": "udp-blocked"}


def test_error_responses_only_is_not_udp_blocked() -> None:
    d = NatDetector([S1], LOCAL, config=FAST, rng=random.Random(3))
    d.start(0.0)
    reply(d, S1, attrs={"ERROR-CODE": (500, "Server Error")}, cls=Class.ERROR)
    assert d.report is not None and d.report.type is None and d.report.public_address is None


def test_hairpin_seen_when_our_own_request_arrives() -> None:
    d = NatDetector([S1], LOCAL, config=FAST, rng=random.Random(4))
    d.start(0.0)
    reply(d, S1)
    hairpin = [(data, dest) for data, dest in d.outgoing() if dest == PUBLIC]
    assert len(hairpin) == 1
    for data, dest in hairpin:
        if dest == PUBLIC:
            d.receive(data, PUBLIC, 0.2)  # the NAT sent it back to us
    assert d.report is not None and d.report.hairpin is True


def test_no_nat_means_open_and_hairpin_untested() -> None:
    d = NatDetector([S1], PUBLIC, config=FAST, rng=random.Random(5))
    d.start(0.0)
    reply(d, S1)
    assert d.report is not None
    assert (d.report.nat, d.report.mapping, d.report.type, d.report.hairpin) == \
        (False, EIM, "open", None)


def test_garbage_and_strays_are_counted() -> None:
    d = NatDetector([S1], LOCAL, config=FAST, rng=random.Random(6))
    d.start(0.0)
    d.receive(b"\xff" * 30, S1, 0.01)
    d.receive(encode(Message(Method.BINDING, Class.REQUEST, b"z" * 12)), S2, 0.01)
    assert d.dropped["bad-header"] == 1 and d.dropped["request"] == 1
    reply(d, S1, mapped=PUBLIC)
    run_timers(d)
    d.receive(b"late", S1, 9.0)
    assert d.dropped["after-done"] == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=60), st.booleans()), max_size=8))
def test_fuzz_detector_never_raises(items: list[tuple[bytes, bool]]) -> None:
    """Random datagrams, some framed as responses to the live transaction."""
    d = NatDetector([S1], LOCAL, config=FAST, rng=random.Random(8))
    d.start(0.0)
    [(request, _)] = d.outgoing()
    for body, framed in items:
        if framed:  # a success response header with our transaction id, random attributes
            payload = body[:len(body) & ~3]
            body = b"\x01\x01" + len(payload).to_bytes(2, "big") + request[4:20] + payload
        d.receive(body, S1, 0.01)
    run_timers(d)
    assert d.report is not None


def test_report_json_has_exactly_the_six_keys() -> None:
    report = NatReport(PUBLIC, True, EIM, APDF, False, "port-restricted-cone", ("x",))
    assert json.loads(json.dumps(report.to_json())) == {
        "public_address": "198.51.100.7:5000", "nat": True, "mapping": EIM,
        "filtering": APDF, "hairpin": False, "type": "port-restricted-cone"}


# -- servers with half the RFC 5780 alternates (simulated) --------------------------------

def detect_behind(kind: str, config: ServerConfig, seed: int = 1) -> NatReport:
    async def main() -> NatReport:
        clock = current_clock()
        net = SimNetwork(random.Random(seed))
        extra = [config.alternate_ip] if config.alternate_ip else []
        service = await serve(net.add_host(config.primary[0], extra_ips=extra), config, clock)
        host = net.add_nat_kind("198.51.100.7", kind).add_host("10.0.0.2")
        try:
            return await detect_on(host, ("0.0.0.0", 0), [config.primary], clock,
                                   rng=random.Random(seed))
        finally:
            service.close()
    return run_virtual(main())


PORT_ONLY = ServerConfig(primary=("203.0.113.2", 3478), alternate_port=3479)
IP_ONLY = ServerConfig(primary=("203.0.113.2", 3478), alternate_ip="203.0.113.3")


@pytest.mark.parametrize("config,kind,mapping,filtering,name", [
    (PORT_ONLY, "full-cone", None, None, None),            # EIM|ADM, EIF|ADF undecided
    (PORT_ONLY, "port-restricted-cone", None, APDF, None),
    (PORT_ONLY, "symmetric", APDM, APDF, "symmetric"),
    (IP_ONLY, "full-cone", EIM, EIF, "full-cone"),
    (IP_ONLY, "restricted-cone", EIM, None, None),         # ADF|APDF undecided
    (IP_ONLY, "symmetric", None, None, "symmetric"),       # ADM|APDM undecided
], ids=lambda v: v if isinstance(v, str) else None)
def test_half_rfc5780_servers_report_what_they_can(config, kind, mapping, filtering,
                                                    name) -> None:
    report = detect_behind(kind, config)
    assert (report.mapping, report.filtering, report.type) == (mapping, filtering, name), report
    assert report.nat is True
    assert bool(report.notes) is (None in (mapping, filtering, name))  # says why


def test_a_wildcard_bind_at_one_of_our_ips_is_no_nat_and_decoded_input_routes() -> None:
    """``local_ips``: bound to 0.0.0.0, the mapped address is one of our own IPs with our
    port: no translation, so no hairpin test. ``owns`` names our transactions, and
    ``receive_decoded`` takes what a node's port demultiplexer decoded already."""
    d = NatDetector([S1], ("0.0.0.0", 5000), config=FAST, rng=random.Random(3),
                    local_ips=("10.0.0.2", "127.0.0.1"))
    d.start(0.0)
    [(data, dest)] = d.outgoing()
    txid = decode(data).transaction_id
    assert dest == S1 and d.owns(txid) and not d.owns(b"x" * 12)
    answer = encode(Message(Method.BINDING, Class.RESPONSE, txid,
                            {"XOR-MAPPED-ADDRESS": LOCAL}))
    d.receive_decoded(decode(answer), S1, 0.05)
    assert d.outgoing() == []  # no hairpin probe without a NAT
    report = d.report
    assert report is not None and report.nat is False and report.type == "open"
    assert not d.owns(txid)
    # the same answer at another port of that IP is a translation
    d2 = NatDetector([S1], ("0.0.0.0", 5000), config=FAST, rng=random.Random(3),
                     local_ips=("10.0.0.2",))
    d2.start(0.0)
    [(data, _)] = d2.outgoing()
    d2.receive_decoded(decode(encode(Message(Method.BINDING, Class.RESPONSE,
                                             decode(data).transaction_id,
                                             {"XOR-MAPPED-ADDRESS": ("10.0.0.2", 6000)}))),
                       S1, 0.05)
    run_timers(d2)
    assert d2.report is not None and d2.report.nat is True
