"""An observed address is announced once confirmed (issue 8, section 5): by a dial-back
that reached it, or by peers at two IPs that saw the same address. One peer's word is a
claim: a port-restricted node's mapping is announced only after a second public peer
saw it, and a symmetric NAT's per-peer mappings never are."""

from __future__ import annotations

import random

import pytest

from simulations.network import SimNetwork
from simulations.vtime import current_clock, run_virtual
from stack.base.identity import Identity
from stack.node import DialbackResult, Node, NodeConfig
from stack.store.stores import Stores

PORT = 39001


@pytest.mark.parametrize("kind, after_one, after_two", [
    ("full-cone", True, True),              # the dial-back reached it
    ("port-restricted-cone", False, True),  # two observers agree (EIM mapping)
    ("symmetric", False, False),            # each observer saw another port
])
def test_observed_address_is_announced_once_confirmed(tmp_path, kind, after_one, after_two):
    async def main():
        rng = random.Random(5)
        net = SimNetwork(rng, latency=0.01, jitter=0.001)
        clock = current_clock()
        nodes = []

        async def node(host, ip, **kw):
            n = Node(NodeConfig(data_dir=tmp_path / ip, listen=(ip, PORT), tls=False,
                                dht=False, identity=Identity.from_rng(rng),
                                dial_back_timeout=2.0, stores=Stores.memory(), **kw),
                     network=host, clock=clock)
            nodes.append(n)
            await n.start()
            return n

        try:
            p1 = await node(net.add_host("198.51.100.1"), "198.51.100.1")
            p2 = await node(net.add_host("198.51.100.2"), "198.51.100.2")
            host = net.add_nat_kind("203.0.113.1", kind).add_host("10.0.0.2")
            nated = await node(host, "10.0.0.2")
            seen = []
            for public in (p1, p2):
                verdict = nated.next_event(DialbackResult, role="dialer",
                                           peer_id=public.peer_id, timeout=30)
                await nated.connect(f"{public.udp_address[0]}:{PORT}")
                await verdict
                seen.append(nated.observed_address is not None)
            return seen, nated.observed_address, nated.announced_addrs()
        finally:
            for n in nodes:
                await n.stop(0)

    seen, observed, announced = run_virtual(main())
    assert seen == [after_one, after_two]
    if after_two:
        assert observed[0] == "203.0.113.1"
        assert announced[0] == f"/ip4/203.0.113.1/udp/{observed[1]}/quic-v1"
    else:
        assert all("203.0.113.1" not in a for a in announced)
