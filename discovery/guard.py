"""Abuse limits in front of the DHT core: per-source rate limits and address cookies.

- ``Cookies``: a responder hands every requester ``HMAC(secret, ip:port:epoch)[:8]``; a
  request that echoes it proves the requester receives at its source address (not a
  spoofed victim). Un-cookied requests get replies at most ``amplification`` times their
  own size (QUIC's RFC 9000 section 8 rule), so the DHT is no reflection amplifier.
  Epochs are 5 minutes; the previous epoch's cookie stays valid. Cookies are computed
  when needed, not cached (only the last one is kept). ``PeerCookies``: the cookies peers gave us,
  each with the time we got it packed in one bytes object.
- ``ExpiringKeys``: keys that expire a constant ``ttl`` after insertion, at most
  ``max_keys`` of them (the oldest goes first). Expiry is insertion + ttl, so insertion
  order is expiry order: expiring pops from the front of an ``OrderedDict`` and stops at
  the first live key. Every call touches O(1) entries amortised (``touched`` counts
  them), however many live keys a flood has put in (issue 14 section 1). The head's
  expiry is remembered, so ``expire`` before it is due touches nothing: the DHT core
  calls it on every datagram, so that a table a join filled is emptied once its keys
  expire (and an emptied table drops the capacity its peak left behind).
- ``ExpiringSet``: the same rules for keys without a value (the challenge backoff, the
  record handoffs), each entry only its expiry: no (expiry, value) tuple per key, which
  was half of what a join left in these tables.
"""


from __future__ import annotations

import hmac
import struct
from collections.abc import Iterator
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from stack.base.net import Address

__all__ = ["Cookies", "PeerCookies", "ExpiringKeys", "ExpiringSet", "COOKIE_EPOCH"]

COOKIE_EPOCH = 300.0
_NEVER = float("inf")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
E = TypeVar("E")  # a table entry: its expiry, with or without a value


class Cookies:
    """Each cookie is an HMAC computed when asked for (~3 us): a cache per address held
    one entry per requester (~130 per node in a 1,000-node simulation, 10 MB in all) to
    save little. Only the last one is kept, as answering a request checks its cookie
    and then hands one out for the same address and epoch."""

    __slots__ = ("_secret", "_last")

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._last: tuple[Address | None, int, bytes] = (None, 0, b"")  # addr, epoch, cookie

    def make(self, addr: Address, now: float, epoch_offset: int = 0) -> bytes:
        epoch = int(now // COOKIE_EPOCH) + epoch_offset
        last_addr, last_epoch, cookie = self._last
        if last_epoch != epoch or last_addr != addr:
            msg = f"{addr[0]}:{addr[1]}:{epoch}".encode()
            cookie = hmac.digest(self._secret, msg, "sha256")[:8]
            self._last = (addr, epoch, cookie)
        return cookie

    def check(self, cookie: bytes, addr: Address, now: float) -> bool:
        if len(cookie) != 8:
            return False
        return (hmac.compare_digest(cookie, self.make(addr, now))
                or hmac.compare_digest(cookie, self.make(addr, now, -1)))


_TIME = struct.Struct("<d")


class PeerCookies:
    """Cookies peers gave us, by their address, oldest first. A cookie minted in epoch e
    is accepted through epoch e + 1, so one full ``COOKIE_EPOCH`` from when we got it is
    safe and after that it is not sent (going without and padding beats being trimmed):
    such cookies are dropped, when due, from the front. Each value is one bytes object,
    the time's 8 bytes then the cookie: a third of a (bytes, float) tuple with its two
    objects (a node keeps one per routing-table entry and more)."""

    __slots__ = ("_packed", "max_peers", "_due")

    def __init__(self, max_peers: int = 4096) -> None:
        self.max_peers = max_peers
        self._packed: dict[Address, bytes] = {}
        # no cookie ends before this (the oldest's end, or earlier); with none kept, the
        # next put looks
        self._due = -_NEVER

    def __len__(self) -> int:
        return len(self._packed)

    def __iter__(self) -> Iterator[Address]:
        return iter(self._packed)

    def put(self, addr: Address, cookie: bytes, now: float) -> None:
        """``addr`` gave us ``cookie`` at ``now``: it becomes the newest (the oldest goes
        when more than ``max_peers`` are kept)."""
        packed = self._packed
        packed.pop(addr, None)
        packed[addr] = _TIME.pack(now) + cookie
        if len(packed) > self.max_peers:
            del packed[next(iter(packed))]
        if now >= self._due:
            self._expire(now)

    def get(self, addr: Address, now: float) -> bytes:
        """The cookie ``addr`` gave us, if still safe to send at ``now``; else b""."""
        packed = self._packed.get(addr)
        if packed is None or now - _TIME.unpack_from(packed)[0] >= COOKIE_EPOCH:
            return b""
        return packed[8:]

    def _expire(self, now: float) -> None:
        packed = self._packed
        while packed:
            addr, value = next(iter(packed.items()))
            due = _TIME.unpack_from(value)[0] + COOKIE_EPOCH
            if due > now:
                self._due = due
                return
            del packed[addr]
        self._due = -_NEVER


class _ExpiringTable(Generic[K, E]):
    """The bounded, insertion-ordered table under ``ExpiringKeys`` and ``ExpiringSet``:
    each key's entry carries its expiry (``_expiry``); expired keys go in O(1) amortised,
    the oldest when full. Times are parameters; a clock that steps backwards only delays
    expiry."""

    def __init__(self, ttl: float, max_keys: int) -> None:
        if ttl <= 0 or max_keys < 1:
            raise ValueError("ttl > 0 and max_keys >= 1 are required")
        self.ttl = ttl
        self.max_keys = max_keys
        self.touched = 0  # entries examined or removed by expiry and eviction, in total
        self._keys: OrderedDict[K, E] = OrderedDict()
        self._due = _NEVER  # no key expires before this (the head's expiry, or earlier)

    def __len__(self) -> int:
        return len(self._keys)

    @staticmethod
    def _expiry(entry: E) -> float:
        raise NotImplementedError

    def _insert(self, key: K, entry: E, expires: float, now: float) -> None:
        """Insert (or restart) ``key``; expired keys go first, then the oldest if full."""
        self.expire(now)
        keys = self._keys  # after expire, which may have replaced an emptied table
        if keys.pop(key, None) is None and len(keys) >= self.max_keys:
            keys.popitem(last=False)
            self.touched += 1
        keys[key] = entry
        if expires < self._due:
            self._due = expires

    def expire(self, now: float) -> None:
        if now < self._due:
            return
        keys = self._keys
        while keys:
            key, entry = next(iter(keys.items()))
            self.touched += 1
            expires = self._expiry(entry)
            if expires > now:
                self._due = expires
                return
            del keys[key]
        # empty: a fresh table (an emptied one keeps the capacity of its peak)
        self._keys = OrderedDict()
        self._due = _NEVER


class ExpiringKeys(_ExpiringTable[K, tuple[float, V]]):
    """A bounded set of keys, each live for ``ttl`` seconds after its (re)insertion, with
    a value."""

    @staticmethod
    def _expiry(entry: tuple[float, V]) -> float:
        return entry[0]

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def get(self, key: K, now: float) -> V | None:
        """The value of a live ``key`` (inserted less than ``ttl`` ago), else None."""
        entry = self._keys.get(key)
        if entry is None or entry[0] <= now:
            return None
        return entry[1]

    def pop(self, key: K, now: float) -> V | None:
        """Remove ``key``; its value if it was live, else None."""
        entry = self._keys.pop(key, None)
        if entry is None or entry[0] <= now:
            return None
        return entry[1]

    def add(self, key: K, now: float, value: V) -> None:
        """Insert (or restart) ``key``; expired keys go first, then the oldest if full."""
        expires = now + self.ttl
        self._insert(key, (expires, value), expires, now)


class ExpiringSet(_ExpiringTable[K, float]):
    """``ExpiringKeys`` without values (each entry is only its expiry: no tuple per key)."""

    @staticmethod
    def _expiry(entry: float) -> float:
        return entry

    def live(self, key: K, now: float) -> bool:
        """Was ``key`` inserted less than ``ttl`` ago?"""
        expires = self._keys.get(key)
        return expires is not None and expires > now

    def add(self, key: K, now: float) -> None:
        """Insert (or restart) ``key``; expired keys go first, then the oldest if full."""
        expires = now + self.ttl
        self._insert(key, expires, expires, now)
