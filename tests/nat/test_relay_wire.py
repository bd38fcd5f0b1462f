"""Relay message codec and circuit framing: golden bytes both ways, strict decoding."""

from __future__ import annotations

import msgpack
import pytest

from nat.relay.circuit import FrameReader
from nat.relay.wire import (HopMessage, HopType, Limit, MalformedMessage, Reservation,
                            Status, StopMessage, StopType, decode_hop, decode_stop,
                            encode_frame, encode_hop, encode_stop, end_frame)
from stack.base.identity import Identity

PEER = Identity.from_seed(bytes(32)).peer_id.multihash

GOLDEN_HOP = [
    (HopMessage(HopType.RESERVE), "9500c0c0c0c0"),
    (HopMessage(HopType.STATUS, None, Reservation(1700000000, ("/ip4/1.2.3.4/udp/1/quic-v1",)),
                Limit(120, 131072), Status.OK),
     "9502c092ce6553f10091ba2f6970342f312e322e332e342f7564702f312f717569632d76319278ce0002000064"),
    (HopMessage(HopType.STATUS, status=Status.RESERVATION_REFUSED), "9502c0c0c0ccc8"),
    (HopMessage(HopType.CONNECT, PEER), "9501c426" + PEER.hex() + "c0c0c0"),
]
GOLDEN_STOP = [
    (StopMessage(StopType.STATUS, status=Status.NO_RESERVATION), "9401c0c0cccc"),
    (StopMessage(StopType.CONNECT, PEER, Limit(0, 0)), "9400c426" + PEER.hex() + "920000c0"),
]


@pytest.mark.parametrize("msg, golden", GOLDEN_HOP)
def test_hop_golden_bytes_both_ways(msg, golden) -> None:
    assert encode_hop(msg).hex() == golden
    assert decode_hop(bytes.fromhex(golden)) == msg


@pytest.mark.parametrize("msg, golden", GOLDEN_STOP)
def test_stop_golden_bytes_both_ways(msg, golden) -> None:
    assert encode_stop(msg).hex() == golden
    assert decode_stop(bytes.fromhex(golden)) == msg


def test_status_codes_are_libp2ps() -> None:
    assert {s.name: s.value for s in Status} == {
        "OK": 100, "RESERVATION_REFUSED": 200, "RESOURCE_LIMIT_EXCEEDED": 201,
        "PERMISSION_DENIED": 202, "CONNECTION_FAILED": 203, "NO_RESERVATION": 204,
        "MALFORMED_MESSAGE": 400, "UNEXPECTED_MESSAGE": 401}


@pytest.mark.parametrize("body", [
    b"", b"\xc1", b"\x94\x00\xc0\xc0\xc0",            # not msgpack; wrong length (4 for hop)
    msgpack.packb([9, None, None, None, None]),       # unknown type
    msgpack.packb([True, None, None, None, None]),    # bool is not an int
    msgpack.packb([1, b"short", None, None, None]),   # not a peer id
    msgpack.packb([1, "x" * 38, None, None, None]),   # str is not bin
    msgpack.packb([2, None, None, None, 999]),        # unknown status
    msgpack.packb([2, None, [1, ["a"] * 9], None, 100]),  # too many addrs
    msgpack.packb([2, None, [-1, []], None, 100]),    # negative expiry
    msgpack.packb([2, None, None, [1 << 32, 0], 100]),  # duration past uint32
    msgpack.packb([0, None, None, None, None]) + b"\x00",  # trailing bytes
    msgpack.packb([0, "x" * 5000, None, None, None]),  # too large
])
def test_malformed_hop_messages(body) -> None:
    with pytest.raises(MalformedMessage):
        decode_hop(body)


def test_frames_and_the_end_frame() -> None:
    assert encode_frame(b"\xc0abc").hex() == "0004c0616263"
    assert end_frame(Status.RESOURCE_LIMIT_EXCEEDED).hex() == "000000c9"
    with pytest.raises(ValueError):
        encode_frame(b"")
    stream = encode_frame(b"one") + encode_frame(b"two" * 100) + end_frame(Status.OK) + b"junk"
    reader = FrameReader()
    got = []
    for i in range(len(stream)):  # byte by byte: frames split anywhere
        got += reader.feed(stream[i:i + 1])
    assert got == [b"one", b"two" * 100]
    assert reader.ended is Status.OK
    assert reader.feed(encode_frame(b"later")) == []


def test_an_unknown_end_status_is_malformed() -> None:
    reader = FrameReader()
    assert reader.feed(b"\x00\x00\x00\x01") == [] and reader.malformed
