"""Records survive churn in the sans-I/O core (issue 11 section 5): the join handoff,
the publisher's replica probe and re-put, and the publisher's own copy.

Small networks of ``DhtCore``s on ``CoreNet`` (virtual time, no sockets). A node
"restarts" as a new core with the same identity at the same address: an empty store
and table, as after a crash and a rejoin.
"""

import random

from discovery.announcements import AnnouncementValidator
from discovery.core import DhtConfig, DhtCore
from discovery.events import BootstrapDone, PutDone
from discovery.records import dht_key_of

from dht_corenet import CoreNet
from dht_helpers import announcement, identities

K4 = DhtConfig(k=4)


def _network(seed, count, config):
    rng = random.Random(seed)
    net = CoreNet(rng)
    ids = identities(rng, count)
    validator = AnnouncementValidator()
    nodes = [net.add(i, validator, config) for i in ids]
    for core, addr in nodes[1:]:
        op = core.bootstrap([nodes[0][1]], net.now)
        net.kick(addr)
        assert isinstance(net.wait(addr, op), BootstrapDone)
    net.run_for(5)
    return rng, net, ids, nodes, validator


def _publish(net, rng, identity, core, addr, seq=1):
    record = announcement(identity, seq, net.now, rng)
    op = core.publish(record, net.now)
    net.kick(addr)
    done = net.wait(addr, op)
    assert isinstance(done, PutDone) and done.error is None
    return record, dht_key_of(identity.peer_id.multihash)


def _holders(nodes, key, net):
    return [addr for core, addr in nodes if core.store.get(key, net.now)]


def _restart(net, nodes, index, identity, validator, config):
    """A new process at the same address with the same identity: nothing kept."""
    _old, addr = nodes[index]
    core = DhtCore(identity, validator, random.Random(index), config)
    net.cores[addr] = core
    nodes[index] = (core, addr)
    op = core.bootstrap([nodes[0][1]], net.now)
    net.kick(addr)
    assert isinstance(net.wait(addr, op), BootstrapDone)
    net.run_for(5)
    return core


def _closest(nodes, key, k):
    key_id = int.from_bytes(key, "big")
    return sorted(nodes, key=lambda n: n[0].table.own_id ^ key_id)[:k]


def test_the_publisher_keeps_its_own_record_once_put():
    rng, net, ids, nodes, _ = _network(1, 6, DhtConfig())
    core, addr = nodes[2]
    record, key = _publish(net, rng, ids[2], core, addr)
    assert core.store.get(key, net.now) == record


def test_a_joiner_close_to_a_key_is_handed_the_record():
    rng, net, ids, nodes, validator = _network(2, 16, K4)
    core, addr = nodes[3]
    record, key = _publish(net, rng, ids[3], core, addr)
    # a fresh identity joins; if it is among the key's 4 closest it must end up with it
    newcomers = identities(rng, 12)
    handed = 0
    for identity in newcomers:
        nodes.append(net.add(identity, validator, K4))
        new_core, new_addr = nodes[-1]
        op = new_core.bootstrap([nodes[0][1]], net.now)
        net.kick(new_addr)
        net.wait(new_addr, op)
        net.run_for(5)
        if nodes[-1] in _closest(nodes, key, 4):
            assert new_core.store.get(key, net.now) == record
            handed += 1
    assert handed  # the seed puts some newcomers among the closest
    assert sum(c.stats["handoff_stored"] for c, _ in nodes) >= handed
    # by the few closest holders, not every holder: at most handoff_rank per joiner
    assert sum(c.stats["handoffs"] for c, _ in nodes) <= K4.handoff_rank * len(newcomers)


def test_without_handoff_a_joiner_gets_nothing():
    config = DhtConfig(k=4, handoff_rank=0, replicas_wanted=0)
    rng, net, ids, nodes, validator = _network(2, 16, config)
    core, addr = nodes[3]
    _record, key = _publish(net, rng, ids[3], core, addr)
    before = set(_holders(nodes, key, net))
    for identity in identities(rng, 12):
        nodes.append(net.add(identity, validator, config))
        op = nodes[-1][0].bootstrap([nodes[0][1]], net.now)
        net.kick(nodes[-1][1])
        net.wait(nodes[-1][1], op)
    net.run_for(5)
    assert set(_holders(nodes, key, net)) == before


def test_a_restarted_replica_is_handed_the_record_again():
    rng, net, ids, nodes, validator = _network(3, 12, DhtConfig())
    core, addr = nodes[5]
    record, key = _publish(net, rng, ids[5], core, addr)
    replicas = [i for i, (c, a) in enumerate(nodes)
                if i and a != addr and c.store.get(key, net.now)]  # 0: the bootstrap
    assert replicas
    for i in replicas:
        restarted = _restart(net, nodes, i, ids[i], validator, DhtConfig())
        assert restarted.store.get(key, net.now) == record, i


def test_handoff_keeps_the_store_rules_an_older_record_is_refused():
    rng, net, ids, nodes, _validator = _network(4, 10, K4)
    core, addr = nodes[1]
    old, key = _publish(net, rng, ids[1], core, addr)
    # a holder still has seq 1 while a restarted neighbour already has seq 2: the
    # handoff of seq 1 is refused as stale, seq 2 stays
    holder = next(c for c, a in nodes if a != addr and c.store.get(key, net.now) == old)
    newer = announcement(ids[1], 2, net.now, rng)
    target = next(c for c, a in nodes if c is not holder and a != addr)
    assert target.store.offer(key, newer, net.now) in ("stored",)
    contact = holder.table.get(target.table.own_id)
    if contact is not None:
        holder._handed = type(holder._handed)(60.0, 16)
        holder._handoff(contact, net.now, ping_first=True)
        net.kick(next(a for c, a in nodes if c is holder))
        net.run_for(5)
    assert target.store.get(key, net.now) == newer


def test_the_publisher_probes_and_reputs_when_its_replicas_come_back_empty():
    config = DhtConfig(handoff_rank=0)  # the probe alone
    rng, net, ids, nodes, validator = _network(5, 12, config)
    core, addr = nodes[4]
    _record, key = _publish(net, rng, ids[4], core, addr)
    replicas = [i for i, (c, a) in enumerate(nodes)
                if i and a != addr and c.store.get(key, net.now)]  # 0: the bootstrap
    for i in replicas:
        _restart(net, nodes, i, ids[i], validator, config)
    assert _holders(nodes, key, net) == [nodes[0][1], addr]  # the bootstrap's, our own
    net.run_for(config.maintenance_interval + 5)  # the next maintenance tick probes
    assert core.stats["replica_probes"] >= 1 and core.stats["replica_reputs"] >= 1
    assert len(_holders(nodes, key, net)) == len(nodes)  # all 12 are among the k closest


def test_no_probe_while_the_replicas_stay():
    rng, net, ids, nodes, _ = _network(6, 10, K4)
    core, addr = nodes[2]
    _publish(net, rng, ids[2], core, addr)
    sent = net.sent
    net.run_for(2 * K4.maintenance_interval)
    assert core.stats["replica_probes"] == 0
    # idle: only the liveness refreshes (2 datagrams per node per 7.5-15 min, plus
    # what they trigger)
    assert net.sent - sent <= 10 * 6
