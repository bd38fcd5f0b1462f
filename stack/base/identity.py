"""Ed25519 identities and libp2p peer IDs (DESIGN.md section 4).

Peer ID (libp2p peer-id spec): the canonical protobuf ``PublicKey{Type=Ed25519(1),
Data=<32-byte key>}`` is 36 bytes, short enough (<= 42) to be wrapped in an *identity*
multihash (code 0x00, length 0x24) instead of hashed; its text form is base58btc and
starts ``12D3KooW``. The ID therefore contains the key: it is self-certifying.

Fingerprint (seeds 000/001): SHA-256 of the raw 32-byte public key, lowercase hex.

Key file: ``identity.key`` in the data directory holds the libp2p ``PrivateKey``
protobuf (``Type=Ed25519``, ``Data`` = 32-byte seed + 32-byte public key), so keys move
between p2pstack and libp2p implementations. The public half lets us detect corruption.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import stat
from dataclasses import dataclass
from pathlib import Path

import base58
import nacl.exceptions
import nacl.signing
from nacl.bindings import crypto_sign_open

from stack.base.errors import CorruptFileError, InsecureFileError, UsageError
from stack.base.files import create_exclusive, ensure_data_dir

__all__ = [
    "PeerId",
    "Identity",
    "InvalidPeerId",
    "KEY_FILE_NAME",
    "verify_signature",
    "fingerprint_of",
]

KEY_FILE_NAME = "identity.key"
ED25519_KEY_TYPE = 1
_PUBKEY_PROTO_PREFIX = bytes([0x08, ED25519_KEY_TYPE, 0x12, 32])
_PRIVKEY_PROTO_PREFIX = bytes([0x08, ED25519_KEY_TYPE, 0x12, 64])
_IDENTITY_MULTIHASH_PREFIX = bytes([0x00, len(_PUBKEY_PROTO_PREFIX) + 32])
PEER_ID_LENGTH = len(_IDENTITY_MULTIHASH_PREFIX) + len(_PUBKEY_PROTO_PREFIX) + 32


class InvalidPeerId(UsageError):
    """Text or bytes that are not an Ed25519 libp2p peer ID."""


def fingerprint_of(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Ed25519 verify; False (never an exception) for a bad key or signature.

    Calls libsodium's ``crypto_sign_open`` directly, exactly as ``VerifyKey.verify``
    does underneath (the same length checks), without a key object per call: the DHT
    checks one identity proof per routing-table entry, so this is a hot path.
    """
    if type(signature) is not bytes or len(signature) != 64:
        return False
    try:
        crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):  # nacl's ValueError too
        return False
    return True


@dataclass(frozen=True, slots=True)
class PeerId:
    """An Ed25519 libp2p peer ID. ``bytes`` is the multihash; ``str()`` the base58 text."""

    multihash: bytes

    @classmethod
    def from_public_key(cls, public_key: bytes) -> PeerId:
        if len(public_key) != 32:
            raise InvalidPeerId("an Ed25519 public key is 32 bytes")
        return cls(_IDENTITY_MULTIHASH_PREFIX + _PUBKEY_PROTO_PREFIX + public_key)

    @classmethod
    def from_bytes(cls, data: bytes) -> PeerId:
        if (len(data) != PEER_ID_LENGTH
                or not data.startswith(_IDENTITY_MULTIHASH_PREFIX + _PUBKEY_PROTO_PREFIX)):
            raise InvalidPeerId("not an identity multihash of an Ed25519 public key")
        return cls(bytes(data))

    @classmethod
    def parse(cls, text: str) -> PeerId:
        if type(text) is not str:   # unhashable or not text: fails as it always did
            return _parse.__wrapped__(text)
        return _parse(text)

    @property
    def public_key(self) -> bytes:
        return self.multihash[-32:]

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.public_key)

    @property
    def dht_key(self) -> bytes:
        """256-bit Kademlia key: SHA-256 of the peer-id bytes (DESIGN.md section 4)."""
        return hashlib.sha256(self.multihash).digest()

    def __str__(self) -> str:
        return _text(self.multihash)

    def __repr__(self) -> str:
        return f"PeerId({str(self)!r})"


# Peer ids are printed and parsed per event and per room-state update; base58 in pure
# Python was the top cost of room sync in its benchmark's profile. Both are pure
# functions of immutable values, so the recent ones are remembered (errors are not).
@functools.lru_cache(maxsize=4096)
def _text(multihash: bytes) -> str:
    return base58.b58encode(multihash).decode("ascii")


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> PeerId:
    try:
        raw = base58.b58decode(text.strip())
    except ValueError:
        raise InvalidPeerId(f"not base58: {text!r}") from None
    try:
        return PeerId.from_bytes(raw)
    except InvalidPeerId:
        raise InvalidPeerId(f"not an Ed25519 peer id: {text!r}") from None


class Identity:
    """An Ed25519 key pair and the peer ID it certifies."""

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self._key = signing_key
        self.public_key: bytes = bytes(signing_key.verify_key)
        self.peer_id = PeerId.from_public_key(self.public_key)

    @classmethod
    def generate(cls) -> Identity:
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """Deterministic identity from a 32-byte seed (simulations, tests)."""
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        return cls(nacl.signing.SigningKey(seed))

    @classmethod
    def from_rng(cls, rng: random.Random) -> Identity:
        """Deterministic identity drawn from a seeded RNG (simulated nodes)."""
        return cls.from_seed(rng.randbytes(32))

    @property
    def seed(self) -> bytes:
        return bytes(self._key)

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message).signature

    def to_private_key_proto(self) -> bytes:
        return _PRIVKEY_PROTO_PREFIX + self.seed + self.public_key

    @classmethod
    def from_private_key_proto(cls, data: bytes) -> Identity:
        """Parse a libp2p ``PrivateKey`` protobuf; ValueError if it is not a sound one."""
        if (len(data) != len(_PRIVKEY_PROTO_PREFIX) + 64
                or not data.startswith(_PRIVKEY_PROTO_PREFIX)):
            raise ValueError("not an Ed25519 PrivateKey protobuf")
        body = data[len(_PRIVKEY_PROTO_PREFIX):]
        ident = cls.from_seed(body[:32])
        if ident.public_key != body[32:]:
            raise ValueError("public half does not match the private key")
        return ident

    @classmethod
    def load_or_create(cls, data_dir: Path) -> tuple[Identity, Path]:
        """Load ``identity.key`` from ``data_dir``, creating it (0600) on first use.

        Raises ``InsecureFileError`` if others may read it and ``CorruptFileError`` if it
        does not parse; in both cases the file is left exactly as found.
        """
        path = ensure_data_dir(Path(data_dir)) / KEY_FILE_NAME
        if not path.exists():
            fresh = cls.generate()
            if create_exclusive(path, fresh.to_private_key_proto(), mode=0o600):
                return fresh, path
            # another process created it between our check and our link: use theirs
        return cls.load(path), path

    @classmethod
    def load(cls, path: Path) -> Identity:
        try:
            # O_NONBLOCK: a FIFO in the key's place must not block open() forever
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            raise CorruptFileError(path, f"cannot open key file: {exc.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise CorruptFileError(path, "key file is not a regular file; it was left untouched")
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise InsecureFileError(
                    path, f"key file is accessible by others (mode {stat.S_IMODE(mode):04o});"
                          " run: chmod 600 " + str(path))
            data = f.read(4096)
        try:
            return cls.from_private_key_proto(data)
        except ValueError as exc:
            raise CorruptFileError(
                path, f"corrupt key file ({exc}); it was left untouched") from None
