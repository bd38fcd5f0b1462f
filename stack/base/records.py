"""Signed records: the envelope and the three messages of seed 004 (DESIGN.md section 4).

Pure: no I/O, no clock. Time enters as ``now`` (Unix seconds, float); timestamps on the
wire are integer Unix **milliseconds**, as in the seed. Randomness: a fresh nonce comes
from ``os.urandom`` unless the caller passes one.

Envelope (libp2p RFC 0003 "signed envelopes" shape)
----------------------------------------------------
Wire: a msgpack array ``[public_key, payload_type, payload, signature]``, all ``bin``:

=============  ========  ===============================================================
field          size      meaning
=============  ========  ===============================================================
public_key     32        the signer's raw Ed25519 public key
payload_type   <= 64     what the payload is (table below); selects the domain
payload        any       the msgpack-encoded message
signature      64        Ed25519 over ``uvarint(len(domain)) || domain ||
                         uvarint(len(type)) || type || uvarint(len(payload)) || payload``
=============  ========  ===============================================================

As in RFC 0003 the domain string is not on the wire: the verifier knows it from the
payload type, so a signature made for one kind of record never verifies as another.

=====================  =================================  ====================================
message                payload_type                       domain
=====================  =================================  ====================================
IdentityExchange       ``/p2pstack/identity-exchange/1``  ``p2pstack-identity-exchange``
Announcement           ``/p2pstack/announcement/1``       ``p2pstack-announcement``
RelayedAnnouncement    ``/p2pstack/relayed/1``            ``p2pstack-relayed-announcement``
=====================  =================================  ====================================

Payloads are msgpack arrays in the field order below (arrays, not maps: smaller, and no
key order to agree on, so our encoder's output is deterministic). Peer ids are the libp2p
multihash bytes (38), strings are UTF-8 ``str``, ``now``-derived times are ``uint``
milliseconds. The seed's ``algorithm: "Ed25519"`` is implied by the peer-id key type, and
its ``signature`` / ``relaySignature`` are the envelope signatures; the rest map field for
field:

- IdentityExchange: ``[peer_id, display_name, sign_public_key(32), dh_public_key(bin|nil),
  timestamp_ms, addrs]``
- Announcement (seed: ``peer_reconnection``): ``[peer_id, display_name, timestamp_ms,
  nonce(16..32), seq, previous_connections, addrs]``
- RelayedAnnouncement: ``[original(bin: the wrapped envelope), relayed_by, relay_timestamp_ms]``,
  sealed by the relay; ``original`` may itself be relayed, so chains nest outward.

Strict decoding: the input must be one msgpack object of exactly this shape with the
exact types (``bool`` is not an int, ``str`` is not ``bin``, no trailing bytes); the
envelope must also be canonical, since anyone forwarding it could otherwise re-encode it
without breaking the signature (a payload's bytes are fixed by the signature itself).
Anything else is ``malformed``. Sizes are checked before parsing: an announcement envelope
is at most ``MAX_ANNOUNCEMENT_SIZE`` (1000, the BEP 44 bound the DHT uses), a relayed one
at most ``MAX_RELAYED_SIZE``.
"""

from __future__ import annotations

import enum
import functools
import os
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any, NamedTuple

import msgpack
from nacl.bindings import crypto_sign_open
from nacl.exceptions import CryptoError

from stack.base.errors import LocalError
from stack.base.identity import PEER_ID_LENGTH, Identity, PeerId

__all__ = [
    "Result",
    "Envelope",
    "IdentityExchange",
    "Announcement",
    "RelayedAnnouncement",
    "MalformedRecord",
    "RecordTooLarge",
    "sign_announcement",
    "make_identity_exchange",
    "relay",
    "decode_announcement",
    "decode_identity_exchange",
    "decode_relayed",
    "verify_record",
    "verify_identity_exchange",
    "timestamp_ms",
    "signed_bytes",
    "ANNOUNCEMENT_TYPE",
    "IDENTITY_EXCHANGE_TYPE",
    "RELAYED_TYPE",
    "DOMAINS",
    "MAX_ANNOUNCEMENT_SIZE",
    "MAX_RELAYED_SIZE",
    "DEFAULT_DRIFT",
]

ANNOUNCEMENT_TYPE = b"/p2pstack/announcement/1"
IDENTITY_EXCHANGE_TYPE = b"/p2pstack/identity-exchange/1"
RELAYED_TYPE = b"/p2pstack/relayed/1"
DOMAINS: dict[bytes, bytes] = {
    ANNOUNCEMENT_TYPE: b"p2pstack-announcement",
    IDENTITY_EXCHANGE_TYPE: b"p2pstack-identity-exchange",
    RELAYED_TYPE: b"p2pstack-relayed-announcement",
}

MAX_ANNOUNCEMENT_SIZE = 1000
# Each relay hop adds 178 bytes (envelope + relay payload); room for one hop beyond the
# verifier's default limit of 3, so a 4-hop chain reads as relay_chain_too_long.
MAX_RELAYED_SIZE = 2048
MAX_IDENTITY_EXCHANGE_SIZE = 1000
NONCE_MIN, NONCE_MAX = 16, 32
DEFAULT_NONCE_SIZE = 16
MAX_SEQ = 2**64 - 1
MAX_TEXT = 255          # display name and each address, in characters
MAX_DH_KEY = 133        # an uncompressed P-521 point; P-256 (the seed's) is 65
DEFAULT_DRIFT = 60.0    # seconds; seed CONFIG.CLOCK_DRIFT_TOLERANCE


class Result(enum.StrEnum):
    """Verification result codes: exactly seed 004's, plus ``malformed`` and ``rate_limited``."""

    VALID = "valid"
    UNKNOWN_PEER = "unknown_peer"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    NONCE_REUSED = "nonce_reused"
    SEQUENCE_NUMBER_NOT_INCREMENTED = "sequence_number_not_incremented"
    INVALID_SIGNATURE = "invalid_signature"
    INVALID_RELAY_SIGNATURE = "invalid_relay_signature"
    RELAY_CHAIN_TOO_LONG = "relay_chain_too_long"
    MALFORMED = "malformed"
    RATE_LIMITED = "rate_limited"


class MalformedRecord(ValueError):
    """Bytes that are not a well-formed record. Decoders raise it; verifiers turn it into
    ``Result.MALFORMED``. A ``ValueError`` rather than a ``StackError``: it never leaves
    a verifier, it only carries the reason inside this layer."""


class RecordTooLarge(LocalError):
    """We tried to build a record larger than its wire bound (too many addresses, ...)."""


def timestamp_ms(now: float) -> int:
    """Unix seconds (float) -> the integer milliseconds records carry (floor)."""
    return int(now * 1000)


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Every record is shorter than MAX_RELAYED_SIZE, so its length prefix comes from a table.
_UVARINTS = [_uvarint(n) for n in range(MAX_RELAYED_SIZE + 1)]


def signed_bytes(domain: bytes, payload_type: bytes, payload: bytes) -> bytes:
    """The exact bytes an envelope signature covers.

    RFC 0003: each part uvarint-length-prefixed.
    """
    return b"".join((_uvarint(len(domain)), domain, _uvarint(len(payload_type)), payload_type,
                     _uvarint(len(payload)), payload))


_packb: Callable[[object], bytes] = msgpack.Packer(use_bin_type=True, autoreset=True).pack
_tuple_new = tuple.__new__
_unpackb = msgpack.unpackb
_UNPACK_ERRORS = (ValueError, TypeError, msgpack.UnpackException)
# Precomputed RFC 0003 framing of (domain, type): only the payload length varies.
_SIGNED_PREFIX = {t: _uvarint(len(d)) + d + _uvarint(len(t)) + t for t, d in DOMAINS.items()}
_PEER_ID_PREFIX = PeerId.from_public_key(bytes(32)).multihash[:-32]


def _unpack(data: bytes, what: str) -> tuple[Any, ...]:
    """Decode exactly one msgpack array, else ``MalformedRecord``.

    Sizes are bounded before we get here, so msgpack's C limits (derived from the input
    length) already stop length bombs; ext types, floats and maps fail the callers' exact
    type checks. ``unpackb`` refuses trailing bytes (``ExtraData``).
    """
    try:
        obj = _unpackb(data, use_list=False)  # msgpack 1.x defaults: raw=False, strict_map_key
    except _UNPACK_ERRORS as exc:
        raise MalformedRecord(f"{what}: not msgpack ({type(exc).__name__})") from None
    if type(obj) is not tuple:
        raise MalformedRecord(f"{what}: not an array")
    return obj


def _uint(value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_SEQ:
        raise MalformedRecord(f"{what}: not an unsigned integer")
    return value


def _text(value: object, what: str) -> str:
    if type(value) is not str or len(value) > MAX_TEXT:
        raise MalformedRecord(f"{what}: not a string of at most {MAX_TEXT} characters")
    return value


def _peer_id(value: object, what: str) -> PeerId:
    # The checks of PeerId.from_bytes, inlined: this runs on every record received.
    if type(value) is not bytes or len(value) != PEER_ID_LENGTH or not value.startswith(
            _PEER_ID_PREFIX):
        raise MalformedRecord(f"{what}: not an Ed25519 peer id")
    return PeerId(value)


def _addrs(value: object) -> tuple[str, ...]:
    if type(value) is not tuple:
        raise MalformedRecord("addrs: not an array")
    for a in value:
        if type(a) is not str or not 0 < len(a) <= MAX_TEXT:
            raise MalformedRecord("addrs: each address is a non-empty string")
    return value


# ---------------------------------------------------------------------------- envelope

class Envelope(NamedTuple):
    """A signed envelope (RFC 0003 shape). Fields are as received: *claimed*, not yet
    verified, until ``verify()`` says so. A NamedTuple, not a dataclass: it is built
    straight from the decoded msgpack array on every record received (the hot path)."""

    public_key: bytes
    payload_type: bytes
    payload: bytes
    signature: bytes

    @classmethod
    def seal(cls, identity: Identity, payload_type: bytes, payload: bytes) -> Envelope:
        sig = identity.sign(signed_bytes(DOMAINS[payload_type], payload_type, payload))
        return cls(identity.public_key, payload_type, payload, sig)

    def encode(self) -> bytes:
        return _packb(tuple(self))

    @classmethod
    def decode(cls, data: bytes, max_size: int = MAX_RELAYED_SIZE) -> Envelope:
        """Parse (not verify) an envelope; ``MalformedRecord`` on any defect.

        The size check comes first, before any parsing. The envelope must be canonical
        (a forwarder could otherwise re-encode it without breaking the signature): with
        the exact types checked, canonical msgpack is the unique shortest encoding, so a
        length comparison proves it: fixarray (1) + pk (2 + 32) + type (2 + len) +
        payload (bin header + len) + signature (2 + 64).
        """
        if type(data) is not bytes:
            raise MalformedRecord("envelope: not bytes")
        if len(data) > max_size:
            raise MalformedRecord(f"envelope: {len(data)} bytes, more than {max_size}")
        obj = _unpack(data, "envelope")
        if len(obj) != 4:
            raise MalformedRecord("envelope: not 4 fields")
        pk, ptype, payload, sig = obj
        if (type(pk) is not bytes or len(pk) != 32 or type(sig) is not bytes or len(sig) != 64
                or type(payload) is not bytes):
            raise MalformedRecord("envelope: field types")
        if ptype not in DOMAINS:  # also refuses a str: DOMAINS' keys are bytes
            raise MalformedRecord("envelope: unknown payload type")
        n = len(payload)
        if len(data) != 103 + len(ptype) + n + (2 if n < 0x100 else 3 if n < 0x10000 else 5):
            raise MalformedRecord("envelope: not in canonical form")
        return _tuple_new(cls, obj)

    def signed_bytes(self) -> bytes:
        """What the signature covers (``signed_bytes(domain, type, payload)``, with the
        framing prefix of each type precomputed)."""
        n = len(self.payload)
        return b"".join((_SIGNED_PREFIX[self.payload_type],
                         _UVARINTS[n] if n <= MAX_RELAYED_SIZE else _uvarint(n), self.payload))

    def verify(self) -> bool:
        """True if ``signature`` is the ``public_key``'s over domain + type + payload.

        Calls libsodium's ``crypto_sign_open`` directly, as ``VerifyKey.verify`` does
        underneath, without building a key object per record (the hot path).
        """
        return _signature_ok(self.signature + self.signed_bytes(), self.public_key)


@functools.lru_cache(maxsize=4096)
def _signature_ok(smessage: bytes, public_key: bytes) -> bool:
    """Ed25519 verify of signature || signed bytes, memoised by the exact bytes (a pure
    function of them): the same record reaches a node again and again (STOREs,
    republishes, GET answers), and each distinct one is checked once per process."""
    try:
        crypto_sign_open(smessage, public_key)
    except (CryptoError, ValueError, TypeError):  # bad signature; hand-built bad key
        return False
    return True


# ---------------------------------------------------------------------------- messages

@dataclass(frozen=True, slots=True)
class IdentityExchange:
    """Seed 004 ``identity_exchange``: sent once to a peer on first connection.

    ``sign_public_key`` must equal the peer id's key (the id is self-certifying);
    ``dh_public_key`` is the seed's optional key-agreement key, opaque bytes here.
    """

    peer_id: PeerId
    display_name: str
    sign_public_key: bytes
    dh_public_key: bytes | None
    timestamp_ms: int
    addrs: tuple[str, ...] = ()

    def encode_payload(self) -> bytes:
        return _packb((self.peer_id.multihash, self.display_name, self.sign_public_key,
                       self.dh_public_key, self.timestamp_ms, list(self.addrs)))

    @classmethod
    def decode_payload(cls, payload: bytes) -> IdentityExchange:
        obj = _unpack(payload, "identity exchange")
        if len(obj) != 6:
            raise MalformedRecord("identity exchange: not 6 fields")
        pid, name, spk, dh, ts, addrs = obj
        peer = _peer_id(pid, "peer_id")
        if type(spk) is not bytes or spk != peer.public_key:
            raise MalformedRecord("identity exchange: sign_public_key is not the peer id's key")
        if dh is not None and (type(dh) is not bytes or not 0 < len(dh) <= MAX_DH_KEY):
            raise MalformedRecord("identity exchange: dh_public_key")
        return cls(peer, _text(name, "display_name"), spk, dh, _uint(ts, "timestamp_ms"),
                   _addrs(addrs))


@dataclass(frozen=True, slots=True)
class Announcement:
    """Seed 004 ``peer_reconnection``: "I am ``peer_id``, now reachable at ``addrs``".

    ``seq`` strictly increases per peer across restarts; ``nonce`` (16-32 random bytes)
    is never reused; ``timestamp_ms`` is the signer's clock (Unix ms); ``previous`` lists
    peers it was connected to (the seed's ``previousConnections``). All of it is the
    signer's claim; the verifier checks it.
    """

    peer_id: PeerId
    seq: int
    timestamp_ms: int
    nonce: bytes
    addrs: tuple[str, ...] = ()
    display_name: str = ""
    previous: tuple[PeerId, ...] = ()

    def encode_payload(self) -> bytes:
        return _packb((self.peer_id.multihash, self.display_name, self.timestamp_ms,
                       self.nonce, self.seq, [p.multihash for p in self.previous],
                       list(self.addrs)))

    @classmethod
    def decode_payload(cls, payload: bytes) -> Announcement:
        # Inlined checks: this is the hot path of every verification.
        obj = _unpack(payload, "announcement")
        if len(obj) != 7:
            raise MalformedRecord("announcement: not 7 fields")
        pid, name, ts, nonce, seq, previous, addrs = obj
        if type(ts) is not int or not 0 <= ts <= MAX_SEQ:
            raise MalformedRecord("timestamp_ms: not an unsigned integer")
        if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
            raise MalformedRecord("seq: not an unsigned integer")
        if type(nonce) is not bytes or not NONCE_MIN <= len(nonce) <= NONCE_MAX:
            raise MalformedRecord(f"nonce: not {NONCE_MIN}..{NONCE_MAX} bytes")
        if type(name) is not str or len(name) > MAX_TEXT:
            raise MalformedRecord(f"display_name: not a string of at most {MAX_TEXT} characters")
        if type(previous) is not tuple:
            raise MalformedRecord("previous: not an array")
        if type(addrs) is not tuple:
            raise MalformedRecord("addrs: not an array")
        for a in addrs:
            if type(a) is not str or not 0 < len(a) <= MAX_TEXT:
                raise MalformedRecord("addrs: each address is a non-empty string")
        if type(pid) is not bytes or len(pid) != PEER_ID_LENGTH or not pid.startswith(
                _PEER_ID_PREFIX):
            raise MalformedRecord("peer_id: not an Ed25519 peer id")
        return cls(PeerId(pid), seq, ts, nonce, addrs, name,
                   tuple([_peer_id(p, "previous") for p in previous]) if previous else ())


@dataclass(frozen=True, slots=True)
class RelayedAnnouncement:
    """Seed 004 ``relayed_announcement``: ``relayed_by`` forwards ``original`` (the wrapped
    envelope's exact bytes: an announcement or another relayed one). The seed's
    ``relaySignature`` is the signature of the envelope carrying this payload."""

    original: bytes
    relayed_by: PeerId
    relay_timestamp_ms: int

    def encode_payload(self) -> bytes:
        return _packb((self.original, self.relayed_by.multihash, self.relay_timestamp_ms))

    @classmethod
    def decode_payload(cls, payload: bytes) -> RelayedAnnouncement:
        obj = _unpack(payload, "relayed announcement")
        if len(obj) != 3:
            raise MalformedRecord("relayed announcement: not 3 fields")
        original, by, ts = obj
        if type(original) is not bytes:
            raise MalformedRecord("original: not bytes")
        return cls(original, _peer_id(by, "relayed_by"), _uint(ts, "relay_timestamp_ms"))


# ---------------------------------------------------------------------------- builders

def _seal_checked(identity: Identity, payload_type: bytes, payload: bytes, limit: int) -> bytes:
    data = Envelope.seal(identity, payload_type, payload).encode()
    if len(data) > limit:
        raise RecordTooLarge(f"record is {len(data)} bytes, the bound is {limit}")
    return data


def sign_announcement(identity: Identity, seq: int, addrs: list[str] | tuple[str, ...],
                      now: float, nonce: bytes | None = None, display_name: str = "",
                      previous: tuple[PeerId, ...] | list[PeerId] = ()) -> bytes:
    """Build and sign an announcement envelope of ``identity`` at ``now`` (Unix s).

    ``seq`` must be fresh (see ``stack.store.sequence``). Raises ``RecordTooLarge``
    over 1000 bytes and ``MalformedRecord`` (a ``ValueError``) for a field the decoder would
    refuse.
    """
    nonce = os.urandom(DEFAULT_NONCE_SIZE) if nonce is None else nonce
    ann = Announcement(identity.peer_id, _uint(seq, "seq"), timestamp_ms(now), nonce, tuple(addrs),
                       display_name, tuple(previous))
    payload = ann.encode_payload()
    Announcement.decode_payload(payload)  # our own output obeys our own decoder
    return _seal_checked(identity, ANNOUNCEMENT_TYPE, payload, MAX_ANNOUNCEMENT_SIZE)


def make_identity_exchange(identity: Identity, now: float, *, display_name: str = "",
                           dh_public_key: bytes | None = None,
                           addrs: list[str] | tuple[str, ...] = ()) -> bytes:
    """Build and sign our identity-exchange envelope (seed 004, sent on connect)."""
    msg = IdentityExchange(identity.peer_id, display_name, identity.public_key,
                           dh_public_key, timestamp_ms(now), tuple(addrs))
    payload = msg.encode_payload()
    IdentityExchange.decode_payload(payload)
    return _seal_checked(identity, IDENTITY_EXCHANGE_TYPE, payload, MAX_IDENTITY_EXCHANGE_SIZE)


def relay(identity: Identity, envelope_bytes: bytes, now: float) -> bytes:
    """Wrap an announcement (or relayed) envelope, signed by the relay ``identity``.

    Raises ``MalformedRecord`` if ``envelope_bytes`` is not one, ``RecordTooLarge`` if the
    result exceeds ``MAX_RELAYED_SIZE``. It does not verify what it wraps.
    """
    inner = Envelope.decode(envelope_bytes)
    if inner.payload_type not in (ANNOUNCEMENT_TYPE, RELAYED_TYPE):
        raise MalformedRecord("only announcements are relayed")
    payload = RelayedAnnouncement(envelope_bytes, identity.peer_id,
                                  timestamp_ms(now)).encode_payload()
    return _seal_checked(identity, RELAYED_TYPE, payload, MAX_RELAYED_SIZE)


# ---------------------------------------------------------------------------- decoders

def decode_announcement(data: bytes) -> tuple[Envelope, Announcement]:
    """Parse (not verify) a direct announcement envelope; ``MalformedRecord`` on defects."""
    env = Envelope.decode(data, MAX_ANNOUNCEMENT_SIZE)
    if env.payload_type != ANNOUNCEMENT_TYPE:
        raise MalformedRecord("not an announcement")
    return env, Announcement.decode_payload(env.payload)


def decode_identity_exchange(data: bytes) -> tuple[Envelope, IdentityExchange]:
    env = Envelope.decode(data, MAX_IDENTITY_EXCHANGE_SIZE)
    if env.payload_type != IDENTITY_EXCHANGE_TYPE:
        raise MalformedRecord("not an identity exchange")
    return env, IdentityExchange.decode_payload(env.payload)


def decode_relayed(data: bytes) -> tuple[Envelope, RelayedAnnouncement]:
    env = Envelope.decode(data, MAX_RELAYED_SIZE)
    if env.payload_type != RELAYED_TYPE:
        raise MalformedRecord("not a relayed announcement")
    return env, RelayedAnnouncement.decode_payload(env.payload)


def _in_window(ts_ms: int, now: float, window: float, drift: float) -> bool:
    """Seed 004 timing: not older than ``window`` (+ ``drift``), not newer than ``drift``."""
    t = ts_ms / 1000.0
    return now - window - drift <= t <= now + drift


def verify_record(data: bytes, now: float, *, window: float,
                  drift: float = DEFAULT_DRIFT) -> tuple[Result, Announcement | None]:
    """Stateless check of a direct announcement (what the DHT stores): decode, signer key
    is the peer id's, timestamp within ``window`` seconds (plus ``drift``), signature.

    Consumes no nonce and keeps no state; never raises on remote bytes. Returns
    ``(Result.VALID, announcement)`` or ``(code, None)``; codes: ``malformed``,
    ``invalid_signature``, ``timestamp_out_of_range``.
    """
    try:
        env, ann = decode_announcement(data)
    except MalformedRecord:
        return Result.MALFORMED, None
    if env.public_key != ann.peer_id.public_key:
        return Result.INVALID_SIGNATURE, None
    if not _in_window(ann.timestamp_ms, now, window, drift):
        return Result.TIMESTAMP_OUT_OF_RANGE, None
    if not env.verify():
        return Result.INVALID_SIGNATURE, None
    return Result.VALID, ann


def verify_identity_exchange(data: bytes, now: float, *, window: float = 300.0,
                             drift: float = DEFAULT_DRIFT
                             ) -> tuple[Result, IdentityExchange | None]:
    """Stateless check of an identity exchange, as ``verify_record`` (default window: the
    seed's 5 minutes)."""
    try:
        env, msg = decode_identity_exchange(data)
    except MalformedRecord:
        return Result.MALFORMED, None
    if env.public_key != msg.sign_public_key:
        return Result.INVALID_SIGNATURE, None
    if not _in_window(msg.timestamp_ms, now, window, drift):
        return Result.TIMESTAMP_OUT_OF_RANGE, None
    if not env.verify():
        return Result.INVALID_SIGNATURE, None
    return Result.VALID, msg
