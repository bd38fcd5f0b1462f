"""DHT values: signed announcements, checked by an injected validator, kept by replicas.

Acceptance rules for a STORE (issue 5 section 2, issue 14 section 1), in order; the first
failing rule names the result:

    too_large        the record exceeds 1000 bytes
    unchanged        the very same record is already stored (a publisher's re-put; no
                     signature check for known bytes)
    over_quota       a new key, and the storing source (an IP) already holds
                     ``max_per_source`` records here (checked before the signature)
    <validator code> the validator rejects it (bad signature, malformed, expired, ...)
    wrong_key        the key is not the record's (``key_of``: SHA-256 of its peer-id bytes,
                     or the key the validator names, as a room's record names its room)
    stale_seq        the stored record for the key has a higher sequence number, or the
                     same one with different bytes (a replay or an equivocation)
    full             the store holds ``max_records`` fresh records and none may be
                     evicted for this one (see below)
    stored           accepted (possibly evicting one record: ``evicted``)

Priority (given by the caller, 0-3): +2 when the record's publisher is proven (its
identity is in our routing table), +1 when we are among the k closest nodes to the key
that we know of. A full store evicts, for a newcomer:

1. the oldest record of the lowest class below the newcomer's, so self-signed records
   from fresh identities cannot keep a proven publisher's record out; else
2. fairness between sources: when some source holds more than one record more than the
   newcomer's source, one of its oldest records (among its 8 oldest) of a class no
   higher than the newcomer's. A flood from many sources thus cannot keep out a source
   that holds fewer records than the flood's biggest; it would need as many sources as
   records. A flood from one source stops at its quota.

The validator is stateless (no nonce consumption): a DHT serves the same record to many
readers, so replay protection is the strictly increasing sequence number.
Expiry: a stored record is dropped once its timestamp is older than the window (a heap
by timestamp: O(log n) per record, no scans); keeping it alive is the publisher's job
(periodic re-publish), not the replicas'. A record's quota is charged to the source that
first stored its key, until it expires or is evicted.
Stored bytes and infos are shared process-wide (``_share``): one copy per distinct record.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from bisect import bisect_left, insort
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Protocol

from discovery.wire import MAX_RECORD

__all__ = ["RecordInfo", "RecordValidator", "RecordStore", "OK", "dht_key_of", "key_of"]

OK = "ok"


@dataclass(frozen=True, slots=True)
class RecordInfo:
    """What a validator vouches for: the signer's peer-id bytes, seq, timestamp (seconds),
    and the key the record belongs under (None: the signer's own, ``dht_key_of``)."""

    peer_id: bytes
    seq: int
    timestamp: float
    key: bytes | None = None


class RecordValidator(Protocol):
    def check(self, data: bytes, now: float) -> tuple[str, RecordInfo | None]:
        """``(OK, info)`` for a valid, fresh record; ``(reason, None)`` otherwise. Never raises."""
        ...


def dht_key_of(peer_id: bytes) -> bytes:
    return hashlib.sha256(peer_id).digest()


def key_of(info: RecordInfo) -> bytes:
    """The DHT key a validated record is stored under."""
    return info.key if info.key is not None else dht_key_of(info.peer_id)


PRIORITIES = 4  # priority classes 0..3 (see the module rules)


@dataclass(slots=True)
class _Stored:
    data: bytes
    info: RecordInfo
    source: Hashable | None   # charged for the quota (None: not counted)
    priority: int
    stamp: int                # matches its live entry in the expiry heap


def _share(data: bytes, info: RecordInfo, key: bytes) -> tuple[bytes, RecordInfo, bytes]:
    """The process's one copy of a stored record's bytes, info and key: a record is
    stored on k replicas, each of which decoded its own copy (in a simulation, all in one
    process). Bounded: cleared when full, then shared again from scratch."""
    shared = _SHARED.get(data)
    if shared is not None and shared[1] == info and shared[2] == key:
        return shared
    if len(_SHARED) >= 1 << 14:  # at most ~16 MB of records a store no longer holds
        _SHARED.clear()
    shared = _SHARED[data] = (data, info, key)
    return shared


_SHARED: dict[bytes, tuple[bytes, RecordInfo, bytes]] = {}


class RecordStore:
    """A replica's records, bounded in number and per source; see the module rules."""

    def __init__(self, validator: RecordValidator, window: float, max_records: int,
                 max_per_source: int | None = None) -> None:
        self.validator = validator
        self.window = window
        self.max_records = max_records
        self.max_per_source = max_per_source
        self.evicted = 0
        self._records: dict[bytes, _Stored] = {}
        self._classes: list[OrderedDict[bytes, None]] = [OrderedDict()
                                                         for _ in range(PRIORITIES)]
        # source -> its keys, oldest first (plain dicts keep insertion order at a third of
        # an OrderedDict's size: one per source that stored here); and the sources by how
        # many they hold
        self._keys_of: dict[Hashable, dict[bytes, None]] = {}
        self._sources_holding: dict[int, dict[Hashable, None]] = {}
        self._most = 0  # the most records any source holds
        self._expiry: list[tuple[float, int, bytes]] = []  # (timestamp, stamp, key)
        self._stamps = itertools.count()
        # the keys, sorted (as 32-byte big-endian numbers: bytes order is numeric order):
        # the keys near a node id are one slice (handoff)
        self._sorted: list[bytes] = []

    def __len__(self) -> int:
        return len(self._records)

    def held_by(self, source: Hashable) -> int:
        """How many records ``source`` is charged for."""
        keys = self._keys_of.get(source)
        return len(keys) if keys is not None else 0

    def get(self, key: bytes, now: float) -> bytes:
        stored = self._records.get(key)
        if stored is None:
            return b""
        if stored.info.timestamp < now - self.window:
            self._remove(key)
            return b""
        return stored.data

    def peek(self, key: bytes, now: float) -> bytes:
        """``get`` without dropping an expired record (for observers: changes nothing)."""
        stored = self._records.get(key)
        if stored is None or stored.info.timestamp < now - self.window:
            return b""
        return stored.data

    def keys_near(self, center: int, bits: int) -> list[bytes]:
        """The keys that agree with ``center`` on all but the low ``bits`` bits (XOR
        distance below ``2**bits``), expired ones included; O(log n + answer)."""
        lo = center >> bits << bits
        hi = lo + (1 << bits)
        keys = self._sorted
        start = bisect_left(keys, lo.to_bytes(32, "big"))
        end = bisect_left(keys, hi.to_bytes(32, "big")) if hi < 1 << 256 else len(keys)
        return keys[start:end]

    def offer(self, key: bytes, data: bytes, now: float, source: Hashable | None = None,
              priority: int = 0) -> str:
        if len(data) > MAX_RECORD:
            return "too_large"
        priority = max(0, min(PRIORITIES - 1, priority))
        stored = self._records.get(key)
        if stored is not None and stored.data == data:
            if priority > stored.priority:
                self._classify(key, stored, priority)
            return "unchanged"  # cheap re-put: no signature check needed for known bytes
        if (stored is None and source is not None and self.max_per_source is not None
                and self.held_by(source) >= self.max_per_source):
            return "over_quota"
        code, info = self.validator.check(data, now)
        if info is None:
            return code
        if key_of(info) != key:
            return "wrong_key"
        if stored is not None and info.seq <= stored.info.seq:
            return "stale_seq"
        if stored is None and len(self._records) >= self.max_records:
            self.expire(now)
            if len(self._records) >= self.max_records:
                victim = self._victim(priority, source)
                if victim is None:
                    return "full"
                self._remove(victim)
                self.evicted += 1
        data, info, key = _share(data, info, key)
        stamp = next(self._stamps)
        if stored is None:
            stored = self._records[key] = _Stored(data, info, source, -1, stamp)
            insort(self._sorted, key)
            if source is not None:
                keys = self._keys_of.get(source)
                if keys is None:
                    keys = self._keys_of[source] = {}
                keys[key] = None
                self._recount(source, len(keys) - 1, len(keys))
        else:  # a newer record for the key: the quota stays with the first source
            stored.data, stored.info, stored.stamp = data, info, stamp
        self._classify(key, stored, max(priority, stored.priority))
        heapq.heappush(self._expiry, (info.timestamp, stamp, key))
        if len(self._expiry) > 2 * len(self._records) + 1024:
            self._expiry = [(s.info.timestamp, s.stamp, k) for k, s in self._records.items()]
            heapq.heapify(self._expiry)
        return "stored"

    def expire(self, now: float) -> int:
        limit = now - self.window
        heap, records = self._expiry, self._records
        gone = 0
        while heap and heap[0][0] < limit:
            _, stamp, key = heapq.heappop(heap)
            stored = records.get(key)
            if stored is not None and stored.stamp == stamp:
                self._remove(key)
                gone += 1
        return gone

    def _victim(self, priority: int, source: Hashable | None) -> bytes | None:
        """What a newcomer of ``priority`` from ``source`` may evict (module rules)."""
        for cls in self._classes[:priority]:
            if cls:
                return next(iter(cls))
        if self._most > (self.held_by(source) if source is not None else 0) + 1:
            biggest = next(iter(self._sources_holding[self._most]))
            for key in itertools.islice(self._keys_of[biggest], 8):
                if self._records[key].priority <= priority:
                    return key
        return None

    def _recount(self, source: Hashable, old: int, new: int) -> None:
        """``source`` now holds ``new`` records instead of ``old`` (they differ by one)."""
        holding = self._sources_holding
        if old:
            group = holding[old]
            del group[source]
            if not group:
                del holding[old]
        if new:
            holding.setdefault(new, {})[source] = None
        if new > self._most or (old == self._most and old not in holding):
            self._most = new

    def _classify(self, key: bytes, stored: _Stored, priority: int) -> None:
        if stored.priority >= 0:
            del self._classes[stored.priority][key]
        stored.priority = priority
        self._classes[priority][key] = None

    def _remove(self, key: bytes) -> None:
        stored = self._records.pop(key)
        del self._classes[stored.priority][key]
        ids = self._sorted
        del ids[bisect_left(ids, key)]
        if stored.source is not None:
            keys = self._keys_of[stored.source]
            del keys[key]
            if not keys:
                del self._keys_of[stored.source]
            self._recount(stored.source, len(keys) + 1, len(keys))
