"""Relay fallback on the simulator (the production Node on virtual time): a node behind
a symmetric NAT, which no one can dial directly and which hole punching cannot reach
either, is reachable by peer id alone through a public relay, from a public node and from
a node behind another symmetric NAT; its reservation is renewed over hours of virtual
time on the same connection (kept open, and the NAT mapping with it, by keep-alives)."""

from __future__ import annotations

import asyncio

import pytest

from nat.relay.limits import RelayLimits
from stack.base.interfaces import PathKind
from stack.node import AnnouncementPublished, RelayReservation
from tests.simulations.test_node_sim import PORT, SETTLE, Sim, public_ip, simulate

TTL = 600.0  # a short reservation lifetime: renewals every 450 s


async def _relay_network(sim: Sim):
    publics = await sim.add_public(3)
    ip = public_ip(len(sim.nodes))
    relay = await sim.add(sim.net.add_host(ip), ip, relay_service="limited",
                          relay_limits=RelayLimits(reservation_ttl=TTL))
    relay_addr = f"/ip4/{ip}/udp/{PORT}/quic-v1/p2p/{relay.peer_id}"
    nated = []
    for j in range(2):
        host = sim.net.add_nat_kind(f"203.0.113.{j + 1}", "symmetric").add_host("10.0.0.2")
        nated.append(await sim.add(host, host.ip, relays=(relay_addr,)))
    return publics, relay, nated


async def _announced_relayed(sim: Sim, node) -> str:
    """Our relayed address once an announcement carrying it is stored."""
    while True:
        if node.published is not None:
            relayed = [a for a in node.published.addrs if "p2p-circuit" in a]
            if relayed and node.replicas:
                return relayed[0]
        try:
            await node.next_event(AnnouncementPublished, timeout=300)
        except TimeoutError:
            raise AssertionError(sim.fail("no relayed address announced")) from None


@pytest.mark.parametrize("seed, loss", [(41, 0.0), (43, 0.02)])
def test_symmetric_nat_node_is_reachable_by_peer_id_through_a_relay(tmp_path, seed, loss):
    async def scenario(sim: Sim):
        publics, relay, (a, c) = await _relay_network(sim)
        relayed = await _announced_relayed(sim, a)
        assert relayed.endswith(f"/p2p/{relay.peer_id}/p2p-circuit/p2p/{a.peer_id}"), relayed
        assert a.dht.core.server is False, sim.fail("a symmetric-NAT node serves the DHT")
        await asyncio.sleep(SETTLE)

        # a public node that has never met A: the DHT gives A's announcement, the direct
        # (private) address fails, the relayed one works
        conn, reply, _ = await publics[2].echo(a.peer_id, b"via the relay")
        assert reply == b"via the relay", sim.fail("echo")
        assert conn.path.kind is PathKind.RELAYED and conn.path.relay == relay.peer_id
        # symmetric <-> symmetric
        conn, reply, _ = await c.echo(a.peer_id, b"symmetric to symmetric")
        assert reply == b"symmetric to symmetric", sim.fail("echo from the other NAT")
        assert conn.path.kind is PathKind.RELAYED
        _, rtt = await c.ping(conn)
        # 4 one-way trips of 20 +- 5 ms (C-R, R-A, A-R, R-C); a direct one would be 2
        assert rtt > 4 * 0.015, sim.fail(f"rtt {rtt}: a relayed round trip is 4 trips")
        stats = relay.relay_server.stats
        assert stats["granted.circuits"] == 2 and stats["granted.reservations"] == 2, stats

    simulate(tmp_path, seed, scenario, loss=loss)


def test_reservations_are_renewed_on_virtual_time(tmp_path):
    async def scenario(sim: Sim):
        publics, relay, (a, _c) = await _relay_network(sim)
        await _announced_relayed(sim, a)
        [held] = a.relays.active.values()
        first_conn = held.conn
        events = a.subscribe()
        await asyncio.sleep(3 * 3600.0)  # 3 h: 18 lifetimes of a 600 s reservation
        renewed = [e for e in (events.get_nowait() for _ in range(events.qsize()))
                   if isinstance(e, RelayReservation)]
        assert renewed and all(e.held and e.renewals > 0 for e in renewed), sim.fail(renewed)
        [held] = a.relays.active.values()
        assert held.conn is first_conn, sim.fail("the reservation moved to a new connection")
        assert held.renewals >= 3 * 3600 / (0.75 * TTL) - 1, sim.fail(f"{held.renewals} renewals")
        assert relay.relay_server.stats["granted.renewals"] >= held.renewals
        assert relay.relay_server.stats["reservations"] == 2
        _conn, reply, _ = await publics[1].echo(a.peer_id, b"three hours later")
        assert reply == b"three hours later", sim.fail("echo after renewals")

    simulate(tmp_path, 42, scenario)
