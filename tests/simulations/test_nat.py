"""NAT boxes: RFC 4787 mapping, filtering, hairpinning and timeouts, with raw endpoints."""

import asyncio
import random

import pytest

from simulations.errors import SimulationError
from simulations.nat import ADF, ADM, APDF, APDM, EIF, EIM, NAT_KINDS, Nat, PublicSite
from simulations.network import SimHost, SimNetwork
from simulations.vtime import run_virtual

S1, S2 = "203.0.113.1", "203.0.113.2"  # public servers
NAT_IP = "198.51.100.10"
PRIVATE = "192.168.1.2"


class Recorder:
    """Receiver keeping (virtual time, data, source)."""

    def __init__(self):
        self.items = []

    def __call__(self, batch):
        t = asyncio.get_running_loop().time()
        self.items.extend((t, data, addr) for data, addr in batch)

    def sources(self):
        return [addr for _, _, addr in self.items]

    def data(self):
        return [data for _, data, _ in self.items]


async def servers(net):
    """Four public endpoints: S1:1, S1:2, S2:1 sharing a recorder."""
    rec = Recorder()
    s1, s2 = net.add_host(S1), net.add_host(S2)
    eps = {addr: await host.bind(addr, rec)
           for host, addr in ((s1, (S1, 1)), (s1, (S1, 2)), (s2, (S2, 1)))}
    return eps, rec


def mapped_addresses(mapping, port_preserving=True, seed=1):
    """The public source addresses one private socket gets towards S1:1, S1:2, S2:1."""
    async def main():
        net = SimNetwork(random.Random(seed), jitter=0.0)
        eps, rec = await servers(net)
        nat = net.add_nat(NAT_IP, mapping=mapping, filtering=EIF,
                          port_preserving=port_preserving)
        host = nat.add_host(PRIVATE)
        ep = await host.bind(("0.0.0.0", 5000), Recorder())
        assert ep.local_address == (PRIVATE, 5000)
        for dst in eps:
            ep.send(b"probe", dst)
            await asyncio.sleep(0.1)
        return rec.sources(), nat.stats.mappings_created

    return run_virtual(main())


def test_endpoint_independent_mapping_is_one_port_for_every_destination():
    sources, created = mapped_addresses(EIM)
    assert sources == [(NAT_IP, 5000)] * 3  # port-preserving
    assert created == 1


def test_address_dependent_mapping_changes_with_the_destination_ip_only():
    sources, created = mapped_addresses(ADM)
    assert sources[0] == sources[1] == (NAT_IP, 5000)
    assert sources[2][0] == NAT_IP and sources[2][1] != 5000  # 5000 was taken
    assert created == 2


def test_address_and_port_dependent_mapping_changes_with_the_destination_port():
    sources, created = mapped_addresses(APDM)
    assert len(set(sources)) == 3 and {ip for ip, _ in sources} == {NAT_IP}
    assert created == 3


def test_random_port_mapping_does_not_keep_the_private_port():
    sources, _ = mapped_addresses(EIM, port_preserving=False)
    assert len(set(sources)) == 1
    assert sources[0][1] != 5000 and 1024 <= sources[0][1] <= 65535
    # the random ports come from the network rng: same seed, same ports
    assert mapped_addresses(APDM, port_preserving=False, seed=3) == \
        mapped_addresses(APDM, port_preserving=False, seed=3)


def test_port_preservation_yields_when_two_hosts_use_the_same_private_port():
    async def main():
        net = SimNetwork(random.Random(2), jitter=0.0)
        _eps, rec = await servers(net)
        nat = net.add_nat(NAT_IP, mapping=EIM, filtering=EIF)
        for private in ("192.168.1.2", "192.168.1.3"):
            ep = await nat.add_host(private).bind(("0.0.0.0", 5000), Recorder())
            ep.send(b"x", (S1, 1))
        await asyncio.sleep(0.1)
        return rec.sources()

    first, second = run_virtual(main())
    assert first == (NAT_IP, 5000)
    assert second[0] == NAT_IP and second[1] != 5000


def let_through(filtering):
    """After the host sent to S1:1, which of S1:1, S1:2, S2:1 reach it unsolicited?"""
    async def main():
        net = SimNetwork(random.Random(1), jitter=0.0)
        eps, _ = await servers(net)
        nat = net.add_nat(NAT_IP, mapping=EIM, filtering=filtering)
        got = Recorder()
        ep = await nat.add_host(PRIVATE).bind((PRIVATE, 5000), got)
        eps[S1, 2].send(b"before any outbound", (NAT_IP, 5000))
        await asyncio.sleep(0.1)
        assert nat.stats.dropped_no_mapping == 1
        ep.send(b"open", (S1, 1))
        await asyncio.sleep(0.1)
        for addr, server in eps.items():
            server.send(b"from %s:%d" % (addr[0].encode(), addr[1]), (NAT_IP, 5000))
        await asyncio.sleep(0.1)
        return set(got.sources()), nat.stats, net.stats

    return run_virtual(main())


def test_endpoint_independent_filtering_lets_anyone_in_once_mapped():
    passed, nat, net = let_through(EIF)
    assert passed == {(S1, 1), (S1, 2), (S2, 1)}
    assert nat.dropped_filtered == 0 and net.dropped_nat == 1


def test_address_dependent_filtering_lets_in_the_contacted_ip_only():
    passed, nat, net = let_through(ADF)
    assert passed == {(S1, 1), (S1, 2)}
    assert nat.dropped_filtered == 1 and net.dropped_nat == 2


def test_address_and_port_dependent_filtering_lets_in_the_contacted_endpoint_only():
    passed, nat, net = let_through(APDF)
    assert passed == {(S1, 1)}
    assert nat.dropped_filtered == 2 and net.dropped_nat == 3
    assert nat.translated_in == 1 and nat.translated_out == 1


@pytest.mark.parametrize("hairpin", [True, False])
def test_hairpinning(hairpin):
    async def main():
        net = SimNetwork(random.Random(1), jitter=0.0)
        _eps, rec = await servers(net)
        nat = net.add_nat(NAT_IP, mapping=EIM, filtering=EIF, hairpin=hairpin)
        got1, got2 = Recorder(), Recorder()
        e1 = await nat.add_host("192.168.1.2").bind(("0.0.0.0", 5001), got1)
        e2 = await nat.add_host("192.168.1.3").bind(("0.0.0.0", 5002), got2)
        e1.send(b"learn", (S1, 1))
        e2.send(b"learn", (S1, 1))
        await asyncio.sleep(0.1)
        mapped1, mapped2 = rec.sources()
        e1.send(b"hairpin", mapped2)  # to the peer's public address, from inside
        await asyncio.sleep(0.1)
        return mapped1, got2.items, nat.stats

    mapped1, at_2, stats = run_virtual(main())
    if hairpin:
        # it arrives from the sender's *public* address (RFC 4787 REQ-9)
        assert [(d, a) for _, d, a in at_2] == [(b"hairpin", mapped1)]
        assert stats.dropped_hairpin == 0
    else:
        assert at_2 == []
        assert stats.dropped_hairpin == 1


def test_hosts_behind_one_nat_talk_directly_by_private_address():
    async def main():
        net = SimNetwork(random.Random(1), jitter=0.0)
        nat = net.add_nat(NAT_IP)
        got = Recorder()
        e1 = await nat.add_host("192.168.1.2").bind(("0.0.0.0", 1), Recorder())
        await nat.add_host("192.168.1.3").bind(("0.0.0.0", 2), got)
        e1.send(b"lan", ("192.168.1.3", 2))
        await asyncio.sleep(0.1)
        return got.items, nat.stats.mappings_created

    items, created = run_virtual(main())
    assert [(d, a) for _, d, a in items] == [(b"lan", ("192.168.1.2", 1))]
    assert created == 0


def test_mapping_times_out_refreshed_by_outbound_traffic_only():
    async def main():
        loop = asyncio.get_running_loop()
        net = SimNetwork(random.Random(1), latency=0.01, jitter=0.0)
        eps, rec = await servers(net)
        nat = net.add_nat(NAT_IP, mapping=EIM, filtering=APDF, mapping_timeout=30.0,
                          port_preserving=False)
        got = Recorder()
        ep = await nat.add_host(PRIVATE).bind(("0.0.0.0", 5000), got)
        server = eps[S1, 1]

        async def at(t):
            await asyncio.sleep(t - loop.time())

        ep.send(b"out", (S1, 1))  # t=0: mapping until 30.0
        await at(1)
        public = rec.sources()[0]
        assert nat.mappings(loop.time()) == {(PRIVATE, 5000): [public]}
        await at(20)
        server.send(b"at 20: passes (inbound does not refresh)", public)
        await at(25)
        ep.send(b"out", (S1, 1))  # refresh: until 55.0
        await at(50)
        server.send(b"at 50: passes (refreshed at 25)", public)
        await at(56)
        server.send(b"at 56: expired", public)
        await at(57)
        assert nat.mappings(loop.time()) == {}
        ep.send(b"out", (S1, 1))  # a new mapping
        await at(58)
        return got.data(), public, rec.sources()[-1], nat.stats

    data, old, new, stats = run_virtual(main())
    assert data == [b"at 20: passes (inbound does not refresh)",
                    b"at 50: passes (refreshed at 25)"]
    assert stats.dropped_no_mapping == 1
    assert stats.mappings_created == 2 and new != old  # random ports: a new one


def test_filter_permissions_expire_per_peer():
    """One EIM mapping kept alive by traffic to S2 does not keep S1's permission."""
    async def main():
        net = SimNetwork(random.Random(1), latency=0.01, jitter=0.0)
        eps, _rec = await servers(net)
        nat = net.add_nat(NAT_IP, mapping=EIM, filtering=APDF, mapping_timeout=30.0)
        got = Recorder()
        ep = await nat.add_host(PRIVATE).bind(("0.0.0.0", 5000), got)
        ep.send(b"out", (S1, 1))
        await asyncio.sleep(25)
        ep.send(b"out", (S2, 1))
        await asyncio.sleep(15)  # t=40: mapping alive (until 55), S1's permission not
        eps[S1, 1].send(b"S1 late", (NAT_IP, 5000))
        eps[S2, 1].send(b"S2 in time", (NAT_IP, 5000))
        await asyncio.sleep(1)
        return got.data(), nat.stats

    data, stats = run_virtual(main())
    assert data == [b"S2 in time"]
    assert stats.dropped_filtered == 1


def test_flush_forgets_mappings():
    async def main():
        net = SimNetwork(random.Random(1), jitter=0.0)
        eps, _ = await servers(net)
        nat = net.add_nat(NAT_IP, mapping=EIM, filtering=EIF)
        got = Recorder()
        ep = await nat.add_host(PRIVATE).bind(("0.0.0.0", 5000), got)
        ep.send(b"out", (S1, 1))
        await asyncio.sleep(1)
        nat.flush()
        eps[S1, 1].send(b"after reboot", (NAT_IP, 5000))
        await asyncio.sleep(1)
        return got.items, nat.stats

    items, stats = run_virtual(main())
    assert items == [] and stats.dropped_no_mapping == 1


@pytest.mark.parametrize("kind", sorted(NAT_KINDS))
def test_nat_kinds_build_the_lab_matrix(kind):
    net = SimNetwork(random.Random(1))
    site = net.add_nat_kind(NAT_IP, kind)
    expected = {
        "none": None,
        "full-cone": (EIM, EIF, True),
        "restricted-cone": (EIM, ADF, True),
        "port-restricted-cone": (EIM, APDF, True),
        "symmetric": (APDM, APDF, False),
    }[kind]
    host = site.add_host(PRIVATE)
    assert isinstance(host, SimHost)
    if expected is None:
        assert isinstance(site, PublicSite)
        assert host.ips == [NAT_IP] and host.nat is None
        assert net.host_at(NAT_IP) is host
    else:
        assert isinstance(site, Nat)
        assert (site.mapping, site.filtering, site.port_preserving) == expected
        assert host.nat is site and host.ip == PRIVATE


def test_nat_setup_errors():
    net = SimNetwork(random.Random(1))
    with pytest.raises(SimulationError, match="unknown NAT kind"):
        net.add_nat_kind(NAT_IP, "cone")
    with pytest.raises(SimulationError, match="unknown mapping"):
        net.add_nat(NAT_IP, mapping="EIM")
    with pytest.raises(SimulationError, match="unknown filtering"):
        net.add_nat(NAT_IP, filtering="open")
    with pytest.raises(SimulationError, match="mapping_timeout"):
        net.add_nat(NAT_IP, mapping_timeout=0)
    a = net.add_nat("198.51.100.1")
    a.add_host(PRIVATE)
    with pytest.raises(SimulationError, match="already behind"):
        a.add_host(PRIVATE)
    assert net.host_at(PRIVATE).nat is a
    net.add_nat("198.51.100.2").add_host(PRIVATE)
    with pytest.raises(SimulationError, match="2 hosts have private address"):
        net.host_at(PRIVATE)


def test_a_mapping_that_expires_in_flight_drops_the_datagram_on_arrival():
    async def main():
        loop = asyncio.get_running_loop()
        net = SimNetwork(random.Random(1), latency=0.010, jitter=0.0)
        eps, _ = await servers(net)
        nat = net.add_nat(NAT_IP, mapping=EIM, filtering=EIF, mapping_timeout=30.0)
        got = Recorder()
        ep = await nat.add_host(PRIVATE).bind(("0.0.0.0", 5000), got)
        ep.send(b"out", (S1, 1))  # mapping until 30.0
        await asyncio.sleep(29.995 - loop.time())
        eps[S1, 1].send(b"sent while alive, lands at 30.005", (NAT_IP, 5000))
        await asyncio.sleep(1)
        return got.items, nat.stats

    items, stats = run_virtual(main())
    assert items == [] and stats.dropped_no_mapping == 1
