"""Hole punching on the simulator (issue 9 section 3): the production Node on virtual
time, a public relay, a dialer and a target behind every pair of NAT kinds. The dialer
connects through the relay (the target's p2p-circuit address); the upgrade starts on
its own. Feasible pairs (all but symmetric <-> symmetric) end on a direct path:
PUNCHED, or DIRECT by connection reversal where the dialer is public; symmetric <->
symmetric stays RELAYED and keeps working. Port-restricted cone <-> symmetric needs the
birthday technique (``stack.node.protocols.birthday``), which needs both sides' NAT
reports: those runs add an RFC 5780 STUN server (two IPs) that the nodes ask at start,
and connect once both reported. Seeded; a failure names its seed."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from simulations.network import SimNetwork
from simulations.vtime import current_clock, run_virtual
from stack.base.identity import Identity
from stack.base.interfaces import PathKind
from stack.node import Node
from stack.node.config import NodeConfig
from stack.node.events import (BirthdayFailed, BirthdaySucceeded, HolePunchFailed,
                               HolePunchSucceeded, NatReported, RelayReservation)
from stack.store.stores import Stores

PORT = 39001
KINDS = ("none", "full-cone", "restricted-cone", "port-restricted-cone", "symmetric")
INFEASIBLE = {("symmetric", "symmetric")}
#: the pairs only the birthday technique opens
BIRTHDAY = {("port-restricted-cone", "symmetric"), ("symmetric", "port-restricted-cone")}
STUN_A, STUN_B = "192.0.2.10", "192.0.2.11"


def feasible(dialer: str, target: str) -> bool:
    return (dialer, target) not in INFEASIBLE


class PunchSim:
    """A relay at 198.51.100.1, a dialer A and a target B behind their NAT kinds."""

    def __init__(self, tmp: Path, seed: int, loss: float, *, stun: bool = False) -> None:
        self.seed = seed
        self.stun = stun
        self.tmp = tmp
        self.rng = random.Random(seed)
        self.net = SimNetwork(self.rng, latency=0.02, jitter=0.005, loss=loss)
        self.clock = current_clock()
        self.nodes: list[Node] = []
        self._stun_service = None

    def fail(self, what: str) -> str:
        return f"seed={self.seed}: {what}"

    async def node(self, host, ip: str, **overrides) -> Node:
        """A started node (no DHT: the relay is given, the target's address is known);
        with ``stun``, one that has its NAT report."""
        if self.stun:
            overrides.setdefault("stun_servers", (f"{STUN_A}:3478",))
            await self._serve_stun()
        config = NodeConfig(data_dir=self.tmp / f"n{len(self.nodes)}", listen=(ip, PORT),
                            tls=False, dht=False, identity=Identity.from_rng(self.rng),
                            rng_seed=self.rng.getrandbits(64), dial_back_timeout=3.0,
                            stores=Stores.memory(), **overrides)
        node = Node(config, network=host, clock=self.clock)
        self.nodes.append(node)
        held = node.next_event(RelayReservation, held=True, timeout=60)
        reported = node.next_event(NatReported, timeout=60)
        await node.start()
        if self.stun:
            try:
                await reported
            except TimeoutError:
                raise AssertionError(self.fail("no NAT report")) from None
        else:
            reported.cancel()
        if overrides.get("relays"):
            try:
                await held
            except TimeoutError:
                raise AssertionError(self.fail("no reservation on the relay")) from None
        else:
            held.cancel()
        return node

    async def _serve_stun(self) -> None:
        if self._stun_service is not None:
            return
        from nat.stun.server import ServerConfig
        from nat.stun.service import serve
        host = self.net.add_host(STUN_A, extra_ips=[STUN_B])
        self._stun_service = await serve(host, ServerConfig(
            primary=(STUN_A, 3478), alternate_ip=STUN_B, alternate_port=3479), self.clock)

    def host(self, kind: str, public_ip: str):
        if kind == "none":
            return self.net.add_host(public_ip), public_ip
        host = self.net.add_nat_kind(public_ip, kind).add_host("10.0.0.2")
        return host, host.ip

    async def pair(self, dialer: str, target: str, **overrides) -> tuple[Node, Node, str]:
        """The relay, A (``dialer`` kind) and B (``target`` kind, holding a
        reservation), both with the config ``overrides``; B's p2p-circuit address."""
        relay = await self.node(self.net.add_host("198.51.100.1"), "198.51.100.1",
                                relay_service="limited")
        relay_addr = f"/ip4/198.51.100.1/udp/{PORT}/quic-v1/p2p/{relay.peer_id}"
        a = await self.node(*self.host(dialer, "203.0.113.1"), **overrides)
        b = await self.node(*self.host(target, "203.0.113.2"), relays=(relay_addr,),
                            **overrides)
        return a, b, f"{relay_addr}/p2p-circuit/p2p/{b.peer_id}"

    async def stop(self) -> None:
        await asyncio.gather(*(n.stop(0.1) for n in self.nodes), return_exceptions=True)
        if self._stun_service is not None:
            self._stun_service.close()


def run(tmp: Path, seed: int, loss: float, scenario, *, stun: bool = False):
    async def main():
        sim = PunchSim(tmp, seed, loss, stun=stun)
        try:
            return await scenario(sim)
        finally:
            await sim.stop()
    return run_virtual(main())


async def upgrade(sim: PunchSim, dialer: str, target: str):
    """Connect A to B through the relay; the outcome on A's side (succeeded, or the
    final failure) and the relayed connection."""
    a, b, circuit = await sim.pair(dialer, target)
    succeeded = a.next_event(HolePunchSucceeded, timeout=120)
    failed = a.next_event(HolePunchFailed, final=True, timeout=120)
    relayed = await a.connect(circuit)
    assert relayed.path.kind is PathKind.RELAYED, sim.fail(relayed.path)
    done, _ = await asyncio.wait({asyncio.ensure_future(succeeded._wait()),
                                  asyncio.ensure_future(failed._wait())},
                                 return_when=asyncio.FIRST_COMPLETED)
    outcome = done.pop().result()
    succeeded.cancel()
    failed.cancel()
    return a, b, relayed, outcome


def _cases():
    out = []
    for dialer in KINDS:
        for target in KINDS:
            out.append(pytest.param(dialer, target, id=f"{dialer}-to-{target}"))
    return out


@pytest.mark.parametrize("dialer, target", _cases())
@pytest.mark.parametrize("loss", [0.0, 0.05])
def test_nat_matrix(tmp_path, dialer, target, loss):
    seed = 1000 + KINDS.index(dialer) * 10 + KINDS.index(target) + (500 if loss else 0)

    async def scenario(sim: PunchSim):
        a, b, relayed, outcome = await upgrade(sim, dialer, target)
        if feasible(dialer, target):
            assert isinstance(outcome, HolePunchSucceeded), sim.fail(f"{outcome}")
            expected = PathKind.DIRECT if dialer == "none" else PathKind.PUNCHED
            assert outcome.path in (expected, PathKind.PUNCHED), sim.fail(f"{outcome}")
            conn, reply, _ = await a.echo(b.peer_id, b"direct")
            assert reply == b"direct" and conn.path.kind is outcome.path, sim.fail(conn.path)
        else:
            assert isinstance(outcome, HolePunchFailed), sim.fail(f"{outcome}")
            assert outcome.attempt == 3, sim.fail(f"{outcome}")
            _, reply, _ = await a.echo(relayed, b"still relayed")
            assert reply == b"still relayed" and not relayed.closed
            assert relayed.path.kind is PathKind.RELAYED

    run(tmp_path, seed, loss, scenario, stun=(dialer, target) in BIRTHDAY)


def test_a_punched_connection_carries_echo_and_ping_both_ways_and_the_relay_closes(tmp_path):
    async def scenario(sim: PunchSim):
        a, b, relayed, outcome = await upgrade(sim, "port-restricted-cone", "restricted-cone")
        assert isinstance(outcome, HolePunchSucceeded) and outcome.attempt == 1, outcome
        assert outcome.path is PathKind.PUNCHED and outcome.elapsed < 2.0, outcome
        conn, reply, _ = await a.echo(b.peer_id, b"over the punched path")
        assert reply == b"over the punched path" and conn.path.kind is PathKind.PUNCHED
        _, direct_rtt = await a.ping(conn)
        back, reply, _ = await b.echo(a.peer_id, b"and back")  # B's side of it
        assert reply == b"and back" and back.path.kind is PathKind.PUNCHED
        # the relayed connection's round trip is two of the direct one's legs more
        _, relayed_rtt = await a.ping(relayed)
        assert direct_rtt < relayed_rtt, sim.fail(f"{direct_rtt} vs {relayed_rtt}")
        await asyncio.wait_for(relayed.wait_closed(), a.config.hole_punch_grace + 5)
        _, reply, _ = await a.echo(b.peer_id, b"after the grace period")
        assert reply == b"after the grace period" and not conn.closed

    run(tmp_path, 7, 0.0, scenario)


def test_connect_reports_the_path_and_the_time_to_the_upgrade(tmp_path):
    from stack.node import operations

    async def scenario(sim: PunchSim):
        a, b, circuit = await sim.pair("full-cone", "symmetric")
        out = await operations.connect(a, circuit, message="hi", timeout=30)
        assert out["path"] == "punched" and out["reply"] == "hi", out
        assert out["holepunch"] == "succeeded on attempt 1", out
        assert 0 < out["first_byte_ms"] < out["upgrade_ms"] < 2000, out
        report = operations.status(a)
        status = report["holepunch"][str(b.peer_id)]
        assert status["path"] == "punched" and status["outcome"] == "succeeded", status
        from stack.cli.status import _text
        assert f"hole punch:   {b.peer_id} succeeded on attempt 1, punched after" in _text(report)
        # symmetric <-> symmetric: relayed, and says why
        c = await sim.node(*sim.host("symmetric", "203.0.113.3"))
        out = await operations.connect(c, circuit, message="hi", timeout=60)
        assert out["path"] == "relayed" and out["reply"] == "hi", out
        assert out["holepunch"].startswith("failed: "), out
        assert out["upgrade_ms"] is None

    run(tmp_path, 11, 0.0, scenario)


def test_hole_punch_off_stays_relayed_without_events(tmp_path):
    async def scenario(sim: PunchSim):
        relay = await sim.node(sim.net.add_host("198.51.100.1"), "198.51.100.1",
                               relay_service="limited")
        relay_addr = f"/ip4/198.51.100.1/udp/{PORT}/quic-v1/p2p/{relay.peer_id}"
        a = await sim.node(*sim.host("full-cone", "203.0.113.1"), hole_punch=False)
        b = await sim.node(*sim.host("full-cone", "203.0.113.2"), relays=(relay_addr,),
                           hole_punch=False)
        events = a.subscribe()
        relayed = await a.connect(f"{relay_addr}/p2p-circuit/p2p/{b.peer_id}")
        await asyncio.sleep(30)
        conn, reply, _ = await a.echo(relayed, b"relayed")
        assert reply == b"relayed" and conn.path.kind is PathKind.RELAYED
        seen = [type(e).__name__ for e in (events.get_nowait() for _ in range(events.qsize()))]
        assert not any(name.startswith("HolePunch") for name in seen), seen

    run(tmp_path, 13, 0.0, scenario)


@pytest.mark.parametrize("dialer, target", [("port-restricted-cone", "restricted-cone"),
                                            ("full-cone", "symmetric")])
def test_punching_to_a_target_idle_for_ten_simulated_minutes(tmp_path, dialer, target):
    """The target sat idle 10 simulated minutes (its NAT forgets a mapping 120 s after
    the last outgoing datagram): its reservation connection's keep-alives hold the
    mapping the relay sees, which is the one the dialer is told to use."""
    async def scenario(sim: PunchSim):
        a, b, circuit = await sim.pair(dialer, target)
        await asyncio.sleep(600)
        succeeded = a.next_event(HolePunchSucceeded, timeout=60)
        relayed = await a.connect(circuit)
        outcome = await succeeded
        assert outcome.attempt == 1 and outcome.path is PathKind.PUNCHED, sim.fail(outcome)
        conn, reply, _ = await a.echo(b.peer_id, b"after ten minutes")
        assert reply == b"after ten minutes" and conn is not relayed

    run(tmp_path, 17, 0.02, scenario)


def test_a_punch_reaches_a_target_that_answers_every_other_initial_with_a_retry(tmp_path):
    """B's transport is past its Retry threshold (every unexpected Initial gets a Retry,
    as under a half-open flood): A's punched Initials, from the IP B agreed the punch
    with, are accepted without one, as PUNCHED."""
    import dataclasses

    async def scenario(sim: PunchSim):
        a, b, circuit = await sim.pair("restricted-cone", "port-restricted-cone")
        b.registry.limits = dataclasses.replace(b.registry.limits, quic_retry_threshold=0)
        succeeded = b.next_event(HolePunchSucceeded, timeout=60)
        await a.connect(circuit)
        outcome = await succeeded
        assert outcome.path is PathKind.PUNCHED and outcome.attempt == 1, sim.fail(outcome)
        assert b.quic.stats["retry_sent"] == 0, b.quic.stats
        _, reply, _ = await b.echo(a.peer_id, b"no retry")
        assert reply == b"no retry"

    run(tmp_path, 19, 0.0, scenario)


def test_garbage_on_the_dcutr_stream_and_port_is_dropped(tmp_path):
    """Remote garbage never raises out: a malformed CONNECT ends the exchange quietly,
    punch datagrams that do not parse or carry an unknown token are counted drops, and
    the relayed connection keeps working."""
    from nat.punch.core import PROTO_DCUTR, encode_punch
    from stack.node.router import open_protocol

    async def scenario(sim: PunchSim):
        relay = await sim.node(sim.net.add_host("198.51.100.1"), "198.51.100.1",
                               relay_service="limited")
        relay_addr = f"/ip4/198.51.100.1/udp/{PORT}/quic-v1/p2p/{relay.peer_id}"
        a = await sim.node(*sim.host("none", "203.0.113.1"))
        b = await sim.node(*sim.host("full-cone", "203.0.113.2"), relays=(relay_addr,),
                           hole_punch=False)
        relayed = await a.connect(f"{relay_addr}/p2p-circuit/p2p/{b.peer_id}")
        stream = await open_protocol(relayed, PROTO_DCUTR)
        await stream.write_message(b"\xc1 not msgpack")
        assert await asyncio.wait_for(stream.next_message(), 10) is None  # B ended it
        stream = await open_protocol(relayed, PROTO_DCUTR)
        await stream.write_message(b"\x81\xa1t\xa4sync")  # {"t": "sync"}: not a CONNECT
        assert await asyncio.wait_for(stream.next_message(), 10) is None
        before = b.holepunch.dropped
        a.endpoint.send(b"\x05\x03short", ("203.0.113.2", PORT))
        a.endpoint.send(encode_punch(bytes(8), random.Random(1)), ("203.0.113.2", PORT))
        await asyncio.sleep(1)
        assert b.holepunch.dropped == before + 2
        _, reply, _ = await a.echo(relayed, b"still fine")
        assert reply == b"still fine"

    run(tmp_path, 23, 0.0, scenario)


@pytest.mark.parametrize("dialer, target", sorted(BIRTHDAY))
@pytest.mark.parametrize("loss", [0.0, 0.05])
def test_birthday_opens_port_restricted_cone_and_symmetric(tmp_path, dialer, target, loss):
    """The symmetric side's 256 sockets and the cone side's probes meet: the QUIC
    connection runs over the symmetric side's winning socket (PUNCHED both ways), the
    other sockets are closed, the relayed connection closes after the grace period."""
    seed = 3000 + (dialer == "symmetric") + (100 if loss else 0)

    async def scenario(sim: PunchSim):
        a, b, circuit = await sim.pair(dialer, target)
        sym, cone = (a, b) if dialer == "symmetric" else (b, a)
        won = sym.next_event(BirthdaySucceeded, timeout=120)
        probed = cone.next_event(BirthdaySucceeded, timeout=120)
        succeeded = a.next_event(HolePunchSucceeded, timeout=120)
        bound = len(sym._network._endpoints)  # the simulated host's sockets
        relayed = await a.connect(circuit)
        outcome, ours, theirs = await succeeded, await won, await probed
        assert len(sym._network._endpoints) == bound + 1, sim.fail("sockets left open")
        assert outcome.path is PathKind.PUNCHED and outcome.attempt <= 3, sim.fail(outcome)
        assert (ours.role, theirs.role) == ("sockets", "probe"), sim.fail((ours, theirs))
        assert 0 < theirs.probes <= 1024 and ours.probes is None, sim.fail(theirs)
        # the 4-tuple: the cone's own port, the symmetric NAT's port of the winner
        assert ours.address == f"{cone_public(sim, cone)}:{PORT}", sim.fail(ours)
        assert theirs.address.startswith(cone_public(sim, sym) + ":"), sim.fail(theirs)
        assert not theirs.address.endswith(f":{PORT}"), sim.fail(theirs)
        conn, reply, _ = await a.echo(b.peer_id, b"over the birthday path")
        assert reply == b"over the birthday path" and conn.path.kind is PathKind.PUNCHED
        back, reply, _ = await b.echo(a.peer_id, b"and back")
        assert reply == b"and back" and back.path.kind is PathKind.PUNCHED
        assert sym.holepunch.birthday.available() and cone.holepunch.birthday.available()
        from stack.node import operations
        counters = operations.status(sym)["birthday"]["counters"]
        assert counters["hits"] >= 1 and counters["socket_sends"] >= 256, counters
        assert operations.status(cone)["birthday"]["counters"]["probes"] >= theirs.probes
        await asyncio.wait_for(relayed.wait_closed(), a.config.hole_punch_grace + 5)
        conn, reply, _ = await a.echo(b.peer_id, b"after the grace period")
        assert reply == b"after the grace period"
        await conn.close()  # the winning socket goes with its connection
        await asyncio.sleep(1)
        assert len(sym._network._endpoints) == bound, sim.fail("the winner stayed open")

    run(tmp_path, seed, loss, scenario, stun=True)


def cone_public(sim: PunchSim, node: Node) -> str:
    """The public IP a node of the pair is seen at (its NAT report)."""
    report = node.natinfo.report
    assert report is not None and report.public_address is not None, sim.fail("no report")
    return report.public_address[0]


def test_birthday_off_keeps_the_pair_relayed(tmp_path):
    async def scenario(sim: PunchSim):
        relay = await sim.node(sim.net.add_host("198.51.100.1"), "198.51.100.1",
                               relay_service="limited")
        relay_addr = f"/ip4/198.51.100.1/udp/{PORT}/quic-v1/p2p/{relay.peer_id}"
        a = await sim.node(*sim.host("port-restricted-cone", "203.0.113.1"))
        b = await sim.node(*sim.host("symmetric", "203.0.113.2"), relays=(relay_addr,),
                           birthday=False)
        events = a.subscribe()
        failed = a.next_event(HolePunchFailed, final=True, timeout=120)
        relayed = await a.connect(f"{relay_addr}/p2p-circuit/p2p/{b.peer_id}")
        outcome = await failed
        assert outcome.attempt == 3, sim.fail(outcome)
        seen = [type(e).__name__ for e in (events.get_nowait() for _ in range(events.qsize()))]
        assert not any(name.startswith("Birthday") for name in seen), seen
        _, reply, _ = await a.echo(relayed, b"still relayed")
        assert reply == b"still relayed" and relayed.path.kind is PathKind.RELAYED

    run(tmp_path, 29, 0.0, scenario, stun=True)


def test_a_birthday_that_misses_says_why_and_stays_relayed(tmp_path):
    """One socket instead of 256 (1024 probes then hit it ~1.6% of the time): every
    attempt is a birthday one that fails with its reason on both sides, the node's slot
    is free again after each, and the relayed connection keeps working."""
    async def scenario(sim: PunchSim):
        a, b, circuit = await sim.pair("port-restricted-cone", "symmetric")
        b.holepunch.birthday.sockets = 1
        missed = [b.next_event(BirthdayFailed, attempt=n, timeout=120) for n in (1, 2, 3)]
        probed = a.next_event(BirthdayFailed, attempt=3, timeout=120)
        final = a.next_event(HolePunchFailed, final=True, timeout=120)
        relayed = await a.connect(circuit)
        for waiter in missed:
            event = await waiter
            assert event.role == "sockets", sim.fail(event)
            assert event.reason == "birthday: no probe reached any of 1 sockets", event
        event = await probed
        assert event.role == "probe" and event.probes == 1024, sim.fail(event)
        assert (await final).reason == event.reason
        assert a.holepunch.birthday.available() and b.holepunch.birthday.available()
        _, reply, _ = await a.echo(relayed, b"still relayed")
        assert reply == b"still relayed" and relayed.path.kind is PathKind.RELAYED

    run(tmp_path, 31, 0.0, scenario, stun=True)


def test_one_birthday_at_a_time_per_node(tmp_path):
    """Two port-restricted cone dialers reach one symmetric target at once: the target
    runs one birthday attempt at a time (the other pair gets the plain punch meanwhile,
    which fails), so the second pair's birthday comes on a later attempt; both end
    punched."""
    async def scenario(sim: PunchSim):
        a, b, circuit = await sim.pair("port-restricted-cone", "symmetric")
        c = await sim.node(*sim.host("port-restricted-cone", "203.0.113.3"))
        won = {n.peer_id: n.next_event(BirthdaySucceeded, timeout=120) for n in (a, c)}
        plain = b.next_event(HolePunchFailed, final=False, timeout=120)
        first, second = await asyncio.gather(a.connect(circuit), c.connect(circuit))
        attempts = sorted([(await won[a.peer_id]).attempt, (await won[c.peer_id]).attempt])
        assert attempts[0] == 1 and attempts[1] >= 2, sim.fail(attempts)
        assert not (await plain).reason.startswith("birthday"), sim.fail("not plain")
        for node in (a, c):
            conn, reply, _ = await node.echo(b.peer_id, b"punched")
            assert reply == b"punched" and conn.path.kind is PathKind.PUNCHED
        assert first.path.kind is second.path.kind is PathKind.RELAYED

    run(tmp_path, 37, 0.0, scenario, stun=True)
