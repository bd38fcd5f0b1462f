"""Kademlia routing table over 256-bit node ids (node id = SHA-256 of peer-id bytes).

Rules:
- Bucket ``i`` holds contacts whose XOR distance to us has bit length ``i + 1``; at most
  ``k`` contacts each, least recently seen first.
- Only *proven* contacts enter a bucket (the caller checked a signed challenge); their
  address changes only through ``add_proven`` (another proof).
- A full bucket keeps its old contacts (they have shown they stay up); newcomers wait in a
  bounded per-bucket replacement cache of unproven candidates.
- Probation (issue 14 section 1): a contact is *verified* once it has answered a request
  of ours (``add_proven(..., answered=True)`` or ``record_success``) and has not failed
  since. Only verified contacts are handed to others (``closest(..., verified_only=True)``),
  so identities that prove themselves once and vanish are never passed on. A request from
  a contact (``touch``) refreshes its place but verifies nothing (it may be spoofed).
- A contact that has never answered is dropped at its first failed RPC. A verified one is
  hidden from others at its first failure and dropped after ``stale_failures``
  consecutive ones (one lost datagram is not enough); an answer restores it. A dropped
  contact's bucket offers its newest replacement to the caller for a challenge; it enters
  only once it proves itself.
- Each contact keeps an RTT estimate (RFC 6298 smoothing) for adaptive timeouts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from discovery.wire import WireContact, wire_contact
from stack.base.net import Address

__all__ = ["Contact", "RttEstimator", "RoutingTable", "BITS"]

BITS = 256


class RttEstimator:
    """RFC 6298 section 2 smoothing; ``rto`` in seconds, clamped to [lo, hi]. Compared
    by identity, as ``Contact`` (which is one) must be. The state is one ``complex``,
    srtt + rttvar*j (two exact doubles in one 32-byte object where two floats take 48
    and a slot more: every routing-table entry has one)."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state: complex | None = None  # no sample yet

    @property
    def srtt(self) -> float | None:
        state = self._state
        return None if state is None else state.real

    @property
    def rttvar(self) -> float:
        state = self._state
        return 0.0 if state is None else state.imag

    def sample(self, rtt: float) -> None:
        state = self._state
        if state is None:
            self._state = complex(rtt, rtt / 2)
        else:
            srtt = state.real
            self._state = complex(0.875 * srtt + 0.125 * rtt,
                                  0.75 * state.imag + 0.25 * abs(srtt - rtt))

    def rto(self, initial: float, lo: float, hi: float) -> float:
        state = self._state
        if state is None:
            return initial
        return min(hi, max(lo, state.real + 4 * state.imag))


class Contact(RttEstimator):
    """A proven peer: it signed a challenge sent to ``addr`` with the key of ``peer_id``.

    Compared by identity (one object per peer per table): a bucket's ``list.remove``
    would otherwise compare every field of each contact before the one it removes. It
    is its own RTT estimator (``rtt`` is the contact itself): no second object per
    routing-table entry. Its id bytes and address are those of ``wire``, the process's
    shared ``WireContact`` for them (how replies name it): no slots of their own.
    """

    __slots__ = ("node_id", "failures", "answered", "wire")

    def __init__(self, peer_id: bytes, node_id: int, addr: Address,
                 answered: bool = False) -> None:
        RttEstimator.__init__(self)
        self.node_id = node_id
        self.failures = 0
        self.answered = answered  # it has answered a request of ours (at ``addr``)
        self.wire = wire_contact(peer_id, addr)

    @property
    def peer_id(self) -> bytes:
        return self.wire.peer_id

    @property
    def addr(self) -> Address:
        return self.wire.addr

    def move(self, addr: Address) -> None:
        """It proved itself at ``addr``."""
        self.wire = wire_contact(self.wire.peer_id, addr)

    @property
    def rtt(self) -> RttEstimator:
        return self

    @property
    def verified(self) -> bool:
        """Seen to respond, and no failure since: may be handed to others."""
        return self.answered and not self.failures


_NO_CONTACTS: list[Contact] = []  # every empty bucket's list until its first contact


class RoutingTable:
    def __init__(self, own_id: int, k: int = 20, stale_failures: int = 3) -> None:
        self.own_id = own_id
        self.k = k
        self.stale_failures = stale_failures
        # Only the ~log2(N) buckets nearest the top ever fill: index -> bucket for those
        # that have held a contact (not a 256-slot list, 2 KB per table); the others read
        # as one shared empty list (never appended to: add_proven gives a bucket its own
        # list first), and replacement caches exist only for buckets that have had a
        # candidate.
        self._buckets: dict[int, list[Contact]] = {}
        # candidates as the process's shared WireContact (no tuple of their own)
        self._replacements: dict[int, dict[int, WireContact]] = {}
        self._by_id: dict[int, Contact] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Contact]:
        return iter(self._by_id.values())

    def bucket_index(self, node_id: int) -> int:
        return (self.own_id ^ node_id).bit_length() - 1

    def get(self, node_id: int) -> Contact | None:
        return self._by_id.get(node_id)

    def bucket(self, index: int) -> list[Contact]:
        return list(self._buckets.get(index, _NO_CONTACTS))

    def bucket_size(self, index: int) -> int:
        return len(self._buckets.get(index, _NO_CONTACTS))

    def wants(self, node_id: int, addr: Address) -> bool:
        """Would a proof from ``node_id`` at ``addr`` change the table? (Spend crypto only then.)"""
        if node_id == self.own_id:
            return False
        known = self._by_id.get(node_id)
        if known is not None:
            return known.addr != addr
        return len(self._buckets.get(self.bucket_index(node_id), _NO_CONTACTS)) < self.k

    def add_proven(self, peer_id: bytes, node_id: int, addr: Address,
                   answered: bool = False) -> bool:
        """Insert or refresh a proven contact (its address is updated). ``answered``: the
        proof came in an answer to our request (not a one-way PROVE), so it is verified
        at once. True if in the table."""
        if node_id == self.own_id:
            return False
        index = self.bucket_index(node_id)
        bucket = self._buckets.get(index, _NO_CONTACTS)
        known = self._by_id.get(node_id)
        if known is not None:
            known.answered = answered or (known.answered and known.addr == addr)
            known.move(addr)
            known.failures = 0
            bucket.remove(known)
            bucket.append(known)
            return True
        if len(bucket) >= self.k:
            self.add_candidate(peer_id, node_id, addr)
            return False
        cache = self._replacements.get(index)
        if cache:
            cache.pop(node_id, None)
        contact = Contact(peer_id, node_id, addr, answered=answered)
        if bucket is _NO_CONTACTS:
            bucket = self._buckets[index] = []
        bucket.append(contact)
        self._by_id[node_id] = contact
        return True

    def add_candidate(self, peer_id: bytes, node_id: int, addr: Address) -> None:
        """Remember an unproven peer for when its bucket has room (newest kept)."""
        if node_id == self.own_id or node_id in self._by_id:
            return
        index = self.bucket_index(node_id)
        cache = self._replacements.get(index)
        if cache is None:
            cache = self._replacements[index] = {}
        cache.pop(node_id, None)
        cache[node_id] = wire_contact(peer_id, addr)
        if len(cache) > self.k:
            del cache[next(iter(cache))]

    def record_success(self, node_id: int) -> None:
        """The contact answered a request of ours: verified, most recently seen."""
        contact = self._by_id.get(node_id)
        if contact is not None:
            contact.failures = 0
            contact.answered = True
            bucket = self._buckets[self.bucket_index(node_id)]
            bucket.remove(contact)
            bucket.append(contact)

    def touch(self, node_id: int) -> None:
        """The contact sent us a request from its address: most recently seen, nothing
        more (a request proves no liveness: its source may be spoofed)."""
        contact = self._by_id.get(node_id)
        if contact is not None:
            bucket = self._buckets[self.bucket_index(node_id)]
            bucket.remove(contact)
            bucket.append(contact)

    def record_failure(self, node_id: int) -> tuple[bytes, int, Address] | None:
        """Count a failed RPC (the contact is no longer verified). When it goes stale (at
        once if it never answered) it is dropped and the newest replacement candidate
        (peer_id, node_id, addr) is returned for a challenge."""
        contact = self._by_id.get(node_id)
        if contact is None:
            return None
        contact.failures += 1
        if contact.answered and contact.failures < self.stale_failures:
            return None
        index = self.bucket_index(node_id)
        self._buckets[index].remove(contact)
        del self._by_id[node_id]
        cache = self._replacements.get(index)
        if not cache:
            return None
        cand_id, cand = cache.popitem()
        return cand.peer_id, cand_id, cand.addr

    def closest(self, target: int, count: int, verified_only: bool = False) -> list[Contact]:
        """The ``count`` contacts closest to ``target`` by XOR distance, exactly (only
        verified ones with ``verified_only``: what we hand to others).

        Contacts in the target's bucket are closer than any other; buckets below it all
        share the same top distance bit and are sorted together; buckets above it are
        ordered by index.
        """
        def key(c: Contact) -> int:
            return c.node_id ^ target

        def pick(contacts: Iterable[Contact]) -> list[Contact]:
            return [c for c in contacts if c.verified] if verified_only else list(contacts)

        d = self.bucket_index(target)
        buckets = self._buckets
        if d < 0:  # the target is our own id
            return sorted(pick(self._by_id.values()), key=key)[:count]
        out = sorted(pick(buckets.get(d, _NO_CONTACTS)), key=key)
        if len(out) < count:
            lower = [c for i, bucket in buckets.items() if i < d for c in pick(bucket)]
            lower.sort(key=key)
            out.extend(lower)
        if len(out) < count:
            for i in sorted(i for i in buckets if i > d):
                out.extend(sorted(pick(buckets[i]), key=key))
                if len(out) >= count:
                    break
        return out[:count]

    def buckets_sizes(self) -> list[int]:
        buckets = self._buckets
        return [len(buckets.get(i, _NO_CONTACTS)) for i in range(BITS)]

    def nonempty_buckets(self) -> list[int]:
        return sorted(i for i, b in self._buckets.items() if b)
