"""Moves behind NATs (issue 10 sections 1 and 4), on the simulator: a mover reachable only
through a relay switches networks, or sleeps and wakes; it learns its new NAT, keeps or
re-makes its relay reservation at once, and stays reachable by peer id; the direct
connection hole punching made migrates with it. Also: a client that slept past the idle
timeout redials without waiting for a migration that cannot succeed."""

from __future__ import annotations

import asyncio


from nat.relay.limits import RelayLimits
from stack.base.interfaces import PathKind
from stack.node import ConnectionOpened, RelayReservation
from stack.node.events import (AddressChanged, ConnectionMigrated, ConnectionReplaced,
                               HolePunchSucceeded, NatReported)
from tests.simulations.test_migration_sim import collect
from tests.simulations.test_node_sim import PORT, Sim, public_ip, simulate
from tests.simulations.test_reconnect_sim import SleepyClock
from tests.simulations.test_relay_sim import _announced_relayed


async def _relay_only_mover(sim: Sim):
    """Public nodes, a relay, and M behind a symmetric NAT holding a reservation on it;
    P (public) has reached M through the relay by peer id."""
    publics = await sim.add_public(3)
    ip = public_ip(len(sim.nodes))
    relay = await sim.add(sim.net.add_host(ip), ip, relay_service="limited",
                          relay_limits=RelayLimits())
    relay_addr = f"/ip4/{ip}/udp/{PORT}/quic-v1/p2p/{relay.peer_id}"
    host = sim.net.add_nat_kind("203.0.113.1", "symmetric").add_host("10.0.0.2")
    mover = await sim.add(host, "0.0.0.0", relays=(relay_addr,))
    await _announced_relayed(sim, mover)
    return publics, relay, mover, host


def test_relay_only_mover_keeps_its_reservation_and_its_relayed_peer(tmp_path):
    """M (symmetric NAT, reachable only through a relay) switches to another network
    behind another symmetric NAT. Its connection to the relay is its own (the client):
    it migrates, the reservation and the circuit inside it carry on, so P's relayed
    connection to M works on after the move; M re-learns its NAT at the new box."""

    async def scenario(sim: Sim):
        publics, relay, mover, host = await _relay_only_mover(sim)
        p = publics[2]
        conn, reply, _ = await p.echo(mover.peer_id, b"before")
        assert reply == b"before" and conn.path.kind is PathKind.RELAYED, sim.fail("echo")
        [held] = mover.relays.active.values()
        nat_b = sim.net.add_nat_kind("203.0.113.2", "symmetric")
        changed = mover.next_event(AddressChanged, cause="interface", timeout=5)
        learnt = mover.next_event(NatReported, reason="moved", timeout=30)
        moved_on = mover.next_event(ConnectionMigrated, peer_id=relay.peer_id, role="client",
                                    timeout=5)
        t0 = sim.clock.monotonic()
        host.switch_network("192.168.7.2", nat_b)
        await changed
        _, reply, _ = await p.echo(mover.peer_id, b"after")
        elapsed = sim.clock.monotonic() - t0
        assert reply == b"after", sim.fail("echo after the move")
        assert elapsed < 1.0, sim.fail(f"reachable again after {elapsed:.3f} s")
        # P's echo may ride a direct connection hole punching made on M's new network,
        # and so be back before the relay acknowledged M's new path
        await moved_on
        assert mover.migration.stats["migrated"] >= 1, sim.fail(str(mover.migration.stats))
        [kept] = mover.relays.active.values()
        assert kept.conn is held.conn and not kept.conn.closed, sim.fail("reservation lost")
        report = await learnt
        assert report.public_address is not None
        assert report.public_address.startswith("203.0.113.2:"), sim.fail(str(report))
        assert report.type == "symmetric", sim.fail(str(report))

    simulate(tmp_path, 51, scenario)


def test_a_mover_migrates_the_direct_connection_hole_punching_made(tmp_path):
    """M (symmetric NAT) was reached through the relay by public P; hole punching made a
    direct connection by connection reversal (M dialed P from its shared port, so M is
    its client). M switches networks: that connection migrates like any it dialed
    (nothing replaced), and P's echo over it works on."""

    async def scenario(sim: Sim):
        publics, _relay, mover, host = await _relay_only_mover(sim)
        p = publics[2]
        punched = mover.next_event(HolePunchSucceeded, peer_id=p.peer_id, timeout=10)
        seen = p.next_event(HolePunchSucceeded, peer_id=mover.peer_id, timeout=10)
        await p.echo(mover.peer_id, b"before")
        event = await punched
        await seen
        assert event.path is PathKind.DIRECT, sim.fail(str(event))
        direct = mover.holepunch.direct(p.peer_id)
        assert direct is not None and direct.is_client, sim.fail("no reversal")
        theirs = p.holepunch.direct(mover.peer_id)
        assert theirs is not None, sim.fail("P kept no direct connection")
        migrated = mover.next_event(ConnectionMigrated, peer_id=p.peer_id, role="client",
                                    timeout=5)
        replaced = collect(mover, (ConnectionReplaced,))
        host.switch_network("192.168.7.2", sim.net.add_nat_kind("203.0.113.2", "symmetric"))
        await migrated
        _, reply, _ = await p.echo(theirs, b"after")
        assert reply == b"after" and not direct.closed, sim.fail("echo after the move")
        assert not replaced, sim.fail(str(replaced))

    simulate(tmp_path, 54, scenario)


def test_relay_only_mover_reserves_again_at_once_after_a_long_sleep(tmp_path):
    """M (symmetric NAT, relay only) sleeps 10 minutes: its reservation's connection
    died meanwhile and the relay service is deep in its failure backoff (up to 60 s).
    On waking, M reserves again at once and a public node that never met it reaches it
    through the relay by peer id within seconds."""

    async def scenario(sim: Sim):
        publics, relay, mover, host = await _relay_only_mover(sim)
        clock = SleepyClock(sim.clock)
        mover.clock = clock
        mover.mobility.detector._mono = clock.monotonic()
        host.crash()
        await asyncio.sleep(600)
        assert not mover.relays.addrs(), sim.fail("a reservation outlived 10 minutes")
        reserved = mover.next_event(RelayReservation, held=True, timeout=10)
        woke = mover.next_event(AddressChanged, cause="sleep_wake", timeout=5)
        host.restart()
        clock.woke_after(600)
        t0 = sim.clock.monotonic()
        await woke
        await reserved
        # the first reservation after waking may ride a connection the move then replaces;
        # what counts is the relay holding one again
        while not relay.relay_server.table.reserved_on(mover.peer_id, sim.clock.monotonic()):
            await mover.next_event(RelayReservation, held=True, timeout=10)
        waited = sim.clock.monotonic() - t0
        assert waited < 2.0, sim.fail(f"reserved again {waited:.3f} s after waking")
        stranger = publics[1]
        conn, reply, _ = await stranger.echo(mover.peer_id, b"awake?")
        assert reply == b"awake?" and conn.path.kind is PathKind.RELAYED, sim.fail("echo")

    simulate(tmp_path, 52, scenario)


def test_client_that_slept_past_the_idle_timeout_redials_without_migrating(tmp_path):
    """M dialed P (M is the client) and slept 10 minutes, longer than the idle timeout:
    P closed its side long ago, so M does not try a migration (which would wait its 1 s
    timeout for an answer that cannot come); it replaces the connection, cause
    ``slept``, and is connected to P again within a few round trips."""

    async def scenario(sim: Sim):
        publics = await sim.add_public(2)
        p = publics[1]
        ip = public_ip(len(sim.nodes))
        host = sim.net.add_host(ip)
        mover = await sim.add(host, ip)
        clock = SleepyClock(sim.clock)
        mover.clock = clock
        mover.mobility.detector._mono = clock.monotonic()
        await mover.connect(p.peer_id)
        # The suspend, as P and M see it: P's side closes (M never hears of it) and M's
        # monotonic clock stands still. (The simulator cannot freeze M's event loop, so
        # the 10 minutes pass in M's clock alone: its connection is still open on waking.)
        host.crash()
        for conn in [c for c in p.connections if c.peer_id == mover.peer_id]:
            conn.abort("idle timeout")
        await asyncio.sleep(1.0)
        assert [c for c in mover.connections if c.peer_id == p.peer_id and not c.closed]
        replaced = mover.next_event(ConnectionReplaced, peer_id=p.peer_id, timeout=10)
        reopened = mover.next_event(ConnectionOpened, peer_id=p.peer_id, inbound=False,
                                    timeout=10)
        host.restart()
        clock.woke_after(600)
        t0 = sim.clock.monotonic()
        event = await replaced
        await reopened
        elapsed = sim.clock.monotonic() - t0
        assert event.cause == "slept" and event.new_path is not None, sim.fail(str(event))
        assert mover.migration.stats["migrated"] == 0, sim.fail(str(mover.migration.stats))
        # the 0.25 s poll, then a handshake of ~2 round trips of 40-50 ms: well under the
        # 1 s a migration attempt would have waited first
        assert elapsed < 0.8, sim.fail(f"connected again after {elapsed:.3f} s")

    simulate(tmp_path, 53, scenario)
