"""Events a ``DhtCore`` reports to the layer above (frozen dataclasses, DESIGN.md section 2).

Every operation started on the core (``bootstrap``, ``start_lookup``, ``get``, ``put``,
``publish``) ends with exactly one event carrying its ``op`` id.
"""

from __future__ import annotations

from dataclasses import dataclass

from stack.base.net import Address

__all__ = ["PeerInfo", "BootstrapDone", "LookupDone", "GetDone", "PutDone",
           "RecordRefreshDue", "Event"]


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A peer that answered us: ``peer_id`` bytes (claimed unless it entered the routing
    table, which needs a proof) and the address it answered from."""

    peer_id: bytes
    addr: Address


@dataclass(frozen=True, slots=True)
class BootstrapDone:
    op: int
    peers: int            # routing-table size afterwards
    error: str | None     # "unreachable": no bootstrap address answered


@dataclass(frozen=True, slots=True)
class LookupDone:
    op: int
    target: bytes
    peers: tuple[PeerInfo, ...]  # the exact k closest that answered, closest first


@dataclass(frozen=True, slots=True)
class GetDone:
    op: int
    key: bytes
    record: bytes | None  # the valid record with the highest seq, None when not found
    seq: int | None
    holders: int          # nodes that returned a valid record
    repaired: int         # stale holders sent the best record
    error: str | None     # "not_found"
    rejected: tuple[str, ...] = ()  # validator codes of the invalid records offered


@dataclass(frozen=True, slots=True)
class PutDone:
    op: int
    key: bytes
    stored: int           # replicas that accepted (or already held) the record
    error: str | None     # None, a validator code for our own record, "no_peers", "rejected"


@dataclass(frozen=True, slots=True)
class RecordRefreshDue:
    """Our published record for ``key`` is half-way through the freshness window: publish
    a freshly signed one (higher seq). Re-publishing is the publisher's job."""

    key: bytes


Event = BootstrapDone | LookupDone | GetDone | PutDone | RecordRefreshDue
