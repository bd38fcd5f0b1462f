import pytest

from stack.base.port import DHT_BYTE, Kind, PortDemux, classify

STUN = bytes.fromhex("000100002112a442") + bytes(12)
STUN_NO_COOKIE = bytes.fromhex("0001000000000000") + bytes(12)


@pytest.mark.parametrize("data,kind", [
    (STUN, Kind.STUN),
    (STUN_NO_COOKIE, Kind.UNKNOWN),
    (bytes([0x04]) + b"dht", Kind.P2P),
    (bytes([0x0F]), Kind.P2P),
    (bytes([0x40]) + bytes(20), Kind.QUIC),
    (bytes([0x7F]), Kind.QUIC),
    (bytes([0xC3]) + bytes(20), Kind.QUIC),
    (bytes([0x80]), Kind.UNKNOWN),   # QUIC long header with the fixed bit clear
    (bytes([0x17]), Kind.UNKNOWN),   # DTLS
    (b"", Kind.UNKNOWN),
])
def test_classify(data, kind):
    assert classify(data) is kind


def test_demux_hands_each_handler_its_part_of_the_batch_once():
    calls = {}
    demux = PortDemux()
    demux.register_stun(lambda b: calls.setdefault("stun", []).append(b))
    demux.register_p2p(DHT_BYTE, lambda b: calls.setdefault("dht", []).append(b))
    a = ("127.0.0.1", 1)
    demux([(STUN, a), (b"\x04x", a), (b"\x17", a), (b"\x04y", a), (b"\x40q", a), (b"\x05p", a)])
    assert calls["stun"] == [[(STUN, a)]]
    assert calls["dht"] == [[(b"\x04x", a), (b"\x04y", a)]]
    assert demux.dropped == {"unknown": 1, "no-handler-quic": 1, "no-handler-p2p-0x05": 1}


def test_register_outside_range_is_refused():
    with pytest.raises(ValueError):
        PortDemux().register_p2p(0x40, lambda b: None)
