"""The asyncio driver on virtual time: its named errors and the refresh hook."""

import asyncio
import random

import pytest

from discovery.announcements import AnnouncementValidator, announcement_of
from discovery.core import DhtConfig
from discovery.driver import open_dht
from discovery.errors import (BootstrapFailed, DhtTimeout, InvalidRecord, PublishFailed,
                              RecordNotFound)
from simulations.network import SimNetwork
from simulations.vtime import current_clock, run_virtual
from stack.base.identity import Identity
from stack.base.records import sign_announcement


async def _nodes(n, config=DhtConfig()):
    rng = random.Random(n)
    net = SimNetwork(random.Random(1))
    clock = current_clock()
    ids = [Identity.from_rng(rng) for _ in range(n)]
    drivers = []
    for i, ident in enumerate(ids):
        ip = f"10.0.0.{i + 1}"
        drivers.append(await open_dht(net.add_host(ip), (ip, 4001), ident,
                                      AnnouncementValidator(), clock,
                                      random.Random(i), config))
    return net, clock, ids, drivers


def test_named_errors():
    async def main():
        net, clock, ids, (_a, b, c) = await _nodes(3)
        with pytest.raises(BootstrapFailed):
            await b.bootstrap([("10.9.9.9", 4001)], timeout=60)
        with pytest.raises(PublishFailed):       # nobody to store on
            await b.publish(sign_announcement(ids[1], 1, [], clock.now()))
        with pytest.raises(InvalidRecord):
            await b.publish(b"garbage")
        assert await b.bootstrap([("10.0.0.1", 4001)]) == 1
        await c.bootstrap([("10.0.0.1", 4001)])
        with pytest.raises(RecordNotFound):
            await c.resolve(ids[0].peer_id)
        record = sign_announcement(ids[1], 1, ["/ip4/10.0.0.2/udp/4001/quic-v1"], clock.now())
        assert await b.publish(record) == 2
        assert await c.resolve(ids[1].peer_id) == record
        assert await c.resolve(ids[1].peer_id.multihash) == record
        peers = await c.lookup(ids[0].peer_id.dht_key)
        assert peers[0].peer_id == ids[0].peer_id.multihash
        net.host_at("10.0.0.1").crash()
        net.host_at("10.0.0.2").crash()
        with pytest.raises(DhtTimeout):                # faster than one RPC timeout
            await c.resolve(ids[0].peer_id, timeout=0.05)
        with pytest.raises(RecordNotFound):            # every RPC timed out
            await c.resolve(ids[0].peer_id, timeout=30)
    run_virtual(main())


def test_record_source_is_asked_for_a_fresh_record_when_ours_ages():
    async def main():
        config = DhtConfig(republish_interval=3600.0)
        _net, clock, ids, drivers = await _nodes(4, config)
        for d in drivers[1:]:
            await d.bootstrap([("10.0.0.1", 4001)])
        seqs = iter(range(2, 100))
        drivers[1].set_record_source(
            lambda: sign_announcement(ids[1], next(seqs), [], clock.now()))
        await drivers[1].publish(sign_announcement(ids[1], 1, [], clock.now()))
        await asyncio.sleep(14 * 3600)   # past half of the 24 h window
        record = await drivers[2].resolve(ids[1].peer_id)
        assert announcement_of(record).seq >= 2
    run_virtual(main())
