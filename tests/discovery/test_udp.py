"""Real sockets: 50 DHT nodes on 127.0.0.1; every node resolves every other one."""

import asyncio
import random

import pytest

from discovery.announcements import AnnouncementValidator
from discovery.driver import open_dht
from stack.base.clock import SystemClock
from stack.base.identity import Identity
from stack.base.net import UdpNetwork
from stack.base.records import sign_announcement

pytestmark = pytest.mark.timeout(60)


async def test_fifty_nodes_on_loopback_resolve_each_other():
    rng = random.Random(50)
    clock = SystemClock()
    net = UdpNetwork()
    validator = AnnouncementValidator()
    ids = [Identity.from_rng(rng) for _ in range(50)]
    nodes = [await open_dht(net, ("127.0.0.1", 0), i, validator, clock,
                            random.Random(rng.random())) for i in ids]
    try:
        seed_addr = nodes[0].endpoint.local_address
        await asyncio.gather(*(n.bootstrap([seed_addr], timeout=10) for n in nodes[1:]))
        records = []
        for ident, node in zip(ids, nodes, strict=True):
            port = node.endpoint.local_address[1]
            records.append(sign_announcement(ident, 1, [f"/ip4/127.0.0.1/udp/{port}/quic-v1"],
                                             clock.now()))
        stored = await asyncio.gather(*(n.publish(r, timeout=10)
                                        for n, r in zip(nodes, records, strict=True)))
        assert min(stored) >= 20

        async def resolve_all(i):
            got = await asyncio.gather(*(nodes[i].resolve(ids[j].peer_id, timeout=10)
                                         for j in range(50) if j != i))
            return got == [records[j] for j in range(50) if j != i]

        assert all(await asyncio.gather(*(resolve_all(i) for i in range(50))))
    finally:
        for n in nodes:
            n.close()
            n.endpoint.close()
