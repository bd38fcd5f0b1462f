"""The simulated network: delivery, batching, determinism, latency/jitter/loss, crashes."""

import asyncio
import random
import statistics

import pytest

from simulations.errors import SimulationError, TimeLimitError
from simulations.network import SimNetwork
from simulations.vtime import run_virtual

A, B, C = "203.0.113.1", "203.0.113.2", "203.0.113.3"


class Inbox:
    """A receiver that records (virtual time, data, source) and wakes waiters."""

    def __init__(self):
        self.items = []
        self.batches = []
        self._changed = asyncio.Event()

    def __call__(self, batch):
        loop = asyncio.get_running_loop()
        self.batches.append(len(batch))
        for data, addr in batch:
            self.items.append((loop.time(), data, addr))
        self._changed.set()

    async def wait_for(self, count, timeout=60.0):
        async def until():
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(until(), timeout)
        return self.items


def test_a_datagram_arrives_after_the_latency_with_its_source():
    async def main():
        net = SimNetwork(random.Random(1), latency=0.025, jitter=0.0)
        a, b = net.add_host(A), net.add_host(B)
        inbox = Inbox()
        ea = await a.bind(("0.0.0.0", 1000), lambda batch: None)
        eb = await b.bind((B, 2000), inbox)
        assert ea.local_address == (A, 1000)
        ea.send(b"hello", (B, 2000))
        items = await inbox.wait_for(1)
        return items, net.stats, ea.stats, eb.stats

    items, stats, sa, sb = run_virtual(main())
    assert items == [(0.025, b"hello", (A, 1000))]
    assert (stats.sent, stats.delivered) == (1, 1)
    assert (sa.sent, sb.received) == (1, 1)


def test_same_instant_arrivals_come_in_one_batch():
    async def main():
        net = SimNetwork(random.Random(1), jitter=0.0)
        a, b = net.add_host(A), net.add_host(B)
        inbox = Inbox()
        ea = await a.bind((A, 0), lambda batch: None)
        await b.bind((B, 9), inbox)
        for i in range(20):
            ea.send(b"%d" % i, (B, 9))
        await inbox.wait_for(20)
        return inbox

    inbox = run_virtual(main())
    assert inbox.batches == [20]
    assert [d for _, d, _ in inbox.items] == [b"%d" % i for i in range(20)]


def trace_of(seed, jitter=0.004, loss=0.2, ticker=False):
    """Hosts (some behind NATs) exchange requests and answers; return the delivery trace.

    ``ticker``: a task wakes every 0.1 ms, so the network cannot fast-forward from one
    datagram to the next and every landing goes through a loop timer.
    """
    async def main():
        if ticker:
            async def tick():
                while True:
                    await asyncio.sleep(0.0001)
            ticking = asyncio.create_task(tick())
        rng = random.Random(seed)
        net = SimNetwork(rng, latency=0.01, jitter=jitter, loss=loss)
        trace = []
        endpoints = []
        public = []
        for i in range(20):
            if i % 4 == 3:  # symmetric NATs: their random ports come from the rng too
                site = net.add_nat_kind(f"198.51.100.{i + 1}", "symmetric")
                host = site.add_host("10.0.0.2")
            else:
                host = net.add_host(f"198.51.100.{i + 1}")

            def receiver(batch, i=i):
                t = asyncio.get_running_loop().time()
                for data, addr in batch:
                    trace.append((t, i, data, addr))
                    if data.startswith(b"m"):
                        endpoints[i].send(b"r" + data, addr)

            endpoints.append(await host.bind(("0.0.0.0", 7000), receiver))
            if host.nat is None:
                public.append(endpoints[-1].local_address)
        pick = random.Random(seed + 1000)  # the workload, separate from the network rng
        for step in range(500):
            src = endpoints[pick.randrange(20)]
            src.send(b"m%d" % step, public[pick.randrange(len(public))])
            if step % 50 == 0:
                await asyncio.sleep(0.003)
        await asyncio.sleep(1)
        if ticker:
            ticking.cancel()
        return trace

    return run_virtual(main())


def test_same_seed_reproduces_the_delivery_trace_exactly():
    first, second = trace_of(7), trace_of(7)
    assert first == second
    # requests and answers, loss took its share; NATed hosts got answers on mapped ports
    assert 500 < len(first) < 800
    assert any(i % 4 == 3 and data.startswith(b"r") for _, i, data, _ in first)
    assert any(ip == "198.51.100.4" and port != 7000 for _, _, _, (ip, port) in first)


def test_fast_forwarding_between_datagrams_changes_nothing():
    """Landing datagram after datagram without loop timers gives the timer-per-datagram
    trace. (Times to the nanosecond: asyncio runs a timer up to its clock resolution
    early, so the ticker's timers can shift a wake-up by a rounding error.)"""
    def rounded(trace):
        return [(round(t, 9), *rest) for t, *rest in trace]

    assert rounded(trace_of(9)) == rounded(trace_of(9, ticker=True))


def test_endless_ping_pong_stops_at_max_time():
    async def main():
        net = SimNetwork(random.Random(1))
        a, b = net.add_host(A), net.add_host(B)
        endpoints = {}

        def bounce(batch, name):
            for data, addr in batch:
                endpoints[name].send(data, addr)

        endpoints["a"] = await a.bind((A, 1), lambda batch: bounce(batch, "a"))
        endpoints["b"] = await b.bind((B, 1), lambda batch: bounce(batch, "b"))
        endpoints["a"].send(b"ball", (B, 1))
        await asyncio.Event().wait()

    with pytest.raises(TimeLimitError):
        run_virtual(main(), max_time=60)


def test_a_different_seed_gives_a_different_trace():
    assert trace_of(7) != trace_of(8)


def test_latency_and_jitter_statistics():
    async def main():
        net = SimNetwork(random.Random(3), latency=0.050, jitter=0.010)
        a, b = net.add_host(A), net.add_host(B)
        inbox = Inbox()
        ea = await a.bind((A, 1), lambda batch: None)
        await b.bind((B, 2), inbox)
        loop = asyncio.get_running_loop()
        sent_at = {}
        for i in range(2000):
            sent_at[b"%d" % i] = loop.time()
            ea.send(b"%d" % i, (B, 2))
            await asyncio.sleep(0.001)
        await inbox.wait_for(2000)
        return [t - sent_at[d] for t, d, _ in inbox.items]

    delays = run_virtual(main())
    assert min(delays) >= 0.040 - 1e-9 and max(delays) <= 0.060 + 1e-9
    assert statistics.mean(delays) == pytest.approx(0.050, abs=0.001)
    # uniform on +-10 ms: standard deviation 10/sqrt(3) ms
    assert statistics.pstdev(delays) == pytest.approx(0.010 / 3 ** 0.5, rel=0.1)


def test_loss_rate_and_changing_it_mid_run():
    async def main():
        net = SimNetwork(random.Random(4), loss=0.3)
        a, b = net.add_host(A), net.add_host(B)
        inbox = Inbox()
        ea = await a.bind((A, 1), lambda batch: None)
        await b.bind((B, 2), inbox)
        for _ in range(5000):
            ea.send(b"x", (B, 2))
        await asyncio.sleep(1)
        first = len(inbox.items)
        net.loss = 0.0
        for _ in range(1000):
            ea.send(b"y", (B, 2))
        await asyncio.sleep(1)
        return first, len(inbox.items) - first, net.stats

    first, second, stats = run_virtual(main())
    assert first / 5000 == pytest.approx(0.7, abs=0.03)
    assert second == 1000
    assert stats.dropped_loss == 5000 - first
    assert stats.sent == 6000 and stats.delivered == first + second


def test_per_link_overrides_apply_both_ways_and_fall_back_to_defaults():
    async def main():
        net = SimNetwork(random.Random(5), latency=0.010, jitter=0.0)
        a, b, c = net.add_host(A), net.add_host(B), net.add_host(C)
        net.set_link(B, A, latency=0.200)
        net.set_link(A, C, loss=1.0)
        inboxes = [Inbox(), Inbox(), Inbox()]
        ea = await a.bind((A, 1), inboxes[0])
        eb = await b.bind((B, 1), inboxes[1])
        await c.bind((C, 1), inboxes[2])
        ea.send(b"a->b", (B, 1))
        eb.send(b"b->a", (A, 1))
        ea.send(b"a->c", (C, 1))
        eb.send(b"b->c", (C, 1))
        await asyncio.sleep(1)
        return [box.items for box in inboxes], net.stats

    (at_a, at_b, at_c), stats = run_virtual(main())
    assert at_a == [(0.2, b"b->a", (B, 1))]
    assert at_b == [(0.2, b"a->b", (A, 1))]
    assert at_c == [(0.01, b"b->c", (B, 1))]
    assert stats.dropped_loss == 1


def test_crashed_hosts_drop_everything_until_restarted():
    async def main():
        net = SimNetwork(random.Random(6), jitter=0.0)
        a, b = net.add_host(A), net.add_host(B)
        at_a, at_b = Inbox(), Inbox()
        ea = await a.bind((A, 1), at_a)
        eb = await b.bind((B, 1), at_b)
        b.crash()
        ea.send(b"to crashed", (B, 1))
        eb.send(b"from crashed", (A, 1))
        await asyncio.sleep(1)
        assert net.stats.dropped_crashed == 2
        ea.send(b"in flight", (B, 1))
        await asyncio.sleep(0.005)
        b.restart()  # restarted before the datagram lands: it is delivered
        await at_b.wait_for(1)
        a.crash()
        eb.send(b"lands on a crashed host", (A, 1))
        await asyncio.sleep(1)
        a.restart()
        eb.send(b"back", (A, 1))
        await at_a.wait_for(1)
        return at_a.items, at_b.items, net.stats

    at_a, at_b, stats = run_virtual(main())
    assert [d for _, d, _ in at_b] == [b"in flight"]
    assert [d for _, d, _ in at_a] == [b"back"]
    assert stats.dropped_crashed == 3


def test_unroutable_and_closed_ports_are_counted():
    async def main():
        net = SimNetwork(random.Random(7))
        a, b = net.add_host(A), net.add_host(B)
        ea = await a.bind((A, 1), lambda batch: None)
        eb = await b.bind((B, 1), lambda batch: None)
        ea.send(b"nobody", ("192.0.2.99", 1))
        ea.send(b"no port", (B, 2))
        eb.close()
        eb.close()  # idempotent
        ea.send(b"closed", (B, 1))
        eb.send(b"after close", (A, 1))  # a closed endpoint sends nothing
        await asyncio.sleep(1)
        return net.stats

    stats = run_virtual(main())
    assert stats.sent == 3
    assert stats.dropped_unroutable == 1 and stats.dropped_no_port == 2
    assert stats.delivered == 0


def test_bind_errors_and_ephemeral_ports():
    async def main():
        net = SimNetwork(random.Random(8))
        a = net.add_host(A)
        first = await a.bind(("0.0.0.0", 0), lambda batch: None)
        second = await a.bind((A, 0), lambda batch: None)
        assert first.local_address == (A, 49152) and second.local_address == (A, 49153)
        await a.bind((A, 5000), lambda batch: None)
        with pytest.raises(SimulationError, match="address in use"):
            await a.bind(("0.0.0.0", 5000), lambda batch: None)
        with pytest.raises(SimulationError, match="not an address"):
            await a.bind((B, 1), lambda batch: None)
        with pytest.raises(SimulationError, match="out of range"):
            await a.bind((A, 70000), lambda batch: None)
        first.close()
        again = await a.bind((A, 49152), lambda batch: None)  # a closed port is free
        assert again.local_address == (A, 49152)

    run_virtual(main())


def test_topology_errors():
    net = SimNetwork(random.Random(9))
    net.add_host(A)
    with pytest.raises(SimulationError, match="already on the network"):
        net.add_host(A)
    with pytest.raises(SimulationError, match="already on the network"):
        net.add_nat(A)
    with pytest.raises(SimulationError, match="duplicate"):
        net.add_host(B, extra_ips=[B])
    with pytest.raises(SimulationError, match="no host has address"):
        net.host_at("192.0.2.1")


def test_a_multi_address_host_serves_on_each_address_and_port():
    """The shape an RFC 5780 STUN server needs: two addresses, two ports each."""
    async def main():
        net = SimNetwork(random.Random(10), jitter=0.0)
        server = net.add_host(A, extra_ips=[B])
        assert net.host_at(B) is server
        client = net.add_host(C)
        got = Inbox()
        endpoints = {}
        for ip in (A, B):
            for port in (3478, 3479):
                endpoints[ip, port] = await server.bind((ip, port), got)
        with pytest.raises(SimulationError, match="address in use"):
            await server.bind(("0.0.0.0", 3478), got)
        wildcard = await server.bind(("0.0.0.0", 4000), got)
        assert wildcard.local_address == ("0.0.0.0", 4000)
        reply = Inbox()
        ec = await client.bind((C, 1), reply)
        for addr in [*endpoints, (A, 4000), (B, 4000)]:
            ec.send(b"to %s:%d" % (addr[0].encode(), addr[1]), addr)
        await got.wait_for(6)
        # the server answers from its other address: the source the client sees changes
        endpoints[B, 3479].send(b"from B", (C, 1))
        wildcard.send(b"from wildcard", (C, 1))  # leaves from the primary address
        await reply.wait_for(2)
        return got.items, reply.items

    got, reply = run_virtual(main())
    assert len(got) == 6 and {a for _, _, a in got} == {(C, 1)}
    assert sorted((d, a) for _, d, a in reply) == [(b"from B", (B, 3479)),
                                                   (b"from wildcard", (A, 4000))]


def test_a_receiver_that_raises_is_reported_and_delivery_goes_on():
    async def main():
        loop = asyncio.get_running_loop()
        reported = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        net = SimNetwork(random.Random(11), jitter=0.0)
        a, b, c = net.add_host(A), net.add_host(B), net.add_host(C)

        def broken(batch):
            raise RuntimeError("receiver bug")

        ea = await a.bind((A, 1), lambda batch: None)
        await b.bind((B, 1), broken)
        inbox = Inbox()
        await c.bind((C, 1), inbox)
        ea.send(b"to broken", (B, 1))
        ea.send(b"to c", (C, 1))  # same instant, after the broken one
        await inbox.wait_for(1)
        ea.send(b"later", (C, 1))
        await inbox.wait_for(2)
        return reported, [d for _, d, _ in inbox.items]

    reported, got = run_virtual(main())
    assert got == [b"to c", b"later"]
    assert len(reported) == 1 and isinstance(reported[0]["exception"], RuntimeError)
    assert "203.0.113.2" in reported[0]["message"]


async def test_the_network_also_runs_on_a_plain_asyncio_loop():
    """Small real-time tests may use the simulator on pytest's own loop."""
    net = SimNetwork(random.Random(12), latency=0.002, jitter=0.001)
    a, b = net.add_host(A), net.add_host(B)
    inbox = Inbox()
    ea = await a.bind((A, 1), lambda batch: None)
    await b.bind((B, 1), inbox)
    for i in range(10):
        ea.send(b"%d" % i, (B, 1))
    items = await inbox.wait_for(10, timeout=5)
    assert sorted(d for _, d, _ in items) == sorted(b"%d" % i for i in range(10))


def test_ten_thousand_hosts_half_behind_nats_exchange_datagrams():
    """Scale smoke check (timing lives in benchmarks/simnet.py, not here)."""
    async def main():
        net = SimNetwork(random.Random(13))
        endpoints = []
        for i in range(10_000):
            ip = f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}"
            if i % 2:
                host = net.add_nat_kind(ip, "symmetric").add_host("192.168.0.2")
            else:
                host = net.add_host(ip)
            endpoints.append(await host.bind(("0.0.0.0", 4000), lambda batch: None))
        public = [ep.local_address for ep in endpoints[::2]]
        for i, ep in enumerate(endpoints):
            ep.send(b"hello", public[i % len(public)])
            ep.send(b"hello", public[(i * 7) % len(public)])
        await asyncio.sleep(1)
        return net.stats

    stats = run_virtual(main())
    assert stats.sent == stats.delivered == 20_000


def test_sent_buffers_are_copied_and_list_addresses_accepted():
    async def main():
        net = SimNetwork(random.Random(14))
        a, b = net.add_host(A), net.add_host(B)
        inbox = Inbox()
        ea = await a.bind((A, 1), lambda batch: None)
        await b.bind((B, 1), inbox)
        buffer = bytearray(b"first")
        ea.send(buffer, [B, 1])
        buffer[:] = b"reused"
        return await inbox.wait_for(1)

    [(_, data, _)] = run_virtual(main())
    assert data == b"first" and type(data) is bytes


def test_the_trace_does_not_depend_on_string_hash_randomisation():
    """Same seed in two processes with different PYTHONHASHSEED: the same trace."""
    import hashlib
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import hashlib, sys; sys.path.insert(0, sys.argv[1]); "
            "from test_simnet import trace_of; "
            "print(hashlib.sha256(repr(trace_of(21)).encode()).hexdigest())")
    here = str(Path(__file__).parent)
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code, here], env=env, check=True,
                             capture_output=True, text=True, timeout=60).stdout.strip()
        digests.add(out)
    assert digests == {hashlib.sha256(repr(trace_of(21)).encode()).hexdigest()}


def test_a_partition_drops_between_sides_until_healed():
    async def main():
        net = SimNetwork(random.Random(1), jitter=0.0)
        a, b, c = net.add_host(A), net.add_host(B), net.add_host(C)
        inbox_b, inbox_c = Inbox(), Inbox()
        ea = await a.bind((A, 1), lambda batch: None)
        await b.bind((B, 1), inbox_b)
        await c.bind((C, 1), inbox_c)
        net.partition({C: 1, A: 0})  # C alone on side 1; A and B (not named) on side 0
        ea.send(b"to b", (B, 1))
        ea.send(b"to c", (C, 1))
        await asyncio.sleep(1)
        cut = net.stats.dropped_partition
        net.heal()
        ea.send(b"to c again", (C, 1))
        await inbox_c.wait_for(1)
        return [d for _, d, _ in inbox_b.items], [d for _, d, _ in inbox_c.items], cut, net.stats

    to_b, to_c, cut, stats = run_virtual(main())
    assert to_b == [b"to b"] and to_c == [b"to c again"]
    assert cut == 1 and stats.dropped_partition == 1 and stats.delivered == 2


# ------------------------------------------------------------- address changes (issue 10)

def test_change_ip_moves_wildcard_endpoints_and_orphans_bound_ones():
    async def main():
        net = SimNetwork(random.Random(1), latency=0.01, jitter=0.0)
        a = net.add_host("198.51.100.1")
        b = net.add_host("198.51.100.2")
        got: list = []
        wild = await a.bind(("0.0.0.0", 5000), got.extend)
        pinned = await a.bind(("198.51.100.1", 5001), got.extend)
        peer_got: list = []
        peer = await b.bind(("198.51.100.2", 6000), peer_got.extend)
        a.change_ip("203.0.113.9")
        assert a.local_ips() == ["203.0.113.9"] and a.ip == "203.0.113.9"
        assert wild.local_address == ("203.0.113.9", 5000)
        assert net.host_at("203.0.113.9") is a
        wild.send(b"x", ("198.51.100.2", 6000))
        pinned.send(b"y", ("198.51.100.2", 6000))
        assert pinned.stats.send_errors == 1
        peer.send(b"to-old", ("198.51.100.1", 5000))
        peer.send(b"to-new", ("203.0.113.9", 5000))
        await asyncio.sleep(0.05)
        assert peer_got == [(b"x", ("203.0.113.9", 5000))]
        assert got == [(b"to-new", ("198.51.100.2", 6000))]
        assert net.stats.dropped_unroutable == 1
        with pytest.raises(SimulationError):
            b.change_ip("203.0.113.9")  # taken
    run_virtual(main())


def test_switch_network_moves_a_host_from_behind_one_nat_to_another_and_to_public():
    """Wi-Fi to 4G: the host leaves NAT A's network for NAT B's (new mapping, new
    segment), then for a public address; what NAT A knew no longer reaches it."""
    async def main():
        net = SimNetwork(random.Random(2), latency=0.01, jitter=0.0)
        server = net.add_host("198.51.100.2")
        seen: list = []
        srv = await server.bind(("198.51.100.2", 6000), seen.extend)
        nat_a = net.add_nat("203.0.113.1", filtering="endpoint-independent")
        nat_b = net.add_nat("203.0.113.2", filtering="endpoint-independent")
        host = nat_a.add_host("10.0.0.2")
        got: list = []
        ep = await host.bind(("0.0.0.0", 5000), got.extend)
        ep.send(b"from a", ("198.51.100.2", 6000))
        await asyncio.sleep(0.05)
        host.switch_network("192.168.1.7", nat_b)
        assert host.nat is nat_b and host.local_ips() == ["192.168.1.7"]
        assert net.segment_hosts(host) == [host]
        ep.send(b"from b", ("198.51.100.2", 6000))
        await asyncio.sleep(0.05)
        assert [(d, a[0]) for d, a in seen] == [(b"from a", "203.0.113.1"),
                                                (b"from b", "203.0.113.2")]
        srv.send(b"to old mapping", seen[0][1])
        srv.send(b"to new mapping", seen[1][1])
        await asyncio.sleep(0.05)
        assert [d for d, _ in got] == [b"to new mapping"]
        host.switch_network("198.51.100.9")
        assert host.nat is None and net.host_at("198.51.100.9") is host
        assert net.segment_hosts(host) == []
        with pytest.raises(SimulationError):
            host.switch_network("198.51.100.2")  # taken: nothing changes
        assert host.ip == "198.51.100.9"
    run_virtual(main())
