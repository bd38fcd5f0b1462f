"""Unchanged asyncio datagram code on the simulated network."""

import asyncio
import random

import pytest

from simulations.aio import use_host
from simulations.errors import SimulationError
from simulations.network import SimNetwork
from simulations.vtime import run_virtual

A, B = "203.0.113.1", "203.0.113.2"


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data.upper(), addr)


class Client(asyncio.DatagramProtocol):
    def __init__(self):
        self.replies = asyncio.Queue()
        self.lost = asyncio.Event()

    def datagram_received(self, data, addr):
        self.replies.put_nowait((data, addr))

    def connection_lost(self, exc):
        self.lost.set()


def test_a_plain_datagram_protocol_echo_runs_on_the_simulated_network():
    async def main():
        loop = asyncio.get_running_loop()
        net = SimNetwork(random.Random(1), latency=0.02, jitter=0.0)
        net.add_host(A)
        client_host = net.add_host(B)
        server_t, _ = await loop.create_datagram_endpoint(Echo, local_addr=(A, 7))
        with use_host(client_host):
            client_t, client = await loop.create_datagram_endpoint(
                Client, local_addr=("0.0.0.0", 0))
        assert server_t.get_extra_info("sockname") == (A, 7)
        assert client_t.get_extra_info("sockname") == (B, 49152)
        assert client_t.get_extra_info("peername") is None
        client_t.sendto(b"ping", (A, 7))
        reply = await asyncio.wait_for(client.replies.get(), 1)
        rtt = loop.time()
        client_t.close()
        assert client_t.is_closing()
        await asyncio.wait_for(client.lost.wait(), 1)
        client_t.sendto(b"after close", (A, 7))  # ignored, like a closed socket
        server_t.close()
        return reply, rtt, net.stats

    reply, rtt, stats = run_virtual(main())
    assert reply == (b"PING", (A, 7))
    assert rtt == pytest.approx(0.04)
    assert stats.sent == 2 and stats.delivered == 2


def test_use_host_is_inherited_by_tasks_created_inside():
    async def main():
        loop = asyncio.get_running_loop()
        net = SimNetwork(random.Random(1))
        host = net.add_host(A)

        async def bind_later():
            await asyncio.sleep(1)
            transport, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=("0.0.0.0", 9))
            return transport.get_extra_info("sockname")

        with use_host(host):
            task = asyncio.create_task(bind_later())
        return await task

    assert run_virtual(main()) == (A, 9)


def test_create_datagram_endpoint_errors():
    async def main():
        loop = asyncio.get_running_loop()
        with pytest.raises(SimulationError, match="no SimNetwork"):
            await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                local_addr=(A, 1))
        net = SimNetwork(random.Random(1))  # registers itself with the running loop
        assert loop.network is net
        net.add_host(A)
        with pytest.raises(SimulationError, match="use_host"):
            await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                local_addr=("0.0.0.0", 1))
        with pytest.raises(SimulationError, match="not simulated"):
            await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                remote_addr=(A, 1))
        with pytest.raises(SimulationError, match="unsupported"):
            await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                local_addr=(A, 1), reuse_address=True)
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=(A, 1), reuse_port=True)
        with pytest.raises(SimulationError, match="needs an address"):
            transport.sendto(b"x")

    run_virtual(main())


def test_network_given_to_run_virtual_serves_create_datagram_endpoint():
    net = SimNetwork(random.Random(1))
    net.add_host(A)

    async def main():
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                           local_addr=(A, 5))
        return transport.get_extra_info("sockname")

    assert run_virtual(main(), network=net) == (A, 5)


def test_the_kademlia_package_runs_unchanged_behind_nats():
    kademlia = pytest.importorskip("kademlia.network")

    async def main():
        net = SimNetwork(random.Random(11))
        loop = asyncio.get_running_loop()
        nodes = []
        for i in range(12):
            if i % 3 == 2:  # some nodes behind full-cone NATs (kademlia cannot punch)
                host = net.add_nat_kind(f"198.51.100.{i}", "full-cone").add_host("10.0.0.2")
            else:
                host = net.add_host(f"203.0.113.{i + 1}")
            server = kademlia.Server()
            with use_host(host):
                await server.listen(8468)
            nodes.append(server)
        for server in nodes[1:]:
            await server.bootstrap([("203.0.113.1", 8468)])
        await nodes[4].set("key", "value")
        got = await nodes[8].get("key")
        # an idle simulated day: kademlia's hourly refreshes run, at no wall cost
        await asyncio.sleep(86400)
        got_later = await nodes[10].get("key")
        for server in nodes:
            server.stop()
        return got, got_later, loop.time(), net.stats

    got, got_later, t, stats = run_virtual(main())
    assert got == "value" and got_later == "value"
    assert t > 86400 and stats.delivered > 100
