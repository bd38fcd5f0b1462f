"""Golden bytes for the DHT datagram codec, both directions, and garbage never raising."""

from hypothesis import given, settings
from hypothesis import strategies as st

from discovery.wire import (FIND_NODE, FIND_VALUE, FLAG_SERVER, FLAG_WANT_PROOF, PING, PROVE,
                            STORE, Reply, Request, WireContact, decode, encode_reply,
                            encode_request)
from stack.base.identity import Identity
from stack.base.port import DHT_BYTE

PID = Identity.from_seed(bytes(32)).peer_id.multihash
PID_HEX = "0024080112203b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"

GOLDEN_FIND_NODE = bytes.fromhex(
    "049802c4080001020304050607c426" + PID_HEX + "03c400c420" + "00" * 32 + "c400c400")
GOLDEN_NODES_REPLY = bytes.fromhex(
    "0499cc82c4080001020304050607c426" + PID_HEX + "01c400c408" + "00" * 8
    + "9193c426" + PID_HEX + "c4040a000001cd0fa1c400a0")


def test_find_node_request_golden_both_ways():
    req = Request(FIND_NODE, bytes(range(8)), PID, FLAG_SERVER | FLAG_WANT_PROOF, b"",
                  bytes(32))
    assert encode_request(req) == GOLDEN_FIND_NODE
    assert GOLDEN_FIND_NODE[0] == DHT_BYTE
    assert decode(GOLDEN_FIND_NODE) == req
    assert req.server and req.want_proof


def test_nodes_reply_golden_both_ways():
    rep = Reply(FIND_NODE, bytes(range(8)), PID, FLAG_SERVER, b"", bytes(8),
                (WireContact(PID, ("10.0.0.1", 4001)),))
    assert encode_reply(rep) == GOLDEN_NODES_REPLY
    assert decode(GOLDEN_NODES_REPLY) == rep


def test_padding_reaches_the_minimum_and_decodes_the_same():
    req = Request(PING, bytes(8), PID, 0)
    for size in (0, 100, 300, 400, 1000):
        data = encode_request(req, size)
        assert len(data) == max(size, len(encode_request(req)))
        assert decode(data) == req


def test_store_and_value_round_trip():
    store = Request(STORE, bytes(8), PID, 0, bytes(8), bytes(32), b"r" * 1000)
    assert decode(encode_request(store)) == store
    value = Reply(FIND_VALUE, bytes(8), PID, 0, bytes(64), b"", (), b"v" * 1000, "")
    assert decode(encode_reply(value)) == value


GOLDEN_PROVE = bytes.fromhex(
    "0499" + "05c408" + "07" * 8 + "c426" + PID_HEX + "01c400c400c400c400c440" + "09" * 64)


def test_prove_golden_and_reply_challenge_round_trip():
    prove = Request(PROVE, bytes([7] * 8), PID, FLAG_SERVER, proof=bytes([9] * 64))
    assert encode_request(prove) == GOLDEN_PROVE
    assert decode(GOLDEN_PROVE) == prove
    rep = Reply(PING, bytes(8), PID, FLAG_SERVER, bytes(64), bytes(8), challenge=b"c" * 8)
    data = encode_reply(rep)
    assert data.endswith(b"\xc4\x08" + b"c" * 8) and decode(data) == rep
    # without a challenge the reply is the 9-item form (older golden bytes unchanged)
    assert decode(encode_reply(Reply(PING, bytes(8), PID, 0))).challenge == b""


def test_structurally_wrong_messages_are_none():
    bad = [
        b"", b"\x04", b"\x05" + GOLDEN_FIND_NODE[1:], GOLDEN_FIND_NODE[:-1],
        encode_request(Request(STORE, bytes(8), PID, 0)),                 # STORE without record
        encode_request(Request(FIND_NODE, bytes(8), PID, 0, b"", b"")),   # no target
        encode_request(Request(PING, bytes(7), PID, 0)),                  # short txid
        encode_request(Request(PING, bytes(8), b"x" * 38, 0)),            # not a peer id
        encode_request(Request(STORE, bytes(8), PID, 0, b"", bytes(32), b"r" * 1001)),
        b"\x04" + b"\x91\x63",                                            # unknown kind
        b"\x04" + bytes(3000),                                            # oversize
        encode_request(Request(PROVE, bytes(8), PID, 0, proof=bytes(63))),  # short proof
        GOLDEN_PROVE[:-65] + b"\xc0",                                     # proof not bin
        encode_request(Request(PROVE, bytes(8), PID, 0, b"", bytes(32), proof=bytes(64))),
        encode_reply(Reply(PING, bytes(8), PID, 0))[:1] + b"\x9a"
        + encode_reply(Reply(PING, bytes(8), PID, 0))[2:] + b"\xc4\x02zz",  # short challenge
    ]
    for data in bad:
        assert decode(data) is None, data[:20]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_decode_never_raises(data):
    decode(b"\x04" + data)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(GOLDEN_NODES_REPLY) - 1), st.integers(0, 255))
def test_mutated_golden_reply_never_raises(pos, byte):
    data = bytearray(GOLDEN_NODES_REPLY)
    data[pos] = byte
    decode(bytes(data))
