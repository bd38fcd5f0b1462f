"""DHT datagram codec: first byte ``stack.base.port.DHT_BYTE`` (0x04), then one msgpack array.

Rules of the format (golden bytes in tests/discovery/test_wire.py):

    request = 0x04 || msgpack [kind, txid, sender, flags, cookie, target, record, pad]
    prove   = 0x04 || msgpack [5, nonce, sender, flags, cookie, b"", b"", pad, proof]
    reply   = 0x04 || msgpack [kind|0x80, txid, responder, flags, proof, cookie,
                               contacts, record, result(, challenge)]

    field      type          meaning
    ---------  ------------  --------------------------------------------------------------
    kind       int           PING=1, FIND_NODE=2, FIND_VALUE=3, STORE=4 (reply: | 0x80);
                             PROVE=5 is one-way (never answered)
    txid       bin 8         random transaction id; also the identity challenge nonce
                             (PROVE: the ``challenge`` of the reply it answers)
    sender /   bin 38        peer-id bytes of the sender (claimed, not yet verified: the
    responder                node id is SHA-256 of them; only a proof binds them)
    flags      int           bit 0: sender is a server (may enter routing tables);
                             bit 1 (request): please prove your identity;
                             bit 1 (reply): the record did not fit the amplification
                             budget, ask again with the cookie
    cookie     bin 0..16     request: the cookie this responder gave us earlier (proves
                             we receive at our source address); reply: a fresh cookie
    target     bin 0/32      FIND_NODE/FIND_VALUE/STORE: 256-bit key
    record     bin 0..1000   STORE: the signed announcement; reply: the stored one
    pad        bin           padding so an un-cookied request buys a full reply
    proof      bin 0/64      reply: Ed25519 signature by the responder's key over
                             PROOF_DOMAIN || txid (only when asked); PROVE: bin 64, the
                             sender's signature over PROVE_DOMAIN || nonce
    challenge  bin 8         optional last reply item: "I would add you to my table: send
                             PROVE for this nonce" (a counter-challenge riding on the reply,
                             so a mutual identity proof is 3 datagrams, not 4)
    contacts   array         [[peer-id bin 38, IPv4 bin 4, port int], ...]
    result     str           STORE outcome ("stored", "unchanged", "stale_seq", ...)

Decoding never raises: anything that does not fit the table is ``None`` (a counted drop).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

import msgpack

from stack.base.net import Address
from stack.base.port import DHT_BYTE

__all__ = [
    "PING", "FIND_NODE", "FIND_VALUE", "STORE", "PROVE", "REPLY_BIT",
    "FLAG_SERVER", "FLAG_WANT_PROOF", "FLAG_TRUNCATED",
    "PROOF_DOMAIN", "PROVE_DOMAIN", "MAX_DATAGRAM", "MAX_RECORD", "PEER_ID_LEN", "TXID_LEN",
    "WireContact", "wire_contact", "Request", "Reply",
    "encode_request", "encode_reply", "decode",
]

PING, FIND_NODE, FIND_VALUE, STORE, PROVE = 1, 2, 3, 4, 5
REPLY_BIT = 0x80
KINDS = (PING, FIND_NODE, FIND_VALUE, STORE)  # kinds that are answered

FLAG_SERVER = 1
FLAG_WANT_PROOF = 2
FLAG_TRUNCATED = 2

PROOF_DOMAIN = b"p2pstack-dht-proof-v1:"
PROVE_DOMAIN = b"p2pstack-dht-prove-v1:"  # separate: a reply proof is never a PROVE
MAX_DATAGRAM = 2400  # biggest legal reply: 20 contacts + a 1000-byte record + headers
MAX_RECORD = 1000    # BEP 44 bound (DESIGN.md section 4)
PEER_ID_LEN = 38
TXID_LEN = 8
KEY_LEN = 32
MAX_COOKIE = 16
MAX_CONTACTS = 32

_PREFIX = bytes([DHT_BYTE])
_PEER_ID_PREFIX = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])  # identity mh of Ed25519 key


@dataclass(frozen=True, slots=True)
class WireContact:
    """A peer as another node described it (claimed, not verified)."""

    peer_id: bytes
    addr: Address
    # its wire form, made on first use (encode_contact); not part of its value
    _packed: list[object] | None = field(default=None, init=False, repr=False, compare=False)


def wire_contact(peer_id: bytes, addr: Address) -> WireContact:
    """The one ``WireContact`` for (peer id, address) in this process, and through it one
    copy of the id bytes and the address tuple: the same peers are named in many replies
    and sit in many routing tables (in a simulation, thousands of them). Bounded:
    cleared when full, after which new contacts are shared again from scratch."""
    key = (peer_id, addr)
    contact = _SHARED.get(key)
    if contact is None:
        if len(_SHARED) >= 1 << 17:
            _SHARED.clear()
        contact = _SHARED[key] = WireContact(peer_id, addr)
    return contact


_SHARED: dict[tuple[bytes, Address], WireContact] = {}


@dataclass(frozen=True, slots=True)
class Request:
    kind: int
    txid: bytes
    sender: bytes
    flags: int
    cookie: bytes = b""
    target: bytes = b""
    record: bytes = b""
    proof: bytes = b""  # PROVE only

    @property
    def server(self) -> bool:
        return bool(self.flags & FLAG_SERVER)

    @property
    def want_proof(self) -> bool:
        return bool(self.flags & FLAG_WANT_PROOF)


@dataclass(frozen=True, slots=True)
class Reply:
    kind: int  # the request kind it answers (without REPLY_BIT)
    txid: bytes
    responder: bytes
    flags: int
    proof: bytes = b""
    cookie: bytes = b""
    contacts: tuple[WireContact, ...] = ()
    record: bytes = b""
    result: str = ""
    challenge: bytes = b""

    @property
    def server(self) -> bool:
        return bool(self.flags & FLAG_SERVER)

    @property
    def truncated(self) -> bool:
        return bool(self.flags & FLAG_TRUNCATED)


def _pack(items: list[object]) -> bytes:
    packed: bytes = msgpack.packb(items, use_bin_type=True)  # msgpack ships no types
    return _PREFIX + packed


def encode_request(req: Request, min_size: int = 0) -> bytes:
    """Encode ``req``, padded with zero bytes to at least ``min_size`` bytes."""
    items: list[object] = [req.kind, req.txid, req.sender, req.flags, req.cookie, req.target,
                           req.record, b""]
    if req.kind == PROVE:
        items.append(req.proof)
    data = _pack(items)
    short = min_size - len(data)
    if short > 0:
        # bin8 header is 2 bytes up to 255 bytes of payload, bin16 is 3 bytes beyond.
        items[7] = bytes(short if short <= 255 else short - 1)
        data = _pack(items)
    return data


def encode_contact(c: WireContact) -> list[object]:
    """Wire form of a contact, kept on it: the same contacts are named in many replies
    (the list is only read by msgpack)."""
    packed = c._packed
    if packed is None:
        packed = [c.peer_id, socket.inet_aton(c.addr[0]), c.addr[1]]
        object.__setattr__(c, "_packed", packed)  # a cache, not a change of value
    return packed


def encode_reply(rep: Reply) -> bytes:
    contacts = [c._packed or encode_contact(c) for c in rep.contacts]
    items: list[object] = [rep.kind | REPLY_BIT, rep.txid, rep.responder, rep.flags, rep.proof,
                           rep.cookie, contacts, rep.record, rep.result]
    if rep.challenge:
        items.append(rep.challenge)
    return _pack(items)


def valid_peer_id(data: object) -> bool:
    return isinstance(data, bytes) and len(data) == PEER_ID_LEN and data.startswith(_PEER_ID_PREFIX)


def _bin(value: object, sizes: tuple[int, ...] | range) -> bool:
    return isinstance(value, bytes) and len(value) in sizes


def _contact(item: object) -> WireContact | None:
    if not (type(item) is list and len(item) == 3):
        return None
    key = (item[0], item[1], item[2], type(item[2]))  # the type: True == 1, but not a port
    try:
        return _CONTACTS[key]
    except (KeyError, TypeError):  # TypeError: an unhashable (garbage) item
        pass
    contact = _parse_contact(item)
    if contact is not None:
        if len(_CONTACTS) >= 1 << 16:
            _CONTACTS.clear()
        _CONTACTS[key] = contact
    return contact


# Parsed contacts by their wire triple: the same peers are named in many replies, and a
# WireContact is immutable, so parse each once (bounded; cleared when full).
_CONTACTS: dict[tuple[object, object, object, type], WireContact] = {}


def _parse_contact(item: object) -> WireContact | None:
    if not (type(item) is list and len(item) == 3):
        return None
    peer_id, ip, port = item
    if not (type(peer_id) is bytes and len(peer_id) == PEER_ID_LEN
            and peer_id.startswith(_PEER_ID_PREFIX) and type(ip) is bytes and len(ip) == 4
            and type(port) is int and 0 < port < 65536):
        return None
    return wire_contact(peer_id, (socket.inet_ntoa(ip), port))


def decode(data: bytes) -> Request | Reply | None:
    """Parse one datagram; ``None`` for anything malformed (never raises)."""
    if len(data) > MAX_DATAGRAM or data[:1] != _PREFIX:
        return None
    try:
        items = msgpack.unpackb(data[1:], raw=False, use_list=True, max_bin_len=MAX_DATAGRAM,
                                max_str_len=64, max_array_len=MAX_CONTACTS + 1, max_map_len=0)
    except Exception:  # msgpack raises a zoo of types on garbage; all mean "malformed"
        return None
    if not isinstance(items, list) or not items or not isinstance(items[0], int):
        return None
    kind = items[0]
    if kind in KINDS:
        return _request(kind, items)
    if kind == PROVE:
        return _prove(items)
    if kind & REPLY_BIT and kind & ~REPLY_BIT in KINDS:
        return _reply(kind & ~REPLY_BIT, items)
    return None


# ``items`` below are decoded msgpack values (Any): each is checked before it is used.
def _request(kind: int, items: list[Any]) -> Request | None:
    if len(items) != 8:
        return None
    _, txid, sender, flags, cookie, target, record, pad = items
    if not (_bin(txid, (TXID_LEN,)) and valid_peer_id(sender) and isinstance(flags, int)
            and _bin(cookie, range(MAX_COOKIE + 1)) and isinstance(pad, bytes)
            and _bin(record, range(MAX_RECORD + 1))):
        return None
    need_target = kind != PING
    if not _bin(target, (KEY_LEN,) if need_target else (0,)):
        return None
    if (kind == STORE) != bool(record):
        return None
    return Request(kind, txid, sender, flags, cookie, target, record)


def _prove(items: list[Any]) -> Request | None:
    if len(items) != 9:
        return None
    _, nonce, sender, flags, cookie, target, record, pad, proof = items
    if not (_bin(nonce, (TXID_LEN,)) and valid_peer_id(sender) and isinstance(flags, int)
            and _bin(cookie, range(MAX_COOKIE + 1)) and target == b"" and record == b""
            and isinstance(pad, bytes) and _bin(proof, (64,))):
        return None
    return Request(PROVE, nonce, sender, flags, cookie, proof=proof)


def _reply(kind: int, items: list[Any]) -> Reply | None:
    if len(items) == 10:
        challenge = items.pop()
        if not _bin(challenge, (TXID_LEN,)):
            return None
    elif len(items) == 9:
        challenge = b""
    else:
        return None
    _, txid, responder, flags, proof, cookie, contacts, record, result = items
    if not (_bin(txid, (TXID_LEN,)) and valid_peer_id(responder) and isinstance(flags, int)
            and _bin(proof, (0, 64)) and _bin(cookie, range(MAX_COOKIE + 1))
            and isinstance(contacts, list) and _bin(record, range(MAX_RECORD + 1))
            and isinstance(result, str)):
        return None
    parsed = []
    for item in contacts:
        contact = _contact(item)
        if contact is None:
            return None
        parsed.append(contact)
    return Reply(kind, txid, responder, flags, proof, cookie, tuple(parsed), record, result,
                 challenge)
