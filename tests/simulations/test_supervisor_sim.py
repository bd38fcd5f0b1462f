"""A background service that fails is restarted (issue 8, section 3), on virtual time.

Before the supervisor, one ``DhtTimeout`` from the first publish ended the announcement
publisher (and with it the address watch) for good: a node whose only DHT peer was
down for a moment was never published, however long it ran (reproduced here: no
``AnnouncementPublished`` in a simulated hour, no live task).
"""

from __future__ import annotations

import asyncio
import random

from simulations.network import SimNetwork
from simulations.vtime import current_clock, run_virtual
from stack.base.identity import Identity
from stack.node import AnnouncementPublished, Node, NodeConfig, ServiceFailed
from stack.store.stores import Stores

PORT = 39001
A, B = "198.51.100.1", "198.51.100.2"


def test_publisher_survives_a_dht_timeout_and_publishes_once_the_network_is_back(tmp_path):
    async def main():
        rng = random.Random(7)
        net = SimNetwork(rng, latency=0.005, jitter=0.001)
        clock = current_clock()
        a_host, b_host = net.add_host(A), net.add_host(B)
        a = Node(NodeConfig(data_dir=tmp_path / "a", listen=(A, PORT), tls=False,
                            identity=Identity.from_rng(rng), rng_seed=1, stores=Stores.memory()),
                 network=a_host, clock=clock)
        b = Node(NodeConfig(data_dir=tmp_path / "b", listen=(B, PORT), tls=False,
                            identity=Identity.from_rng(rng), rng_seed=2,
                            bootstrap=(f"{A}:{PORT}",), dht_server=True,
                            stores=Stores.memory()),
                 network=b_host, clock=clock)
        try:
            await a.start()
            await a.join(timeout=5)
            await b.start()
            failed = b.next_event(ServiceFailed, service="dht.publisher", timeout=60)
            published = b.next_event(AnnouncementPublished, timeout=3600)
            # B's operation timeout (0.1 s) is shorter than an RPC timeout (0.2 s at
            # least): with A gone right after the bootstrap, B's first publish times out.
            await b.join(timeout=0.1)
            a_host.crash()
            event = await failed
            assert event.error.startswith("DhtTimeout") and event.failures == 1
            assert "dht.publisher" in b.supervisor.services  # restarting, not dead

            await asyncio.sleep(600)  # ten minutes of outage (virtual)
            a_host.restart()
            result = await published
            assert result.stored == 1
            assert b.supervisor.restarts["dht.publisher"] >= 1
        finally:
            await asyncio.gather(b.stop(0.1), a.stop(0.1), return_exceptions=True)
    run_virtual(main())
