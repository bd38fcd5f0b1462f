"""Issue 12 on the simulator: LAN segments (multicast inside one NAT) and the production
LAN discovery on them (``MdnsService``, ``LanPeers``, the node's LAN dials), seeded and
on virtual time. The real-namespace version of the node tests: ``tests/netlab/test_lan.py``.

Home networks sit behind port-restricted cone NATs, which do not hairpin: without the
LAN two nodes behind one of them could reach each other only through a relay.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from zeroconf import DNSOutgoing, DNSQuestion, DNSText
from zeroconf.const import (_CLASS_IN, _CLASS_UNIQUE, _FLAGS_AA, _FLAGS_QR_QUERY,
                            _FLAGS_QR_RESPONSE, _TYPE_PTR, _TYPE_TXT)

from discovery.lan import SERVICE_TYPE, encode_txt, instance_name, service_name
from discovery.mdns_link import MAX_PACKET
from simulations.errors import SimulationError
from simulations.network import SimHost, SimNetwork
from simulations.vtime import current_clock, run_virtual
from stack.base.identity import Identity, PeerId
from stack.base.interfaces import PathKind
from stack.base.net import MDNS_GROUP
from stack.node import Node, operations
from stack.node.config import NodeConfig
from stack.store.stores import Stores

PORT = 39001
KIND = "port-restricted-cone"


class Inbox:
    def __init__(self) -> None:
        self.items: list[tuple[bytes, tuple[str, int]]] = []

    def __call__(self, batch: list[tuple[bytes, tuple[str, int]]]) -> None:
        self.items.extend(batch)


# ------------------------------------------------------------------ the network

def test_multicast_reaches_the_segment_and_nothing_beyond_it():
    """One home (NAT 1: sender, two members, one host that did not join), another home
    with a member at the *same* private address, a public member, and a public segment
    of two hosts: each group datagram reaches exactly the other members of the sender's
    segment, from the sender's unicast address, untranslated."""

    async def main():
        net = SimNetwork(random.Random(3), latency=0.001, jitter=0.0)
        home = net.add_nat_kind("203.0.113.1", KIND)
        other = net.add_nat_kind("203.0.113.2", KIND)
        sender, m1, m2, idle = (home.add_host(f"10.0.0.{i}") for i in (2, 3, 4, 5))
        far = other.add_host("10.0.0.3")
        public = net.add_host("198.51.100.1")
        office = [net.add_host(f"198.51.100.{i}", segment="office") for i in (10, 11)]
        alone = net.add_host("198.51.100.20")
        boxes = {h: Inbox() for h in (sender, m1, m2, far, public, *office, alone)}
        eps = {h: await h.join_group(MDNS_GROUP, box) for h, box in boxes.items()}
        await idle.bind(("0.0.0.0", 5000), Inbox())

        eps[sender].send(b"home", MDNS_GROUP)
        eps[office[0]].send(b"office", MDNS_GROUP)
        eps[alone].send(b"nobody", MDNS_GROUP)  # on no segment
        await asyncio.sleep(0.1)
        got = {h: [d for d, _ in box.items] for h, box in boxes.items()}
        assert got[m1] == got[m2] == [b"home"]
        assert boxes[m1].items[0][1] == ("10.0.0.2", 5353)  # the sender's own address
        assert got[sender] == got[far] == got[public] == got[alone] == []  # no loopback
        assert got[office[1]] == [b"office"] and got[office[0]] == []
        assert net.segment_hosts(m1) == [sender, m1, m2, idle]
        assert net.segment_hosts(alone) == []
        assert home.stats.translated_out == 0 and other.stats.translated_in == 0
        assert sender.interface_networks()[0].with_prefixlen == "10.0.0.0/24"

        m1.change_ip("10.0.0.9")  # a new lease: the group endpoint follows it
        eps[m1].send(b"moved", MDNS_GROUP)
        await asyncio.sleep(0.1)
        assert boxes[sender].items == [(b"moved", ("10.0.0.9", 5353))]
        return net.stats

    stats = run_virtual(main())
    assert (stats.multicast, stats.delivered, stats.dropped_unroutable) == (4, 5, 1)


def test_join_group_refuses_what_is_not_a_group_or_a_free_port():
    async def main():
        host = SimNetwork(random.Random(1)).add_host("198.51.100.1")
        with pytest.raises(SimulationError, match="not an IPv4 multicast"):
            await host.join_group(("10.0.0.1", 5353), Inbox())
        await host.bind(("0.0.0.0", 5353), Inbox())
        with pytest.raises(SimulationError, match="port in use"):
            await host.join_group(MDNS_GROUP, Inbox())

    run_virtual(main())


# ------------------------------------------------------------------ nodes on a LAN

class Homes:
    """Seeded nodes on a simulated network (call inside ``run_virtual``)."""

    def __init__(self, tmp: Path, seed: int) -> None:
        self.seed = seed
        self.tmp = tmp
        self.rng = random.Random(seed)
        self.net = SimNetwork(self.rng, latency=0.02, jitter=0.005)
        self.clock = current_clock()
        self.nodes: list[Node] = []

    async def node(self, host: SimHost, *, mdns: bool = True, join: bool = False,
                   **overrides: object) -> Node:
        config = NodeConfig(data_dir=self.tmp / f"n{len(self.nodes)}",
                            listen=(host.ip, PORT), tls=False, mdns=mdns,
                            identity=Identity.from_rng(self.rng),
                            rng_seed=self.rng.getrandbits(64), dial_back_timeout=3.0,
                            stores=Stores.memory(), **overrides)  # type: ignore[arg-type]
        node = Node(config, network=host, clock=self.clock)
        self.nodes.append(node)
        await node.start()
        if join:
            await node.join(timeout=30)
        return node

    async def stop(self) -> None:
        await asyncio.gather(*(n.stop(0.1) for n in self.nodes), return_exceptions=True)


def run(tmp: Path, seed: int, scenario: Callable[[Homes], object]) -> object:
    async def main():
        homes = Homes(tmp, seed)
        try:
            return await scenario(homes)  # type: ignore[misc]
        finally:
            await homes.stop()
    return run_virtual(main())


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait (virtual time) until ``condition()`` holds; TimeoutError after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


def seen(node: Node, peer: PeerId) -> bool:
    assert node.mdns is not None
    return peer in node.mdns.peers.peers


@pytest.mark.parametrize("seed", [21, 22])
def test_two_nodes_behind_one_nat_find_each_other_and_connect_over_the_lan(tmp_path, seed):
    """No bootstrap node, a NAT without hairpinning: a and b see each other by mDNS,
    b dials a by peer id alone and gets path LAN; c, in another home, sees neither."""

    async def scenario(h: Homes):
        home = h.net.add_nat_kind("203.0.113.1", KIND)
        a = await h.node(home.add_host("10.0.0.2"))
        b = await h.node(home.add_host("10.0.0.3"))
        c = await h.node(h.net.add_nat_kind("203.0.113.2", KIND).add_host("10.0.0.4"))
        start = h.clock.monotonic()
        await until(lambda: seen(b, a.peer_id) and seen(a, b.peer_id))
        found_in = h.clock.monotonic() - start
        assert b.mdns is not None and a.mdns is not None and c.mdns is not None
        [row] = b.mdns.peers.snapshot(h.clock.monotonic())
        assert row["addrs"] == [f"/ip4/10.0.0.2/udp/{PORT}/quic-v1/p2p/{a.peer_id}"]
        assert row["verified"] is False

        conn, reply, _ = await b.echo(a.peer_id, b"hi lan")
        assert (conn.peer_id, conn.path.kind, reply) == (a.peer_id, PathKind.LAN, b"hi lan")
        assert b.mdns.peers.candidates(a.peer_id)[0].verified
        assert b.mdns.stats["verified"] == 1
        await asyncio.sleep(5.0)  # c has been querying all along
        assert len(c.mdns.peers) == 0 and not seen(a, c.peer_id) and not seen(b, c.peer_id)
        return found_in, h.net.stats

    found_in, stats = run(tmp_path, seed, scenario)  # type: ignore[misc]
    assert found_in < 3.0, f"seed={seed}: {found_in:.1f} s to discover"
    assert stats.dropped_nat == 0, f"seed={seed}: nothing went through the NAT: {stats}"
    # same seed, same run
    assert run(tmp_path / "again", seed, scenario) == (found_in, stats), f"seed={seed}"


def test_with_a_bootstrap_node_as_well_the_lan_path_is_chosen(tmp_path):
    """a and b join a DHT through a public node and publish their announcements; b
    dialing a by peer id still goes over the LAN (mDNS first), although the DHT would
    give it an address too; the public node, on no LAN, is not seen by mDNS."""

    async def scenario(h: Homes):
        boot = await h.node(h.net.add_host("198.51.100.1"))
        bootstrap = (f"198.51.100.1:{PORT}",)
        home = h.net.add_nat_kind("203.0.113.1", KIND)
        a = await h.node(home.add_host("10.0.0.2"), join=True, bootstrap=bootstrap)
        b = await h.node(home.add_host("10.0.0.3"), join=True, bootstrap=bootstrap)
        assert b.mdns is not None and boot.mdns is not None
        announcement = await b.resolve(a.peer_id, timeout=30)
        assert announcement.addrs  # the DHT way is open as well
        await until(lambda: seen(b, a.peer_id))
        conn = await b.connect(a.peer_id)
        assert (conn.peer_id, conn.path.kind) == (a.peer_id, PathKind.LAN)
        assert conn.remote_address == ("10.0.0.2", PORT)
        assert not seen(b, boot.peer_id) and len(boot.mdns.peers) == 0
        return h.net.stats

    stats = run(tmp_path, 31, scenario)
    assert stats.dropped_unroutable > 0  # the public node's mDNS went nowhere


def test_a_node_that_moves_on_its_lan_is_advertised_there_at_once(tmp_path):
    """Alice's host gets a new lease on the home LAN: her node rebinds its port there
    (issue 10) and re-advertises at once, so Bob reaches her at the new address over the
    LAN by peer id, long before the 5-minute re-announcement; ``discover`` lists it."""

    async def scenario(h: Homes):
        home = h.net.add_nat_kind("203.0.113.1", KIND)
        alice_host = home.add_host("10.0.0.2")
        alice = await h.node(alice_host)
        bob = await h.node(home.add_host("10.0.0.3"))
        assert bob.mdns is not None
        await until(lambda: seen(bob, alice.peer_id))
        alice_host.change_ip("10.0.0.12")
        moved = h.clock.monotonic()
        await until(lambda: ("10.0.0.12", PORT, "quic") in
                    bob.mdns.peers.peers[alice.peer_id].addrs, timeout=60)
        assert h.clock.monotonic() - moved < 30
        conn = await bob.connect(alice.peer_id)
        assert (conn.peer_id, conn.path.kind) == (alice.peer_id, PathKind.LAN)
        assert conn.remote_address == ("10.0.0.12", PORT)
        listed = await operations.discover(bob, timeout=0.5)
        [row] = listed["peers"]
        assert f"/ip4/10.0.0.12/udp/{PORT}/quic-v1/p2p/{alice.peer_id}" in row["addrs"]

    run(tmp_path, 61, scenario)


def spoof(claimed: PeerId, host: str) -> bytes:
    """An mDNS response claiming ``claimed`` at ``host`` under its real instance name."""
    name = service_name(instance_name(claimed))
    out = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA, multicast=True)
    txt = encode_txt([f"/ip4/{host}/udp/{PORT}/quic-v1/p2p/{claimed}"])
    out.add_answer_at_time(DNSText(name, _TYPE_TXT, _CLASS_IN | _CLASS_UNIQUE, 360, txt), 0)
    return out.packets()[0]


def test_a_hostile_host_spoofing_a_peer_id_is_refused_and_counted(tmp_path):
    """Mallory, on the same home LAN, runs a node of her own and multicasts a claim of
    Alice's peer id at her address (and garbage). Bob's dial proves Mallory's id there:
    refused and counted ``spoofed``; Bob reaches Alice over the LAN; Mallory's later
    claims of Alice are not believed. Garbage and oversized packets are counted; Alice's
    goodbye when she stops takes her out of Bob's table."""

    async def scenario(h: Homes):
        home = h.net.add_nat_kind("203.0.113.1", KIND)
        mallory_host = home.add_host("10.0.0.66")
        await h.node(mallory_host, mdns=False)
        alice = await h.node(home.add_host("10.0.0.2"))
        bob = await h.node(home.add_host("10.0.0.3"))
        assert bob.mdns is not None
        peers = bob.mdns.peers
        await until(lambda: seen(bob, alice.peer_id))
        mallory = await mallory_host.join_group(MDNS_GROUP, Inbox())

        mallory.send(spoof(alice.peer_id, "10.0.0.66"), MDNS_GROUP)
        await until(lambda: len(peers.peers[alice.peer_id].addrs) == 2)
        assert peers.candidates(alice.peer_id)[0].host == "10.0.0.66"  # the freshest
        conn = await bob.connect(alice.peer_id)
        assert (conn.peer_id, conn.path.kind) == (alice.peer_id, PathKind.LAN)
        await until(lambda: peers.stats["spoofed"] == 1)
        assert [c.host for c in peers.candidates(alice.peer_id)] == ["10.0.0.2"]

        mallory.send(spoof(alice.peer_id, "10.0.0.66"), MDNS_GROUP)
        await until(lambda: peers.stats["from_refuted"] == 1)
        assert [c.host for c in peers.candidates(alice.peer_id)] == ["10.0.0.2"]

        mallory.send(b"\x00\x01 not dns", MDNS_GROUP)
        mallory.send(b"\x00" * (MAX_PACKET + 1), MDNS_GROUP)
        await until(lambda: peers.stats["packets_oversized"] == 1
                    and peers.stats["packets_malformed"] == 1)

        await alice.stop(0.1)  # goodbye: TTL 0
        await until(lambda: not seen(bob, alice.peer_id))
        assert peers.stats["goodbyes"] == 1

    run(tmp_path, 41, scenario)


def test_queries_are_answered_at_most_once_a_second(tmp_path):
    """A flood of PTR questions on the LAN gets one answer per second (RFC 6762 6),
    the rest counted ``queries_suppressed``."""

    async def scenario(h: Homes):
        home = h.net.add_nat_kind("203.0.113.1", KIND)
        alice = await h.node(home.add_host("10.0.0.2"))
        assert alice.mdns is not None
        await until(lambda: alice.mdns is not None and alice.mdns.running.is_set())
        await asyncio.sleep(2.0)
        answers = Inbox()
        mallory = await home.add_host("10.0.0.66").join_group(MDNS_GROUP, answers)
        query = DNSOutgoing(_FLAGS_QR_QUERY, multicast=True)
        query.add_question(DNSQuestion(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN))
        before = alice.mdns.stats.get("queries_suppressed", 0)
        for _ in range(100):
            mallory.send(query.packets()[0], MDNS_GROUP)
        await asyncio.sleep(0.5)
        from_alice = [d for d, src in answers.items if src == ("10.0.0.2", 5353)
                      and d[2] & 0x80]  # QR bit: a response
        assert len(from_alice) == 1
        assert alice.mdns.stats["queries_suppressed"] - before == 99

        def ask(name: str, kind: int) -> bytes:
            out = DNSOutgoing(_FLAGS_QR_QUERY, multicast=True)
            out.add_question(DNSQuestion(name, kind, _CLASS_IN))
            return out.packets()[0]

        mine = service_name(instance_name(alice.peer_id))
        for name, kind in (("_http._tcp.local.", _TYPE_PTR), (mine, _TYPE_PTR),
                           (mine.upper(), _TYPE_TXT)):  # names are case-insensitive
            await asyncio.sleep(1.5)
            answers.items.clear()
            mallory.send(ask(name, kind), MDNS_GROUP)
            await asyncio.sleep(0.5)
            got = [d for d, src in answers.items if src[0] == "10.0.0.2"]
            assert len(got) == (kind == _TYPE_TXT), (name, kind)
        assert alice.mdns.stats["queries_suppressed"] - before == 99

    run(tmp_path, 51, scenario)
