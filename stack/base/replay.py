"""Replay-protected verification of announcements (seed 004), and our own sequence number.

``Verifier`` is a sans-I/O core: ``verify(data, now)`` reads no clock, touches no file and
never raises on remote bytes; every outcome is one of seed 004's result codes
(``stack.base.records.Result``). Checks run cheapest first, so garbage costs microseconds
and only a well-formed, fresh, in-window record pays for the Ed25519 verifies:

====  ===========================================  ==================================
step  check                                        result on failure
====  ===========================================  ==================================
1     size bound, then strict decode of every      ``malformed``
      envelope in the relay chain
2     at most ``max_relay_hops`` relays            ``relay_chain_too_long``
3     each relay envelope signed by ``relayed_by``  ``invalid_relay_signature``
      (key match; the signature itself in step 9)
4     announcement signed by its own peer id       ``invalid_signature``
5     ``require_known`` and ``is_known`` says no   ``unknown_peer``
6     timestamps (original and relays) within      ``timestamp_out_of_range``
      ``[now - window - drift, now + drift]``
7     the peer's rate-limit bucket is not empty    ``rate_limited``
8     (peer, nonce) not seen within the TTL        ``nonce_reused``
9     seq greater than the highest seen            ``sequence_number_not_incremented``
10    relay signatures, outermost first            ``invalid_relay_signature``
11    the announcement's signature                 ``invalid_signature``
====  ===========================================  ==================================

Only after step 11 passes does the verifier record anything (nonce, highest seq, a
rate-limit token), so an unauthenticated record never changes its state: forgeries can
neither burn a victim's nonces or sequence numbers nor drain its rate limit. The limit
therefore bounds how often a *real* peer gets announcements accepted (and, once its
bucket is empty, rejects further records claiming it before any crypto); bounding CPU
spent on forgeries is the driver's job, per source address.

Persistence: ``dump()`` / ``restore()`` turn the replay state (nonces with expiry,
highest seq per peer) into bytes and back; where those bytes live (``replay_state.msgpack``
in the data directory, or memory) is ``stack.store.replay``'s business, and our own
sequence numbers are ``stack.store.sequence``'s. This module does no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import msgpack

from stack.base.errors import LocalError
from stack.base.identity import PeerId
from stack.base.records import (
    ANNOUNCEMENT_TYPE,
    MAX_ANNOUNCEMENT_SIZE,
    MAX_RELAYED_SIZE,
    MAX_SEQ,
    RELAYED_TYPE,
    Announcement,
    Envelope,
    MalformedRecord,
    RelayedAnnouncement,
    Result,
)

__all__ = [
    "Result",
    "VerifierConfig",
    "Outcome",
    "Verifier",
]

_STATE_VERSION = 1
_VALID = Result.VALID  # an Enum attribute lookup costs ~0.1 us on 3.11: not in the hot path


@dataclass(frozen=True)
class VerifierConfig:
    """Verifier settings. Defaults are seed 004's ``CONFIG`` where it has one.

    Attributes:
        validity_window: seconds an announcement stays acceptable after its timestamp
            (``ANNOUNCEMENT_VALIDITY_WINDOW``, 5 min).
        clock_drift: seconds of clock difference tolerated both ways
            (``CLOCK_DRIFT_TOLERANCE``, 1 min).
        nonce_cache_size: (peer, nonce) pairs remembered, LRU beyond it
            (``NONCE_CACHE_SIZE``, 10,000).
        nonce_ttl: seconds a nonce is remembered (``NONCE_CACHE_TTL``, 1 h); must exceed
            ``validity_window + 2 * clock_drift`` or a replay could outlive its nonce.
        max_relay_hops: relays allowed between the signer and us (``MAX_RELAY_HOPS``, 3).
        rate_limit_burst: accepted announcements per peer in a burst (seed: unspecified).
        rate_limit_interval: seconds to earn back one (10 per minute sustained).
        max_tracked_peers: peers whose highest seq / bucket we keep, LRU beyond it, so
            self-certified newcomers (free to mint) cannot grow memory without bound.
    """

    validity_window: float = 5 * 60.0
    clock_drift: float = 60.0
    nonce_cache_size: int = 10_000
    nonce_ttl: float = 60 * 60.0
    max_relay_hops: int = 3
    rate_limit_burst: int = 10
    rate_limit_interval: float = 6.0
    max_tracked_peers: int = 100_000

    def __post_init__(self) -> None:
        if self.nonce_ttl < self.validity_window + 2 * self.clock_drift:
            raise ValueError("nonce_ttl must cover validity_window + 2 * clock_drift")
        if min(self.nonce_cache_size, self.rate_limit_burst, self.max_tracked_peers) < 1:
            raise ValueError("cache sizes and the burst must be positive")
        if self.max_relay_hops < 0 or self.rate_limit_interval <= 0:
            raise ValueError("max_relay_hops >= 0 and rate_limit_interval > 0")


@dataclass(frozen=True, slots=True)
class Outcome:
    """The verdict on one record.

    Attributes:
        result: the code.
        announcement: the verified announcement; set only when ``result`` is ``valid``.
        peer_id: the announcing peer, when the record decoded far enough to name it
            (claimed, not verified, unless ``result`` is ``valid``).
        relay_chain: relays in path order (the first relay to forward it first), claimed
            unless ``result`` is ``valid``.
    """

    result: Result
    announcement: Announcement | None = None
    peer_id: PeerId | None = None
    relay_chain: tuple[PeerId, ...] = ()

    @property
    def ok(self) -> bool:
        return self.result is Result.VALID


class _ChainTooLong(Exception):
    pass


class Verifier:
    """Stateful seed 004 verifier (see the module docstring for the order of checks)."""

    def __init__(self, config: VerifierConfig | None = None) -> None:
        self.config = config or VerifierConfig()
        # (peer multihash + nonce) -> expiry (Unix s). Each nonce is accepted once, so
        # insertion order is use order: evicting the first entry is LRU. Expired entries
        # count as absent and are dropped by eviction and by dump().
        self._nonces: OrderedDict[bytes, float] = OrderedDict()
        # peer multihash -> (highest verified seq, rate-limit tokens, tokens counted at), LRU
        self._peers: OrderedDict[bytes, tuple[int, float, float]] = OrderedDict()
        self._latest = float("-inf")  # the latest ``now`` of an accepted record
        # config values the hot path needs, in the units it uses
        cfg = self.config
        self._max_age_ms = (cfg.validity_window + cfg.clock_drift) * 1000.0
        self._drift_ms = cfg.clock_drift * 1000.0
        self._burst = float(cfg.rate_limit_burst)

    # -- verification ----------------------------------------------------------------

    def verify(self, data: bytes, now: float, *, require_known: bool = False,
               is_known: Callable[[PeerId], bool] | None = None) -> Outcome:
        """Verify one announcement, direct or relayed, received at ``now`` (Unix s).

        With ``require_known`` the announcing peer must satisfy ``is_known`` (e.g. the
        trust store), else ``unknown_peer``; without it a self-certified record from any
        peer can be valid. Raises only on API misuse (``require_known`` without
        ``is_known``), never on ``data``.
        """
        if require_known and is_known is None:
            raise LocalError("require_known needs an is_known callback")
        try:
            relays, env, ann = self._unwrap(data)
        except MalformedRecord:
            return Outcome(Result.MALFORMED)
        except _ChainTooLong:
            return Outcome(Result.RELAY_CHAIN_TOO_LONG)
        chain = tuple([r.relayed_by for _, r in reversed(relays)]) if relays else ()
        result = self._check(relays, env, ann, now, require_known, is_known)
        return Outcome(result, ann if result is _VALID else None, ann.peer_id, chain)

    def _check(self, relays: list[tuple[Envelope, RelayedAnnouncement]], env: Envelope,
               ann: Announcement, now: float, require_known: bool,
               is_known: Callable[[PeerId], bool] | None) -> Result:
        """Steps 3-11 of the module docstring, then the commit. ``valid`` or the failure."""
        peer = ann.peer_id
        pid = peer.multihash
        for renv, r in relays:
            if renv.public_key != r.relayed_by.multihash[-32:]:
                return Result.INVALID_RELAY_SIGNATURE
        if env.public_key != pid[-32:]:
            return Result.INVALID_SIGNATURE
        if require_known and not is_known(peer):  # type: ignore[misc]
            return Result.UNKNOWN_PEER
        now_ms = now * 1000.0
        low, high = now_ms - self._max_age_ms, now_ms + self._drift_ms
        if not low <= ann.timestamp_ms <= high:
            return Result.TIMESTAMP_OUT_OF_RANGE
        for _, r in relays:
            if not low <= r.relay_timestamp_ms <= high:
                return Result.TIMESTAMP_OUT_OF_RANGE
        peers = self._peers
        known = peers.get(pid)
        if known is None:
            tokens = self._burst
        else:
            # a clock stepping backwards earns nothing rather than a negative refill
            tokens = min(self._burst, known[1]
                         + max(0.0, now - known[2]) / self.config.rate_limit_interval)
            if tokens < 1.0:
                return Result.RATE_LIMITED
        nonces = self._nonces
        nonce_key = pid + ann.nonce
        expiry = nonces.get(nonce_key)
        if expiry is not None and expiry > now:
            return Result.NONCE_REUSED
        if known is not None and ann.seq <= known[0]:
            return Result.SEQUENCE_NUMBER_NOT_INCREMENTED
        for renv, _ in relays:
            if not renv.verify():
                return Result.INVALID_RELAY_SIGNATURE
        if not env.verify():
            return Result.INVALID_SIGNATURE
        # Authentic and fresh: only now does the record change our state.
        cfg = self.config
        nonces[nonce_key] = now + cfg.nonce_ttl
        if expiry is not None:  # an expired entry, re-used: it is the newest now
            nonces.move_to_end(nonce_key)
        elif len(nonces) > cfg.nonce_cache_size:
            nonces.popitem(last=False)
        peers[pid] = (ann.seq, tokens - 1.0, now)
        if known is not None:
            peers.move_to_end(pid)
        elif len(peers) > cfg.max_tracked_peers:
            peers.popitem(last=False)
        if now > self._latest:
            self._latest = now
        return _VALID

    def _unwrap(self, data: bytes
                ) -> tuple[list[tuple[Envelope, RelayedAnnouncement]], Envelope, Announcement]:
        """Decode the relay chain (outermost first) down to the announcement. No crypto."""
        env = Envelope.decode(data, MAX_RELAYED_SIZE)
        if env.payload_type == ANNOUNCEMENT_TYPE:  # direct: the common case
            if len(data) > MAX_ANNOUNCEMENT_SIZE:
                raise MalformedRecord("announcement over its size bound")
            return [], env, Announcement.decode_payload(env.payload)
        relays: list[tuple[Envelope, RelayedAnnouncement]] = []
        inner = data
        while env.payload_type == RELAYED_TYPE:
            if len(relays) == self.config.max_relay_hops:
                raise _ChainTooLong
            r = RelayedAnnouncement.decode_payload(env.payload)
            relays.append((env, r))
            inner = r.original
            env = Envelope.decode(inner, MAX_RELAYED_SIZE)
        if env.payload_type != ANNOUNCEMENT_TYPE:
            raise MalformedRecord("not an announcement")
        if len(inner) > MAX_ANNOUNCEMENT_SIZE:
            raise MalformedRecord("announcement over its size bound")
        return relays, env, Announcement.decode_payload(env.payload)

    # -- state -----------------------------------------------------------------------

    def highest_seq(self, peer: PeerId) -> int | None:
        """The highest sequence number verified from ``peer``, if any is remembered."""
        known = self._peers.get(peer.multihash)
        return None if known is None else known[0]

    def nonce_count(self) -> int:
        """(peer, nonce) pairs held, expired ones included until evicted or dumped."""
        return len(self._nonces)

    def dump(self) -> bytes:
        """The persistent replay state (unexpired nonces with expiry, highest seq per peer)
        as msgpack, oldest first. Rate-limit buckets are not persisted."""
        latest = self._latest
        data: bytes = msgpack.packb({
            "version": _STATE_VERSION,
            "nonces": [[k, exp] for k, exp in self._nonces.items() if exp > latest],
            "seqs": [[p, known[0]] for p, known in self._peers.items()],
        }, use_bin_type=True)
        return data

    @classmethod
    def restore(cls, data: bytes, config: VerifierConfig | None = None) -> Verifier:
        """Inverse of ``dump``; ``ValueError`` if ``data`` is not such a state."""
        try:
            state = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise ValueError(f"not msgpack ({type(exc).__name__})") from None
        if (type(state) is not dict or set(state) != {"version", "nonces", "seqs"}
                or state["version"] != _STATE_VERSION):
            raise ValueError("not a version 1 replay state")
        v = cls(config)
        for item in state["nonces"]:
            if (type(item) is not list or len(item) != 2 or type(item[0]) is not bytes
                    or type(item[1]) not in (int, float)):
                raise ValueError("bad nonce entry")
            v._nonces[item[0]] = float(item[1])
        for item in state["seqs"]:
            if (type(item) is not list or len(item) != 2 or type(item[0]) is not bytes
                    or type(item[1]) is not int or not 0 <= item[1] <= MAX_SEQ):
                raise ValueError("bad sequence entry")
            # a full bucket, as for a peer not seen before
            v._peers[item[0]] = (item[1], float(v.config.rate_limit_burst), 0.0)
        # a smaller configured cache keeps the most recent entries
        while len(v._nonces) > v.config.nonce_cache_size:
            v._nonces.popitem(last=False)
        while len(v._peers) > v.config.max_tracked_peers:
            v._peers.popitem(last=False)
        return v
