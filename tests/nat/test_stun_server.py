"""The STUN server core (RFC 8489 section 6.3, RFC 5780 role, rate limit, bad input) and
its driver on a node's port (PortDemux, real UDP on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nat.stun.codec import Class, Message, Method, binding_request, decode, encode
from nat.stun.server import ServerConfig, StunServer
from nat.stun.service import StunService, attach, serve
from nat.stun.transaction import BindingSuccess, StunClient
from stack.base.clock import ManualClock, SystemClock
from stack.base.errors import LocalError
from stack.base.net import UdpNetwork
from stack.base.port import PortDemux

TXID = b"0123456789ab"
CLIENT = ("198.51.100.7", 40000)
A, B = "203.0.113.2", "203.0.113.3"
RFC5780 = ServerConfig(primary=(A, 3478), alternate_ip=B, alternate_port=3479)


def answer(server: StunServer, data: bytes, local=None, addr=CLIENT, now=0.0):
    server.receive(data, addr, now, local)
    return server.outgoing()


def test_plain_server_answers_with_both_mapped_addresses() -> None:
    server = StunServer(ServerConfig(primary=(A, 3478)))
    [(data, dest, via)] = answer(server, binding_request(TXID, fingerprint=False))
    assert (dest, via) == (CLIENT, (A, 3478))
    decoded = decode(data)
    assert decoded.message.message_class == Class.RESPONSE
    assert decoded.transaction_id == TXID
    assert decoded.attributes["XOR-MAPPED-ADDRESS"] == CLIENT
    assert decoded.attributes["MAPPED-ADDRESS"] == CLIENT
    assert "OTHER-ADDRESS" not in decoded.attributes and not decoded.fingerprint
    assert server.answered == 1


def test_fingerprint_is_echoed_and_software_sent() -> None:
    server = StunServer(ServerConfig(primary=(A, 3478), software="p2pstack"))
    [(data, _, _)] = answer(server, binding_request(TXID))
    decoded = decode(data)
    assert decoded.fingerprint and decoded.attributes["SOFTWARE"] == "p2pstack"


@pytest.mark.parametrize("local,flags,via,other", [
    ((A, 3478), 0, (A, 3478), (B, 3479)),
    ((A, 3478), 0x06, (B, 3479), (B, 3479)),
    ((A, 3478), 0x02, (A, 3479), (B, 3479)),
    ((A, 3478), 0x04, (B, 3478), (B, 3479)),
    ((B, 3478), 0, (B, 3478), (A, 3479)),
    ((B, 3479), 0x06, (A, 3478), (A, 3478)),
])
def test_rfc5780_role_answers_from_the_endpoint_change_request_names(local, flags, via,
                                                                     other) -> None:
    server = StunServer(RFC5780)
    request = binding_request(TXID, change_ip=bool(flags & 4), change_port=bool(flags & 2))
    [(data, dest, sent_via)] = answer(server, request, local=local)
    attrs = decode(data).attributes
    assert (dest, sent_via) == (CLIENT, via)
    assert attrs["RESPONSE-ORIGIN"] == via
    assert attrs["OTHER-ADDRESS"] == other
    assert RFC5780.local_addresses() == [(A, 3478), (A, 3479), (B, 3478), (B, 3479)]


@pytest.mark.parametrize("config", [ServerConfig(primary=(A, 3478)),
                                    ServerConfig(primary=(A, 3478), alternate_port=3479)])
def test_change_request_it_cannot_honour_gets_420(config: ServerConfig) -> None:
    server = StunServer(config)
    [(data, _dest, _)] = answer(server, binding_request(TXID, change_ip=True))
    decoded = decode(data)
    assert decoded.message.message_class == Class.ERROR
    assert decoded.message.error_code == 420
    assert struct.pack("!HHH", 0x000A, 2, 0x0003) in data  # UNKNOWN-ATTRIBUTES: CHANGE-REQUEST
    assert server.errors_sent == 1


def test_unknown_comprehension_required_attribute_gets_420_listing_it() -> None:
    server = StunServer(ServerConfig(primary=(A, 3478)))
    base = binding_request(TXID, fingerprint=False)
    data = base[:2] + struct.pack("!H", 8) + base[4:] + bytes.fromhex("7f010004 00000000")
    [(reply, dest, _)] = answer(server, data)
    decoded = decode(reply)
    assert dest == CLIENT and decoded.message.error_code == 420
    assert bytes.fromhex("000a0002 7f01") in reply


def test_non_requests_and_other_methods_are_counted_not_answered() -> None:
    server = StunServer(ServerConfig(primary=(A, 3478)))
    for cls in (Class.INDICATION, Class.RESPONSE, Class.ERROR):
        assert answer(server, encode(Message(Method.BINDING, cls, TXID))) == []
    assert answer(server, encode(Message(Method.ALLOCATE, Class.REQUEST, TXID))) == []
    assert server.dropped == {"indication": 1, "not-a-request": 2, "unsupported-method": 1}


@pytest.mark.parametrize("data,reason", [
    (b"\x00\x01\x00", "truncated"),
    (binding_request(TXID)[:-1] + b"\x00", "bad-fingerprint"),
    (binding_request(TXID, fingerprint=False) + b"\x00\x00\x00\x00", "bad-length"),
    (binding_request(TXID, fingerprint=False)[:2] + b"\x00\x08"
     + binding_request(TXID, fingerprint=False)[4:] + bytes.fromhex("00010004 00090000"),
     "bad-family"),
])
def test_malformed_requests_are_dropped_and_counted(data: bytes, reason: str) -> None:
    server = StunServer(ServerConfig(primary=(A, 3478)))
    assert answer(server, data) == []
    assert server.dropped == {reason: 1}


def test_rate_limit_per_source_ip_with_refill() -> None:
    server = StunServer(ServerConfig(primary=(A, 3478), rate=10.0, burst=5.0))
    request = binding_request(TXID)
    answered = [bool(answer(server, request, now=0.0)) for _ in range(8)]
    assert answered == [True] * 5 + [False] * 3
    assert server.dropped["rate-limited"] == 3
    # another IP has its own bucket; a second later the first has refilled
    assert answer(server, request, addr=("192.0.2.1", 1), now=0.0)
    assert sum(bool(answer(server, request, now=1.0)) for _ in range(8)) == 5
    unlimited = StunServer(ServerConfig(primary=(A, 3478), rate=None))
    assert all(answer(unlimited, request) for _ in range(500))


def test_bucket_table_stays_bounded() -> None:
    server = StunServer(ServerConfig(primary=(A, 3478), rate=1.0, burst=2.0, max_sources=3))
    for i in range(10):
        server.receive(binding_request(TXID), (f"192.0.2.{i}", 1), 0.0)
    assert len(server._buckets) == 3
    answered = server.answered
    server.receive(binding_request(TXID), ("192.0.2.99", 1), 0.0)  # a newcomer, table full
    assert server.answered == answered + 1 and len(server._buckets) == 3
    assert server.next_timer() is None and server.handle_timer(0.0) is None


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=100), st.sampled_from([None, (B, 3479)]))
def test_fuzz_server_core_never_raises(data: bytes, local) -> None:
    server = StunServer(RFC5780)
    framed = b"\x00\x01" + struct.pack("!H", len(data) & ~3) + b"\x21\x12\xa4\x42" + TXID \
        + data[:len(data) & ~3]
    for item in (data, framed):
        server.receive(item, CLIENT, 0.0, local)
        for reply, _, _ in server.outgoing():
            decode(reply)  # whatever we send is well-formed


# -- the driver ---------------------------------------------------------------------------

async def test_node_port_answers_stun_and_routes_responses_to_its_client() -> None:
    """Two nodes on 127.0.0.1, each a PortDemux + StunService: A asks B, B answers."""
    net, clock = UdpNetwork(), SystemClock()
    got: asyncio.Queue = asyncio.Queue()

    async def node(on_response=None):
        demux = PortDemux()
        ep = await net.bind(("127.0.0.1", 0), demux)
        return ep, attach(demux, ep, clock, on_response=on_response)

    client = StunClient()
    ep_a, svc_a = await node(lambda d, src: (client.receive_decoded(d, src, clock.now()),
                                             got.put_nowait(client.next_event())))
    ep_b, svc_b = await node()
    try:
        client.request(ep_b.local_address, clock.now())
        for data, dest in client.outgoing():
            ep_a.send(data, dest)
        event = await asyncio.wait_for(got.get(), 5)
        assert isinstance(event, BindingSuccess)
        assert event.mapped_address == ep_a.local_address
        assert svc_b.server.answered == 1
        # B has no response handler: a stray response is counted there; junk to A is
        # counted by A. A second transaction behind them (loopback keeps order) shows
        # both were processed.
        ep_a.send(encode(Message(Method.BINDING, Class.RESPONSE, TXID,
                                 {"XOR-MAPPED-ADDRESS": CLIENT})), ep_b.local_address)
        ep_a.send(b"\x01\x01\x00\x00\x21\x12\xa4\x42" + TXID + b"junk", ep_a.local_address)
        client.request(ep_b.local_address, clock.now())
        for data, dest in client.outgoing():
            ep_a.send(data, dest)
        assert isinstance(await asyncio.wait_for(got.get(), 5), BindingSuccess)
        assert svc_b.server.dropped["not-a-request"] == 1
        assert svc_a.server.dropped["bad-length"] == 1
    finally:
        ep_a.close()
        ep_b.close()


async def test_serve_binds_its_endpoints_and_releases_them_on_failure() -> None:
    clock = ManualClock()
    config = ServerConfig(primary=("127.0.0.1", 0), rate=None)
    service = await serve(UdpNetwork(), config, clock)
    try:
        assert len(service._owned) == 1
    finally:
        service.close()
    # a taken address: nothing stays bound
    first = await serve(UdpNetwork(), ServerConfig(primary=("127.0.0.1", 0)), clock)
    taken = first._owned[0].local_address
    try:
        with pytest.raises(LocalError):
            await serve(UdpNetwork(), ServerConfig(primary=("127.0.0.2", taken[1]),
                                                   alternate_ip="127.0.0.1"), clock)
    finally:
        first.close()


async def test_response_for_an_unbound_via_is_counted() -> None:
    server = StunServer(RFC5780)
    service = StunService(server, ManualClock())
    service.receiver((A, 3478))([(binding_request(TXID, change_port=True), CLIENT)])
    assert server.dropped["no-endpoint"] == 1
