"""STUN message codec: ``aioice.stun``'s pure codec behind one error (RFC 8489, RFC 5780).

aioice's ``parse_message`` / ``Message`` carry every attribute we need (RFC 5780's
CHANGE-REQUEST, RESPONSE-ORIGIN and OTHER-ADDRESS included). Only that codec is used: its
``Transaction`` runs its own timers, ours are sans-I/O (``nat.stun.transaction``).

What this wrapper adds, checked *before* aioice sees the bytes (aioice is lenient about
all of them and raises several exception types for the rest):

    rule (RFC 8489 section)                                  | StunDecodeError.reason
    ---------------------------------------------------------+-----------------------
    at least a 20-byte header (5)                            | truncated
    two top bits of the type are zero (5)                    | bad-header
    magic cookie 0x2112A442 at offset 4 (5)                  | bad-cookie
    header length covers exactly the rest, a multiple of 4   | truncated / bad-length
    every attribute, padded, fits in the message (14)        | bad-attribute
    address attributes name family 0x01 (8 bytes) or 0x02    | bad-family
      (20 bytes) (14.1, 14.2)                                |
    FINGERPRINT, if present, is last and matches (14.7)      | bad-fingerprint
    the method is one aioice knows                           | unknown-method
    anything aioice still rejects (bad UTF-8, ...)           | malformed

Unknown *comprehension-required* attributes (type < 0x8000, section 14) are not an error
of the codec: ``decode`` reports them in ``Decoded.unknown_required`` so the server can
answer a request with 420 + UNKNOWN-ATTRIBUTES and the client can discard a response
(section 6.3). Attributes after MESSAGE-INTEGRITY, except FINGERPRINT, are ignored as
aioice ignores them (section 9), so they are neither checked nor reported.

Encoding pads with zero bytes (RFC 5769 vectors pad with spaces; padding content is
free). UNKNOWN-ATTRIBUTES (0x000A) is missing from aioice's table, so ``encode`` appends
it itself.

``plain_binding_request`` recognises the commonest datagram a node gets -- a Binding
request with no attribute but an optional FINGERPRINT -- without building a ``Message``
(a property test checks it agrees with ``decode``). ``encode_binding_success`` is the
server's other hot path: for IPv4 it packs the address
attributes with ``struct`` instead of aioice's ``ipaddress``-based packer (which cost
~70% of a request), producing the same bytes as ``encode`` (a property test checks that);
anything else goes through ``encode``.
"""

from __future__ import annotations

import os
import random
import socket
import struct
from dataclasses import dataclass
from typing import Any

from aioice import stun as _aioice
from aioice.stun import Class, Message, Method

from nat.errors import StunDecodeError

__all__ = [
    "Class",
    "Decoded",
    "Message",
    "Method",
    "StunDecodeError",
    "CHANGE_IP",
    "CHANGE_PORT",
    "ATTR_UNKNOWN_ATTRIBUTES",
    "decode",
    "encode",
    "encode_binding_success",
    "plain_binding_request",
    "binding_request",
    "new_transaction_id",
]

HEADER_LENGTH = 20
MAGIC_COOKIE = b"\x21\x12\xa4\x42"

CHANGE_IP = 0x04  # CHANGE-REQUEST flag bits (RFC 5780 section 7.2)
CHANGE_PORT = 0x02

ATTR_MESSAGE_INTEGRITY = 0x0008
ATTR_UNKNOWN_ATTRIBUTES = 0x000A
ATTR_FINGERPRINT = 0x8028
_ADDRESS_TYPES = frozenset(
    t for t, _, pack, _ in _aioice.ATTRIBUTES
    if pack in (_aioice.pack_address, _aioice.pack_xor_address))
_KNOWN_TYPES = frozenset(_aioice.ATTRIBUTES_BY_TYPE) | {ATTR_UNKNOWN_ATTRIBUTES}
_KNOWN_METHODS = frozenset(int(m) for m in Method)
_ADDRESS_LENGTH = {0x01: 8, 0x02: 20}

# What aioice's parser can raise on input that passed our checks (bad UTF-8 is a
# ValueError, a short unsigned is a struct.error).
_AIOICE_ERRORS = (ValueError, struct.error, IndexError, KeyError, TypeError)


@dataclass(frozen=True)
class Decoded:
    """A well-formed STUN message.

    ``unknown_required``: types of unknown comprehension-required attributes, in order.
    ``fingerprint``: the message carried a (valid) FINGERPRINT.
    """

    message: Message
    unknown_required: tuple[int, ...] = ()
    fingerprint: bool = False

    @property
    def transaction_id(self) -> bytes:
        return self.message.transaction_id

    @property
    def attributes(self) -> dict[str, Any]:
        return self.message.attributes


def decode(data: bytes) -> Decoded:
    """Decode one datagram. Raises ``StunDecodeError`` (only) when it is not well-formed."""
    size = len(data)
    if size < HEADER_LENGTH:
        raise StunDecodeError("truncated", f"{size} bytes")
    if data[0] & 0xC0:
        raise StunDecodeError("bad-header", "top bits of the message type are set")
    if data[4:8] != MAGIC_COOKIE:
        raise StunDecodeError("bad-cookie")
    length = (data[2] << 8) | data[3]
    if HEADER_LENGTH + length > size:
        raise StunDecodeError("truncated", f"header says {length} bytes of attributes")
    if HEADER_LENGTH + length < size or length & 3:
        raise StunDecodeError("bad-length", f"header says {length}, datagram has {size - 20}")
    message_type = (data[0] << 8) | data[1]
    if message_type & 0x3EEF not in _KNOWN_METHODS:
        raise StunDecodeError("unknown-method", f"type {message_type:#06x}")
    unknown, fingerprint = _check_attributes(data)
    try:
        message = _aioice.parse_message(data)
    except _AIOICE_ERRORS as exc:
        raise StunDecodeError("malformed", str(exc)) from None
    return Decoded(message, unknown, fingerprint)


_PLAIN_REQUEST_HEAD = b"\x00\x01\x00\x00" + MAGIC_COOKIE
_FP_REQUEST_HEAD = b"\x00\x01\x00\x08" + MAGIC_COOKIE
_FP_ATTR_HEAD = b"\x80\x28\x00\x04"


def plain_binding_request(data: bytes) -> tuple[bytes, bool] | None:
    """(transaction id, has FINGERPRINT) if ``data`` is a well-formed Binding request whose
    only attribute is an optional, valid FINGERPRINT; otherwise None (use ``decode``)."""
    size = len(data)
    if size == HEADER_LENGTH and data[:8] == _PLAIN_REQUEST_HEAD:
        return data[8:20], False
    if (size == HEADER_LENGTH + 8 and data[:8] == _FP_REQUEST_HEAD
            and data[20:24] == _FP_ATTR_HEAD
            and int.from_bytes(data[24:28], "big") == _aioice.message_fingerprint(data[:20])):
        return data[8:20], True
    return None


def _check_attributes(data: bytes) -> tuple[tuple[int, ...], bool]:
    """Walk the attribute TLVs (see the table above); return (unknown required, fingerprint)."""
    end = len(data)
    pos = HEADER_LENGTH
    unknown: list[int] = []
    after_integrity = False
    while pos < end:
        if pos + 4 > end:
            raise StunDecodeError("bad-attribute", "attribute header past the end")
        attr_type = (data[pos] << 8) | data[pos + 1]
        attr_len = (data[pos + 2] << 8) | data[pos + 3]
        value_end = pos + 4 + attr_len
        padded_end = value_end + (-attr_len & 3)
        if padded_end > end:
            raise StunDecodeError("bad-attribute", f"attribute {attr_type:#06x} past the end")
        if attr_type == ATTR_FINGERPRINT:
            if padded_end != end or attr_len != 4:
                raise StunDecodeError("bad-fingerprint", "FINGERPRINT is not last")
            expected = _aioice.message_fingerprint(data[:pos])
            if int.from_bytes(data[pos + 4:value_end], "big") != expected:
                raise StunDecodeError("bad-fingerprint")
            return tuple(unknown), True
        if not after_integrity:
            if attr_type in _ADDRESS_TYPES:
                family = data[pos + 5] if attr_len >= 2 else -1
                if family not in _ADDRESS_LENGTH:
                    raise StunDecodeError("bad-family", f"family {family} in {attr_type:#06x}")
                if attr_len != _ADDRESS_LENGTH[family]:
                    raise StunDecodeError("bad-attribute", f"address length {attr_len}")
            elif attr_type < 0x8000 and attr_type not in _KNOWN_TYPES:
                unknown.append(attr_type)
            after_integrity = attr_type == ATTR_MESSAGE_INTEGRITY
        pos = padded_end
    return tuple(unknown), False


def encode(message: Message, *, fingerprint: bool = False,
           unknown_attributes: tuple[int, ...] = ()) -> bytes:
    """Encode ``message`` (its attributes must be in aioice's table).

    ``unknown_attributes``: append an UNKNOWN-ATTRIBUTES attribute listing these types
    (RFC 8489 section 14.9). ``fingerprint``: append FINGERPRINT last (section 14.7).
    """
    data = bytes(message)
    if unknown_attributes:
        value = b"".join(struct.pack("!H", t) for t in unknown_attributes)
        data = _append(data, ATTR_UNKNOWN_ATTRIBUTES, value)
    if fingerprint:
        crc = _aioice.message_fingerprint(data)
        data = _append(data, ATTR_FINGERPRINT, struct.pack("!I", crc))
    return data


_SUCCESS_TYPE = int(Method.BINDING) | int(Class.RESPONSE)
_ATTR_XOR_MAPPED = 0x0020
_ATTR_MAPPED = 0x0001
_ATTR_RESPONSE_ORIGIN = 0x802B
_ATTR_OTHER_ADDRESS = 0x802C
_ATTR_SOFTWARE = 0x8022


def encode_binding_success(transaction_id: bytes, mapped: tuple[str, int], *,
                           response_origin: tuple[str, int] | None = None,
                           other_address: tuple[str, int] | None = None,
                           software: str | None = None, fingerprint: bool = False) -> bytes:
    """A Binding success response: XOR-MAPPED-ADDRESS, MAPPED-ADDRESS, then (if given)
    RESPONSE-ORIGIN, OTHER-ADDRESS, SOFTWARE, FINGERPRINT -- byte for byte what ``encode``
    gives for the same attributes in that order."""
    attributes: dict[str, Any] = {"XOR-MAPPED-ADDRESS": mapped, "MAPPED-ADDRESS": mapped}
    if response_origin is not None:
        attributes["RESPONSE-ORIGIN"] = response_origin
    if other_address is not None:
        attributes["OTHER-ADDRESS"] = other_address
    if software:
        attributes["SOFTWARE"] = software
    try:
        parts = [_pack_ipv4(_ATTR_XOR_MAPPED, mapped, transaction_id),
                 _pack_ipv4(_ATTR_MAPPED, mapped)]
        if response_origin is not None:
            parts.append(_pack_ipv4(_ATTR_RESPONSE_ORIGIN, response_origin))
        if other_address is not None:
            parts.append(_pack_ipv4(_ATTR_OTHER_ADDRESS, other_address))
    except _NotIPv4:
        message = Message(Method.BINDING, Class.RESPONSE, transaction_id, attributes)
        return encode(message, fingerprint=fingerprint)
    if software:
        value = software.encode("utf8")
        parts.append(struct.pack("!HH", _ATTR_SOFTWARE, len(value)) + value
                     + bytes(-len(value) & 3))
    body = b"".join(parts)
    data = struct.pack("!HHI", _SUCCESS_TYPE, len(body), 0x2112A442) + transaction_id + body
    if fingerprint:
        data = _append(data, ATTR_FINGERPRINT,
                       struct.pack("!I", _aioice.message_fingerprint(data)))
    return data


class _NotIPv4(Exception):
    pass


def _pack_ipv4(attr_type: int, addr: tuple[str, int], transaction_id: bytes | None = None,
               ) -> bytes:
    """One IPv4 (XOR-)address attribute (RFC 8489 sections 14.1, 14.2), or ``_NotIPv4``."""
    ip, port = addr
    if ip.count(".") != 3:
        raise _NotIPv4
    try:
        packed = socket.inet_aton(ip)  # strict enough once the three dots are there
    except OSError:
        raise _NotIPv4 from None
    if transaction_id is not None:
        port ^= 0x2112
        packed = (int.from_bytes(packed, "big") ^ 0x2112A442).to_bytes(4, "big")
    return struct.pack("!HHBBH", attr_type, 8, 0, 1, port) + packed


def _append(data: bytes, attr_type: int, value: bytes) -> bytes:
    """Append one attribute (zero-padded) and fix the header's length field."""
    tlv = struct.pack("!HH", attr_type, len(value)) + value + bytes(-len(value) & 3)
    body = len(data) - HEADER_LENGTH + len(tlv)
    return data[:2] + struct.pack("!H", body) + data[4:] + tlv


def binding_request(transaction_id: bytes, *, change_ip: bool = False,
                    change_port: bool = False, fingerprint: bool = True) -> bytes:
    """A Binding request, with CHANGE-REQUEST (RFC 5780 section 7.2) when asked."""
    attributes: dict[str, Any] = {}
    if change_ip or change_port:
        attributes["CHANGE-REQUEST"] = (CHANGE_IP if change_ip else 0) | (
            CHANGE_PORT if change_port else 0)
    message = Message(Method.BINDING, Class.REQUEST, transaction_id, attributes)
    return encode(message, fingerprint=fingerprint)


def new_transaction_id(rng: random.Random | None = None) -> bytes:
    """96 random bits (RFC 8489 section 5). ``rng``: a ``random.Random`` for determinism."""
    if rng is None:
        return os.urandom(12)
    return rng.getrandbits(96).to_bytes(12, "big")
