"""The relay's resources (sans-I/O: no I/O, time is the ``now`` argument).

``RelayLimits`` is the configuration (defaults as go-/rust-libp2p's relay for a node
that serves relays by default, the ``limited`` mode); ``RelayTable`` decides RESERVE and
CONNECT requests against it and counts every refusal by a named reason.

=========================  ==========  ==========  ==========================================
limit                      limited     full        refusal (status, reason tag)
=========================  ==========  ==========  ==========================================
reservation_ttl            3600 s      3600 s      (expiry of a reservation)
max_reservations           128         1024        RESERVATION_REFUSED, ``reservations``
max_reservations_per_peer  4           16          RESERVATION_REFUSED, ``reservations_per_peer``
max_reservations_per_ip    4           16          RESERVATION_REFUSED, ``reservations_per_ip``
reserve rate per peer      30 / 2 min  30 / 2 min  RESOURCE_LIMIT_EXCEEDED, ``reserve_rate``
max_circuits               16          256         RESOURCE_LIMIT_EXCEEDED, ``circuits``
max_circuits_per_peer      4           16          RESOURCE_LIMIT_EXCEEDED, ``circuits_per_peer``
circuit_duration           120 s       0 (none)    RESOURCE_LIMIT_EXCEEDED, ``duration_limit``
circuit_data (each way)    128 KiB     0 (none)    RESOURCE_LIMIT_EXCEEDED, ``data_limit``
circuit_rate (each way)    0 (none)    1 MiB/s     (datagrams over the rate are dropped,
                                                   counted ``rate_dropped``: QUIC inside
                                                   sees loss and backs off)
=========================  ==========  ==========  ==========================================

Other refusals the relay counts: ``no_reservation`` (NO_RESERVATION), ``connection_failed``
(CONNECTION_FAILED: the target's stop stream failed or refused), ``malformed``
(MALFORMED_MESSAGE), ``unexpected`` (UNEXPECTED_MESSAGE), ``self`` (PERMISSION_DENIED: a
CONNECT to oneself), ``relayed`` (PERMISSION_DENIED: a RESERVE or CONNECT over a relayed
connection: no circuits of circuits), ``not_public`` (RESERVATION_REFUSED: AutoNAT says we
are not publicly reachable).

A reservation belongs to the connection it was made on (circuit v2: it is valid while
that connection lives); a RESERVE on the same connection renews it. Per-peer and per-IP
counts are over live, unexpired reservations.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from stack.base.identity import PeerId
from stack.base.ratelimit import TokenBuckets

from nat.relay.wire import Limit, Status

__all__ = ["RelayMode", "RelayLimits", "RelayTable", "Decision"]

K = TypeVar("K")   # what identifies a connection (the node: the Connection)


class RelayMode(StrEnum):
    OFF = "off"          # no relay service (we still use relays as a client)
    LIMITED = "limited"  # libp2p's limited relay: short, small circuits
    FULL = "full"        # a dedicated relay: no duration or data cap, a rate limit


@dataclass(frozen=True)
class RelayLimits:
    """What a relay grants. Times in seconds, sizes in bytes, 0 = no limit."""

    reservation_ttl: float = 3600.0
    max_reservations: int = 128
    max_reservations_per_peer: int = 4
    max_reservations_per_ip: int = 4
    reserve_rate: float = 30 / 120.0   # RESERVE requests per second per peer ...
    reserve_burst: int = 30            # ... with this burst
    max_circuits: int = 16
    max_circuits_per_peer: int = 4     # circuits one peer has open as initiator or target
    circuit_duration: float = 120.0
    circuit_data: int = 128 * 1024
    circuit_rate: int = 0              # bytes per second per direction

    @classmethod
    def for_mode(cls, mode: RelayMode | str) -> RelayLimits:
        """The defaults of ``mode`` (``off`` has none: UsageError upstream)."""
        if RelayMode(mode) is RelayMode.FULL:
            return cls(max_reservations=1024, max_reservations_per_peer=16,
                       max_reservations_per_ip=16, max_circuits=256, max_circuits_per_peer=16,
                       circuit_duration=0.0, circuit_data=0, circuit_rate=1 << 20)
        return cls()

    @property
    def limit(self) -> Limit:
        """The per-circuit limit as the wire states it."""
        return Limit(math.ceil(self.circuit_duration), self.circuit_data)  # whole seconds


@dataclass(frozen=True)
class Decision:
    status: Status
    reason: str = ""       # the refusal's tag (empty for OK)
    expire: float = 0.0    # RESERVE OK: when the reservation ends (the ``now`` timeline)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK


@dataclass
class _Reservation:
    peer: PeerId
    ip: str
    expire: float


class RelayTable(Generic[K]):
    """Reservations and circuits of one relay. ``refused`` counts refusals by reason tag,
    ``granted`` counts ``reservations`` and ``circuits`` granted."""

    def __init__(self, limits: RelayLimits) -> None:
        self.limits = limits
        self._reservations: dict[K, _Reservation] = {}   # connection key -> reservation
        self._circuits: Counter[PeerId] = Counter()             # peer -> circuits it is in
        self.circuits = 0
        self._reserve_rate = TokenBuckets(limits.reserve_rate, limits.reserve_burst, 4096)
        self.refused: Counter[str] = Counter()
        self.granted: Counter[str] = Counter()

    def _refuse(self, status: Status, reason: str) -> Decision:
        self.refused[reason] += 1
        return Decision(status, reason)

    def refuse(self, status: Status, reason: str) -> Decision:
        """Count a refusal decided outside the table (malformed, connection failed ...)."""
        return self._refuse(status, reason)

    def _purge(self, now: float) -> None:
        for key in [k for k, r in self._reservations.items() if r.expire <= now]:
            del self._reservations[key]

    def reservations(self, now: float) -> int:
        self._purge(now)
        return len(self._reservations)

    def reserve(self, peer: PeerId, key: K, ip: str, now: float) -> Decision:
        """A RESERVE from ``peer`` at ``ip`` on connection ``key``."""
        limits = self.limits
        if not self._reserve_rate.allow(peer, now):
            return self._refuse(Status.RESOURCE_LIMIT_EXCEEDED, "reserve_rate")
        self._purge(now)
        expire = now + limits.reservation_ttl
        current = self._reservations.get(key)
        if current is not None and current.peer == peer:  # a renewal
            current.expire = expire
            self.granted["renewals"] += 1
            return Decision(Status.OK, expire=expire)
        live = list(self._reservations.values())
        if len(live) >= limits.max_reservations:
            return self._refuse(Status.RESERVATION_REFUSED, "reservations")
        if sum(r.peer == peer for r in live) >= limits.max_reservations_per_peer:
            return self._refuse(Status.RESERVATION_REFUSED, "reservations_per_peer")
        if sum(r.ip == ip for r in live) >= limits.max_reservations_per_ip:
            return self._refuse(Status.RESERVATION_REFUSED, "reservations_per_ip")
        self._reservations[key] = _Reservation(peer, ip, expire)
        self.granted["reservations"] += 1
        return Decision(Status.OK, expire=expire)

    def reserved_on(self, peer: PeerId, now: float) -> list[K]:
        """The connection keys holding a live reservation of ``peer``, newest first."""
        self._purge(now)
        return [k for k, r in reversed(self._reservations.items()) if r.peer == peer]

    def connection_closed(self, key: K) -> None:
        """The connection ``key`` is gone: its reservation with it."""
        self._reservations.pop(key, None)

    def open_circuit(self, src: PeerId, dst: PeerId, now: float) -> Decision:
        """A CONNECT from ``src`` to ``dst``; OK reserves a circuit slot (``close_circuit``
        gives it back)."""
        if src == dst:
            return self._refuse(Status.PERMISSION_DENIED, "self")
        if not self.reserved_on(dst, now):
            return self._refuse(Status.NO_RESERVATION, "no_reservation")
        limits = self.limits
        if self.circuits >= limits.max_circuits:
            return self._refuse(Status.RESOURCE_LIMIT_EXCEEDED, "circuits")
        if max(self._circuits[src], self._circuits[dst]) >= limits.max_circuits_per_peer:
            return self._refuse(Status.RESOURCE_LIMIT_EXCEEDED, "circuits_per_peer")
        self.circuits += 1
        self._circuits[src] += 1
        self._circuits[dst] += 1
        self.granted["circuits"] += 1
        return Decision(Status.OK)

    def close_circuit(self, src: PeerId, dst: PeerId) -> None:
        self.circuits = max(0, self.circuits - 1)
        for peer in (src, dst):
            self._circuits[peer] -= 1
            if self._circuits[peer] <= 0:
                del self._circuits[peer]
