"""DHT values: signed announcements, checked by an injected validator, kept by replicas.

Acceptance rules for a STORE (issue 5 section 2), in order; the first failing rule names
the result:

    too_large        the record exceeds 1000 bytes
    <validator code> the validator rejects it (bad signature, malformed, expired, ...)
    wrong_key        the key is not SHA-256 of the record's peer-id bytes
    stale_seq        the stored record for the key has a higher sequence number, or the
                     same one with different bytes (a replay or an equivocation)
    unchanged        the very same record is already stored (a publisher's re-put)
    stored           accepted

The validator is stateless (no nonce consumption): a DHT serves the same record to many
readers, so replay protection is the strictly increasing sequence number.
Expiry: a stored record is dropped once its timestamp is older than the window; keeping
it alive is the publisher's job (periodic re-publish), not the replicas'.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from discovery.wire import MAX_RECORD

__all__ = ["RecordInfo", "RecordValidator", "RecordStore", "OK", "dht_key_of"]

OK = "ok"


@dataclass(frozen=True, slots=True)
class RecordInfo:
    """What a validator vouches for: the signer's peer-id bytes, seq, timestamp (seconds)."""

    peer_id: bytes
    seq: int
    timestamp: float


class RecordValidator(Protocol):
    def check(self, data: bytes, now: float) -> tuple[str, RecordInfo | None]:
        """``(OK, info)`` for a valid, fresh record; ``(reason, None)`` otherwise. Never raises."""
        ...


def dht_key_of(peer_id: bytes) -> bytes:
    return hashlib.sha256(peer_id).digest()


@dataclass(slots=True)
class _Stored:
    data: bytes
    info: RecordInfo


class RecordStore:
    """A replica's records, bounded in number; see the module rules."""

    def __init__(self, validator: RecordValidator, window: float, max_records: int) -> None:
        self.validator = validator
        self.window = window
        self.max_records = max_records
        self._records: dict[bytes, _Stored] = {}

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: bytes, now: float) -> bytes:
        stored = self._records.get(key)
        if stored is None:
            return b""
        if stored.info.timestamp < now - self.window:
            del self._records[key]
            return b""
        return stored.data

    def offer(self, key: bytes, data: bytes, now: float) -> str:
        if len(data) > MAX_RECORD:
            return "too_large"
        stored = self._records.get(key)
        if stored is not None and stored.data == data:
            return "unchanged"  # cheap re-put: no signature check needed for known bytes
        code, info = self.validator.check(data, now)
        if info is None:
            return code
        if dht_key_of(info.peer_id) != key:
            return "wrong_key"
        if stored is not None and info.seq <= stored.info.seq:
            return "stale_seq"
        if stored is None and len(self._records) >= self.max_records:
            self.expire(now)
            if len(self._records) >= self.max_records:
                return "full"
        self._records[key] = _Stored(data, info)
        return "stored"

    def expire(self, now: float) -> int:
        old = [k for k, s in self._records.items() if s.info.timestamp < now - self.window]
        for key in old:
            del self._records[key]
        return len(old)
