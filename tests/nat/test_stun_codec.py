"""The STUN codec wrapper: RFC 5769 vectors both ways, RFC 5780 attributes, every decode
error reason, and fuzzing (only StunDecodeError may ever come out)."""

from __future__ import annotations

import struct

import pytest
from aioice import stun as aioice_stun
from hypothesis import given, settings
from hypothesis import strategies as st

from nat.errors import NatError, StunDecodeError
from nat.stun.codec import (
    CHANGE_IP,
    CHANGE_PORT,
    Class,
    Message,
    Method,
    binding_request,
    decode,
    encode,
    encode_binding_success,
    new_transaction_id,
    plain_binding_request,
)
from stack.base.errors import RemoteError


def unhex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"
TXID = unhex("b7e7a701bc34d686fa87dfae")

# RFC 5769 section 2.1: Binding request with SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME
# (padded with spaces), MESSAGE-INTEGRITY and FINGERPRINT.
SAMPLE_REQUEST = unhex("""
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf""")
# 2.2: IPv4 response, XOR-MAPPED-ADDRESS 192.0.2.1:32853
SAMPLE_IPV4_RESPONSE = unhex("""
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96""")
# 2.3: IPv6 response, XOR-MAPPED-ADDRESS [2001:db8:1234:5678:11:2233:4455:6677]:32853
SAMPLE_IPV6_RESPONSE = unhex("""
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c""")

# Byte offsets of padding in the vectors: the RFC pads with spaces, aioice with zeros
# (both allowed: RFC 8489 section 14 says padding content is ignored).
REQUEST_PADDING = (73, 74, 75)
RESPONSE_PADDING = (35,)


def without(data: bytes, positions: tuple[int, ...]) -> bytes:
    return bytes(b for i, b in enumerate(data) if i not in positions)


# -- RFC 5769, decoding -------------------------------------------------------------------

def test_sample_request_decodes_and_its_integrity_checks() -> None:
    decoded = decode(SAMPLE_REQUEST)
    m = decoded.message
    assert (m.message_method, m.message_class) == (Method.BINDING, Class.REQUEST)
    assert m.transaction_id == TXID
    assert m.attributes["SOFTWARE"] == "STUN test client"
    assert m.attributes["PRIORITY"] == 0x6E0001FF
    assert m.attributes["ICE-CONTROLLED"] == 0x932FF9B151263B36
    assert m.attributes["USERNAME"] == "evtj:h6vY"
    assert decoded.fingerprint is True and decoded.unknown_required == ()
    assert m.check_message_integrity(PASSWORD)
    assert not m.check_message_integrity(b"wrong password")


@pytest.mark.parametrize("vector,mapped", [
    (SAMPLE_IPV4_RESPONSE, ("192.0.2.1", 32853)),
    (SAMPLE_IPV6_RESPONSE, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
], ids=["ipv4", "ipv6"])
def test_sample_responses_decode(vector: bytes, mapped: tuple[str, int]) -> None:
    decoded = decode(vector)
    m = decoded.message
    assert (m.message_method, m.message_class) == (Method.BINDING, Class.RESPONSE)
    assert m.attributes["SOFTWARE"] == "test vector"
    assert m.attributes["XOR-MAPPED-ADDRESS"] == mapped
    assert decoded.fingerprint
    assert m.check_message_integrity(PASSWORD)


# -- RFC 5769, encoding -------------------------------------------------------------------

def test_sample_request_encodes_to_the_vector() -> None:
    m = Message(Method.BINDING, Class.REQUEST, TXID, {
        "SOFTWARE": "STUN test client", "PRIORITY": 0x6E0001FF,
        "ICE-CONTROLLED": 0x932FF9B151263B36, "USERNAME": "evtj:h6vY"})
    m.add_message_integrity(PASSWORD)
    ours = bytes(m)
    assert len(ours) == len(SAMPLE_REQUEST)
    mi = SAMPLE_REQUEST.index(bytes.fromhex("00080014"))
    # Everything before MESSAGE-INTEGRITY matches byte for byte, padding aside ...
    assert without(ours[:mi], REQUEST_PADDING) == without(SAMPLE_REQUEST[:mi], REQUEST_PADDING)
    # ... and the integrity / fingerprint functions reproduce the vector's values over the
    # vector's own bytes.
    assert aioice_stun.message_integrity(SAMPLE_REQUEST[:mi], PASSWORD) == \
        SAMPLE_REQUEST[mi + 4:mi + 24]
    assert struct.pack("!I", aioice_stun.message_fingerprint(SAMPLE_REQUEST[:-8])) == \
        SAMPLE_REQUEST[-4:]


@pytest.mark.parametrize("vector,mapped", [
    (SAMPLE_IPV4_RESPONSE, ("192.0.2.1", 32853)),
    (SAMPLE_IPV6_RESPONSE, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
], ids=["ipv4", "ipv6"])
def test_sample_responses_encode_to_the_vectors(vector: bytes, mapped: tuple[str, int]) -> None:
    m = Message(Method.BINDING, Class.RESPONSE, TXID,
                {"SOFTWARE": "test vector", "XOR-MAPPED-ADDRESS": mapped})
    m.add_message_integrity(PASSWORD)
    ours = encode(m)
    assert len(ours) == len(vector)
    mi = vector.index(bytes.fromhex("00080014"))
    assert without(ours[:mi], RESPONSE_PADDING) == without(vector[:mi], RESPONSE_PADDING)
    assert aioice_stun.message_integrity(vector[:mi], PASSWORD) == vector[mi + 4:mi + 24]
    assert struct.pack("!I", aioice_stun.message_fingerprint(vector[:-8])) == vector[-4:]


def test_zero_padded_reencoding_round_trips_with_integrity() -> None:
    """Decode a vector, re-encode it with aioice: it decodes to the same, integrity holds."""
    m = decode(SAMPLE_IPV4_RESPONSE).message
    again = Message(m.message_method, m.message_class, m.transaction_id,
                    {k: v for k, v in m.attributes.items()
                     if k not in ("MESSAGE-INTEGRITY", "FINGERPRINT")})
    again.add_message_integrity(PASSWORD)
    back = decode(bytes(again))
    assert back.message.attributes["XOR-MAPPED-ADDRESS"] == ("192.0.2.1", 32853)
    assert back.message.check_message_integrity(PASSWORD) and back.fingerprint


# -- RFC 5780 attributes and our builders ---------------------------------------------------

def test_rfc5780_attributes_round_trip() -> None:
    m = Message(Method.BINDING, Class.RESPONSE, TXID, {
        "XOR-MAPPED-ADDRESS": ("198.51.100.7", 40000),
        "RESPONSE-ORIGIN": ("203.0.113.3", 3479),
        "OTHER-ADDRESS": ("203.0.113.3", 3479),
    })
    data = encode(m, fingerprint=True)
    attrs = decode(data).attributes
    assert attrs["RESPONSE-ORIGIN"] == ("203.0.113.3", 3479)
    assert attrs["OTHER-ADDRESS"] == ("203.0.113.3", 3479)
    assert attrs["XOR-MAPPED-ADDRESS"] == ("198.51.100.7", 40000)
    # RESPONSE-ORIGIN is 0x802B and OTHER-ADDRESS 0x802C (RFC 5780 section 7)
    assert bytes.fromhex("802b0008") in data and bytes.fromhex("802c0008") in data


@pytest.mark.parametrize("change_ip,change_port,flags", [
    (True, True, CHANGE_IP | CHANGE_PORT), (False, True, CHANGE_PORT), (True, False, CHANGE_IP)])
def test_change_request_encodes_the_rfc5780_flags(change_ip: bool, change_port: bool,
                                                  flags: int) -> None:
    data = binding_request(TXID, change_ip=change_ip, change_port=change_port)
    assert bytes.fromhex("00030004") + struct.pack("!I", flags) in data
    decoded = decode(data)
    assert decoded.attributes["CHANGE-REQUEST"] == flags and decoded.fingerprint


def test_plain_binding_request_is_header_plus_fingerprint() -> None:
    data = binding_request(TXID)
    assert data[:4] == bytes.fromhex("00010008") and data[8:20] == TXID
    assert decode(binding_request(TXID, fingerprint=False)).message.attributes == {}


def test_unknown_attributes_attribute_is_encoded() -> None:
    m = Message(Method.BINDING, Class.ERROR, TXID, {"ERROR-CODE": (420, "Unknown Attribute")})
    data = encode(m, unknown_attributes=(0x0777, 0x0042), fingerprint=True)
    assert bytes.fromhex("000a0004 0777 0042") in data
    decoded = decode(data)
    assert decoded.message.error_code == 420 and decoded.fingerprint


def test_transaction_ids_are_96_bits_and_reproducible_with_an_rng() -> None:
    import random

    assert len(new_transaction_id()) == 12
    assert new_transaction_id(random.Random(1)) == new_transaction_id(random.Random(1))


# -- decode errors, each reason -----------------------------------------------------------

def with_attribute(attr_type: int, value: bytes, *, base: bytes | None = None) -> bytes:
    base = base or binding_request(TXID, fingerprint=False)
    tlv = struct.pack("!HH", attr_type, len(value)) + value + bytes(-len(value) & 3)
    body = len(base) - 20 + len(tlv)
    return base[:2] + struct.pack("!H", body) + base[4:] + tlv


BAD = {
    "truncated": [SAMPLE_REQUEST[:19], b"", SAMPLE_REQUEST[:-4]],
    "bad-header": [b"\x80" + SAMPLE_REQUEST[1:]],
    "bad-cookie": [SAMPLE_REQUEST[:4] + b"\x00\x00\x00\x00" + SAMPLE_REQUEST[8:]],
    "bad-length": [SAMPLE_REQUEST + b"\x00\x00\x00\x00",
                   SAMPLE_REQUEST[:2] + b"\x00\x57" + SAMPLE_REQUEST[4:-1]],
    "bad-fingerprint": [SAMPLE_REQUEST[:-1] + b"\x00",
                        SAMPLE_REQUEST[:30] + b"X" + SAMPLE_REQUEST[31:]],
    "bad-family": [with_attribute(0x0020, b"\x00\x03\x12\x34" + bytes(4)),
                   with_attribute(0x802C, b"\x00\x00\x12\x34" + bytes(4)),
                   with_attribute(0x0001, b"")],
    "bad-attribute": [with_attribute(0x0020, b"\x00\x01\x12\x34" + bytes(16)),
                      SAMPLE_IPV4_RESPONSE[:22] + b"\x00\xff" + SAMPLE_IPV4_RESPONSE[24:]],
    "unknown-method": [b"\x00\x05" + SAMPLE_REQUEST[2:]],
    "malformed": [with_attribute(0x8022, b"\xff\xfe\xfd"),        # SOFTWARE not UTF-8
                  with_attribute(0x0024, b"\x01\x02")],           # PRIORITY too short
}


@pytest.mark.parametrize("reason,data", [(r, d) for r, ds in BAD.items() for d in ds],
                         ids=[f"{r}-{i}" for r, ds in BAD.items() for i in range(len(ds))])
def test_malformed_input_raises_one_named_error(reason: str, data: bytes) -> None:
    with pytest.raises(StunDecodeError) as info:
        decode(data)
    assert info.value.reason == reason
    assert isinstance(info.value, NatError) and isinstance(info.value, RemoteError)


def test_fingerprint_not_last_is_rejected() -> None:
    data = with_attribute(0x8022, b"late", base=binding_request(TXID))
    with pytest.raises(StunDecodeError, match="not last"):
        decode(data)


def test_unknown_comprehension_required_attributes_are_reported_not_raised() -> None:
    data = with_attribute(0x7F01, b"abc")
    data = with_attribute(0x0777, b"", base=data)
    data = with_attribute(0xC001, b"optional", base=data)  # comprehension-optional: ignored
    decoded = decode(data)
    assert decoded.unknown_required == (0x7F01, 0x0777)


def test_attributes_after_message_integrity_are_ignored() -> None:
    base = SAMPLE_REQUEST[:-8]  # drop FINGERPRINT: MESSAGE-INTEGRITY is last
    base = base[:2] + struct.pack("!H", len(base) - 20) + base[4:]
    data = with_attribute(0x7F01, b"x", base=base)
    data = with_attribute(0x0020, b"\x00\x09", base=data)  # bad family, but unauthenticated
    decoded = decode(data)
    assert decoded.unknown_required == ()
    assert decoded.message.check_message_integrity(PASSWORD)


# -- fuzzing ------------------------------------------------------------------------------

def decode_or_named_error(data: bytes) -> None:
    """Decodes, or raises only ``StunDecodeError`` with a reason from the codec's table."""
    try:
        decode(data)
    except StunDecodeError as exc:
        assert exc.reason in BAD, exc.reason


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120))
def test_fuzz_random_bytes_only_raise_the_named_error(data: bytes) -> None:
    decode_or_named_error(data)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([SAMPLE_REQUEST, SAMPLE_IPV4_RESPONSE, SAMPLE_IPV6_RESPONSE,
                        binding_request(TXID, change_ip=True)]),
       st.lists(st.tuples(st.integers(0, 107), st.integers(0, 255)), max_size=4),
       st.integers(0, 108))
def test_fuzz_mutated_vectors_only_raise_the_named_error(
        vector: bytes, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(vector)
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
    decode_or_named_error(bytes(data[:max(cut, 20)]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=24)), max_size=6),
       st.sampled_from([0x0001, 0x0101, 0x0111, 0x0011]))
def test_fuzz_well_framed_random_attributes(attrs: list[tuple[int, bytes]], mtype: int) -> None:
    """Framing right, contents random: reaches aioice's attribute decoders."""
    body = b"".join(struct.pack("!HH", t, len(v)) + v + bytes(-len(v) & 3) for t, v in attrs)
    data = struct.pack("!HH", mtype, len(body)) + bytes.fromhex("2112a442") + TXID + body
    decode_or_named_error(data)


# -- the server's fast encoder equals the aioice encoding -----------------------------------

addresses = st.one_of(
    st.tuples(st.ip_addresses(v=4).map(str), st.integers(0, 65535)),
    st.tuples(st.ip_addresses(v=6).map(str), st.integers(0, 65535)))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=12, max_size=12), addresses,
       st.none() | addresses, st.none() | addresses,
       st.none() | st.text(max_size=20), st.booleans())
def test_fast_success_encoder_matches_aioice(txid, mapped, origin, other, software,
                                             fingerprint) -> None:
    attributes = {"XOR-MAPPED-ADDRESS": mapped, "MAPPED-ADDRESS": mapped}
    if origin is not None:
        attributes["RESPONSE-ORIGIN"] = origin
    if other is not None:
        attributes["OTHER-ADDRESS"] = other
    if software:
        attributes["SOFTWARE"] = software
    expected = encode(Message(Method.BINDING, Class.RESPONSE, txid, attributes),
                      fingerprint=fingerprint)
    assert encode_binding_success(txid, mapped, response_origin=origin, other_address=other,
                                  software=software, fingerprint=fingerprint) == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=12, max_size=12), st.booleans(),
       st.lists(st.tuples(st.integers(0, 27), st.integers(0, 255)), max_size=2))
def test_plain_request_fast_path_agrees_with_decode(txid: bytes, fingerprint: bool,
                                                    edits) -> None:
    data = bytearray(binding_request(txid, fingerprint=fingerprint))
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
    fast = plain_binding_request(bytes(data))
    try:
        decoded = decode(bytes(data))
    except StunDecodeError:
        assert fast is None
        return
    plain = (decoded.message.message_method == Method.BINDING
             and decoded.message.message_class == Class.REQUEST
             and not decoded.unknown_required
             and set(decoded.attributes) <= {"FINGERPRINT"})
    if fast is not None:  # None is always safe: the server falls back to decode()
        assert plain and fast == (decoded.transaction_id, decoded.fingerprint)


def test_plain_request_fast_path_examples() -> None:
    assert plain_binding_request(binding_request(TXID)) == (TXID, True)
    assert plain_binding_request(binding_request(TXID, fingerprint=False)) == (TXID, False)
    assert plain_binding_request(binding_request(TXID, change_port=True)) is None
    assert plain_binding_request(binding_request(TXID)[:-1] + b"\x00") is None
