"""The relay's resource table (sans-I/O): every limit is a named, counted refusal."""

from __future__ import annotations

from dataclasses import replace

from nat.relay.limits import RelayLimits, RelayMode, RelayTable
from nat.relay.wire import Limit, Status
from stack.base.identity import Identity

P = [Identity.from_seed(bytes([i]) * 32).peer_id for i in range(8)]


def test_defaults_are_libp2ps_limited_relay_and_full_lifts_the_caps() -> None:
    limited = RelayLimits.for_mode(RelayMode.LIMITED)
    assert (limited.reservation_ttl, limited.max_reservations, limited.max_reservations_per_peer,
            limited.max_reservations_per_ip, limited.max_circuits, limited.circuit_duration,
            limited.circuit_data) == (3600, 128, 4, 4, 16, 120, 128 * 1024)
    assert limited.limit == Limit(120, 131072)
    full = RelayLimits.for_mode("full")
    assert full.limit == Limit(0, 0) and full.circuit_rate > 0


def test_reservations_expire_renew_and_are_bounded() -> None:
    table: RelayTable[str] = RelayTable(replace(RelayLimits(), max_reservations=2))
    assert table.reserve(P[0], "c0", "10.0.0.1", 0).expire == 3600
    renewed = table.reserve(P[0], "c0", "10.0.0.1", 100)
    assert renewed.ok and renewed.expire == 3700 and table.granted["renewals"] == 1
    assert table.reserve(P[1], "c1", "10.0.0.2", 100).ok
    refused = table.reserve(P[2], "c2", "10.0.0.3", 100)
    assert (refused.status, refused.reason) == (Status.RESERVATION_REFUSED, "reservations")
    assert table.refused["reservations"] == 1
    # c1's reservation expires at 3700: room again
    assert table.reserve(P[2], "c2", "10.0.0.3", 3700).ok
    assert table.reserved_on(P[1], 3700) == []
    table.connection_closed("c2")
    assert table.reserved_on(P[2], 3700) == []


def test_per_peer_and_per_ip_limits() -> None:
    table: RelayTable[str] = RelayTable(RelayLimits(max_reservations_per_peer=1,
                                                    max_reservations_per_ip=2))
    assert table.reserve(P[0], "a", "10.0.0.1", 0).ok
    assert table.reserve(P[0], "b", "10.0.0.9", 0).reason == "reservations_per_peer"
    assert table.reserve(P[1], "c", "10.0.0.1", 0).ok
    assert table.reserve(P[2], "d", "10.0.0.1", 0).reason == "reservations_per_ip"


def test_reserve_rate_limit() -> None:
    table: RelayTable[str] = RelayTable(RelayLimits(reserve_burst=2, reserve_rate=0.01))
    assert table.reserve(P[0], "a", "ip", 0).ok and table.reserve(P[0], "a", "ip", 0).ok
    decision = table.reserve(P[0], "a", "ip", 0)
    assert (decision.status, decision.reason) == (Status.RESOURCE_LIMIT_EXCEEDED, "reserve_rate")


def test_circuits_need_a_reservation_and_are_bounded() -> None:
    table: RelayTable[str] = RelayTable(RelayLimits(max_circuits=2, max_circuits_per_peer=1))
    assert table.open_circuit(P[1], P[0], 0).status is Status.NO_RESERVATION
    table.reserve(P[0], "a", "ip0", 0)
    table.reserve(P[3], "b", "ip3", 0)
    assert table.open_circuit(P[0], P[0], 0).status is Status.PERMISSION_DENIED
    assert table.open_circuit(P[1], P[0], 0).ok
    assert table.open_circuit(P[2], P[0], 0).reason == "circuits_per_peer"
    assert table.open_circuit(P[2], P[3], 0).ok
    assert table.open_circuit(P[4], P[3], 0).reason == "circuits"
    table.close_circuit(P[1], P[0])
    assert table.open_circuit(P[4], P[0], 0).ok
    assert dict(table.refused) == {"no_reservation": 1, "self": 1, "circuits_per_peer": 1,
                                   "circuits": 1}
