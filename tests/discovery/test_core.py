"""DhtCore pair and attack tests: identity binding, client mode, limits, records, timers.

Cores are driven directly (in-memory, virtual time): no sockets, no sleeps.
"""

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from discovery.announcements import AnnouncementValidator
from discovery.core import DhtConfig, DhtCore
from discovery.events import BootstrapDone, GetDone, PutDone, RecordRefreshDue
from discovery.wire import (FIND_NODE, FLAG_SERVER, PING, PROVE, PROVE_DOMAIN,
                            STORE, Reply, Request, decode, encode_reply, encode_request)
from dht_corenet import CoreNet
from dht_helpers import announcement, identities
from stack.base.identity import Identity

NOW = 1_700_000_000.0
A, B, X = ("10.0.0.1", 4001), ("10.0.0.2", 4001), ("66.6.6.6", 666)


def core(seed: int, **cfg) -> DhtCore:
    rng = random.Random(seed)
    return DhtCore(Identity.from_rng(rng), AnnouncementValidator(), rng, DhtConfig(**cfg))


def exchange(a: DhtCore, a_addr, b: DhtCore, b_addr, now=NOW, rounds=6, a_seen=None):
    """Shuttle datagrams between two cores until quiet. ``a_seen`` is the source address
    b sees for a (a NAT rebinding); b's answers to it reach a."""
    a_seen = a_seen or a_addr
    for _ in range(rounds):
        moved = False
        for data, dst in a.outgoing():
            if dst == b_addr:
                b.receive(data, a_seen, now)
                moved = True
        for data, dst in b.outgoing():
            if dst == a_seen:
                a.receive(data, b_addr, now)
                moved = True
        if not moved:
            return


def test_bootstrap_pair_proves_both_ways():
    a, b = core(1), core(2)
    op = b.bootstrap([A], NOW)
    exchange(b, B, a, A)
    assert b.table.get(a.table.own_id) is not None      # a proved itself in its reply
    assert a.table.get(b.table.own_id).addr == B        # a challenged b, b proved
    assert a.stats["challenge_sent"] == 1 and a.stats["proof_ok"] == 1
    event = b.next_event()
    assert event == BootstrapDone(op, 1, None)


def test_client_mode_queries_but_is_not_added():
    a, c = core(1), core(3, server=False)
    c.bootstrap([A], NOW)
    exchange(c, B, a, A)
    assert len(c.table) == 1 and len(a.table) == 0
    assert a.stats["challenge_sent"] == 0


def test_bootstrap_to_nobody_is_unreachable_after_retries():
    b = core(2)
    op = b.bootstrap([A], NOW)
    now = NOW
    for _ in range(10):
        b.outgoing()
        now = b.next_timer()
        b.handle_timer(now)
    assert b.next_event() == BootstrapDone(op, 0, "unreachable")


def sybil_request(kind=FIND_NODE, sender=None, cookie=b"", pad=0) -> bytes:
    sender = sender or Identity.from_rng(random.Random(99)).peer_id.multihash
    return encode_request(Request(kind, b"12345678", sender, FLAG_SERVER, cookie,
                                  bytes(32) if kind != PING else b""), pad)


def prove(sender: bytes, nonce: bytes, signer: Identity) -> bytes:
    return encode_request(Request(PROVE, nonce, sender, FLAG_SERVER,
                                  proof=signer.sign(PROVE_DOMAIN + nonce)))


def test_sybil_id_without_key_is_challenged_rejected_and_counted():
    a = core(1)
    fake_pid = Identity.from_rng(random.Random(5)).peer_id.multihash  # we lack its key
    request = sybil_request(PING, fake_pid)
    a.receive(request, X, NOW)
    out = a.outgoing()
    (reply,) = [decode(d) for d, dst in out if dst == X]
    assert all(len(d) <= 3 * len(request) for d, _ in out)  # the counter-challenge is small
    assert len(reply.challenge) == 8 and a.stats["challenge_sent"] == 1
    wrong = Identity.from_rng(random.Random(6))           # signs with another key
    a.receive(prove(fake_pid, reply.challenge, wrong), X, NOW + 0.1)
    assert a.stats["proof_failed"] == 1 and len(a.table) == 0
    # the nonce was single use: a second try (even a valid-looking one) finds nothing
    a.receive(prove(fake_pid, reply.challenge, wrong), X, NOW + 0.2)
    assert a.stats["unexpected_prove"] == 1 and len(a.table) == 0
    assert a.outgoing() == []                              # PROVE is never answered


def test_prove_only_for_a_pending_challenge_at_that_address_in_time():
    a = core(1)
    peer = Identity.from_rng(random.Random(5))
    pid = peer.peer_id.multihash
    a.receive(sybil_request(PING, pid), X, NOW)
    (reply,) = [decode(d) for d, _ in a.outgoing()]
    a.receive(prove(pid, reply.challenge, peer), ("66.6.6.7", 666), NOW)  # other address
    a.receive(prove(pid, b"guessed!", peer), X, NOW)                       # no such nonce
    assert a.stats["unexpected_prove"] == 2 and len(a.table) == 0
    a.receive(sybil_request(PING, pid), X, NOW + 100)  # past the backoff: a new challenge
    (reply,) = [decode(d) for d, _ in a.outgoing()]
    a.receive(prove(pid, reply.challenge, peer), X, NOW + 100 + 11)        # too late
    assert a.stats["unexpected_prove"] == 3 and len(a.table) == 0
    a.receive(sybil_request(PING, pid), X, NOW + 200)
    (reply,) = [decode(d) for d, _ in a.outgoing()]
    a.receive(prove(pid, reply.challenge, peer), X, NOW + 200.1)
    assert a.stats["proof_ok"] == 1
    assert a.table.get(int.from_bytes(peer.peer_id.dht_key, "big")).addr == X


def test_pending_counter_challenges_are_bounded_under_a_spoofed_flood():
    a = core(1)
    rng = random.Random(8)
    for i in range(5000):  # Sybil ids from spoofed sources: each gets a challenge
        sender = bytes.fromhex("002408011220") + rng.randbytes(32)
        a.receive(sybil_request(PING, sender), (f"10.9.{i // 250}.{i % 250}", 666), NOW)
    assert a.stats["challenge_sent"] == 5000 and len(a._pending_proves) <= 4096
    assert len(a.outgoing()) == 5000 and len(a.table) == 0  # one small reply each


def test_nat_rebinding_updates_the_address_only_with_a_proof():
    a, b = core(1), core(2)
    b.bootstrap([A], NOW)
    exchange(b, B, a, A)
    assert a.table.get(b.table.own_id).addr == B
    # A spoofer claims b's id from X: the challenge goes to X and cannot be answered.
    a.receive(sybil_request(PING, b.peer_id, pad=400), X, NOW + 1)
    for data, dst in a.outgoing():
        rep = decode(data)
        if dst == X and rep.challenge:
            a.receive(encode_request(Request(PROVE, rep.challenge, b.peer_id, FLAG_SERVER,
                                             proof=bytes(64))), X, NOW + 1.1)
    assert a.table.get(b.table.own_id).addr == B
    assert a.stats["proof_failed"] == 1
    # b's NAT rebinds to a new port: b's next request arrives from there, b proves it.
    new = ("10.0.0.2", 5555)
    b.start_lookup(bytes(32), NOW + 200)
    exchange(b, B, a, A, now=NOW + 200, a_seen=new)
    assert a.table.get(b.table.own_id).addr == new


def test_unvalidated_replies_are_capped_at_three_times_the_request():
    rng = random.Random(11)
    net = CoreNet(rng)
    nodes = [net.add(i, AnnouncementValidator()) for i in identities(rng, 40)]
    for c, addr in nodes[1:]:
        c.bootstrap([nodes[0][1]], net.now)
        net.kick(addr)
        net.run_for(1)
    a, _ = nodes[0]
    assert len(a.table) >= 21
    small = sybil_request(FIND_NODE)                       # an attacker does not pad
    a.receive(small, X, net.now)
    (reply,) = [d for d, dst in a.outgoing() if dst == X and isinstance(decode(d), Reply)]
    assert len(reply) <= 3 * len(small)
    assert len(decode(reply).contacts) < 20
    cookie = decode(reply).cookie                          # X really receives: full reply
    a.receive(sybil_request(FIND_NODE, cookie=cookie), X, net.now)
    (full,) = [d for d, dst in a.outgoing() if dst == X and isinstance(decode(d), Reply)]
    assert len(decode(full).contacts) == 20 and len(full) > 3 * len(small)


def test_store_needs_a_cookie_and_rate_limits_apply():
    a = core(1, rate=10.0, burst=20.0)
    rng = random.Random(3)
    victim = Identity.from_rng(rng)
    rec = announcement(victim, 1, NOW, rng)
    req = Request(STORE, b"abcdefgh", victim.peer_id.multihash, 0, b"",
                  victim.peer_id.dht_key, rec)
    a.receive(encode_request(req, 400), X, NOW)
    (reply,) = [decode(d) for d, _ in a.outgoing()]
    assert reply.result == "no_cookie" and len(a.store) == 0
    for _ in range(100):
        a.receive(sybil_request(PING, pad=400), X, NOW)
    assert a.stats["rate_limited"] == 100 - 19
    assert len(a.outgoing()) <= 19 * 2


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_garbage_never_raises_and_is_counted(data):
    a = core(1)
    a.receive(b"\x04" + data, X, NOW)
    a.receive(data, X, NOW)
    # nothing answered, and each of the two counted as a drop (none lost silently)
    assert a.outgoing() == []
    assert a.stats["malformed"] + a.stats["oversize"] == 2


def test_malformed_oversize_and_unexpected_replies_are_counted():
    a = core(1)
    a.receive(b"\x04\xff\xff", X, NOW)
    a.receive(b"\x04" + bytes(5000), X, NOW)
    a.receive(encode_reply(Reply(PING, b"zzzzzzzz", a.peer_id, 0)), X, NOW)
    assert (a.stats["malformed"], a.stats["oversize"], a.stats["unexpected_reply"]) == (1, 1, 1)
    assert a.outgoing() == []


def small_net(seed, n=30, **cfg):
    rng = random.Random(seed)
    net = CoreNet(rng)
    ids = identities(rng, n)
    nodes = [net.add(i, AnnouncementValidator(), DhtConfig(**cfg)) for i in ids]
    for c, addr in nodes[1:]:
        c.bootstrap([nodes[0][1]], net.now)
        net.kick(addr)
        net.run_for(1)
    net.run_for(10)
    return rng, net, ids, nodes


def test_get_returns_highest_seq_and_repairs_stale_holders():
    rng, net, ids, nodes = small_net(21, quorum=20)
    (pub, pub_addr), owner = nodes[5], ids[5]
    op = pub.put(announcement(owner, 1, net.now, rng), net.now)
    net.kick(pub_addr)
    assert net.wait(pub_addr, op).stored == 20
    key = owner.peer_id.dht_key
    holders = [c for c, _ in nodes if c.store.get(key, net.now)]
    newer = announcement(owner, 2, net.now, rng)
    for c in holders[:4]:                                   # only some got seq 2
        assert c.store.offer(key, newer, net.now) == "stored"
    reader, reader_addr = nodes[17]
    op = reader.get(key, net.now)
    net.kick(reader_addr)
    event = net.wait(reader_addr, op)
    assert isinstance(event, GetDone) and event.seq == 2 and event.record == newer
    assert event.repaired == len(holders) - 4 - (reader in holders)
    net.run_for(5)
    assert all(c.store.get(key, net.now) == newer for c in holders)


def test_records_under_wrong_key_and_overwrites_are_refused_by_replicas():
    rng, net, ids, nodes = small_net(22)
    (mal, mal_addr), mallory = nodes[3], ids[3]
    victim = ids[8]
    op = nodes[8][0].put(announcement(victim, 5, net.now, rng), net.now)
    net.kick(nodes[8][1])
    assert net.wait(nodes[8][1], op).stored == 20
    # mallory walks to the key first (as a real STORE would: it collects the replicas'
    # cookies, so her STOREs are judged on the record), then stores her own record under
    # the victim's key, via raw STOREs
    op = mal.start_lookup(victim.peer_id.dht_key, net.now)
    net.kick(mal_addr)
    net.wait(mal_addr, op)
    targeted = 0
    for c, addr in nodes:
        if c is not mal and c.store.get(victim.peer_id.dht_key, net.now):
            targeted += 1
            mal._request(STORE, addr, net.now, expected=c.peer_id, node_id=c.table.own_id,
                         target=victim.peer_id.dht_key,
                         record=announcement(mallory, 9, net.now, rng), want_proof=False)
            # a replayed older victim record too
            mal._request(STORE, addr, net.now, expected=c.peer_id, node_id=c.table.own_id,
                         target=victim.peer_id.dht_key,
                         record=announcement(victim, 4, net.now, rng), want_proof=False)
    net.kick(mal_addr)
    net.run_for(5)
    total = sum((c.stats for c, _ in nodes), start=__import__("collections").Counter())
    assert total["store_wrong_key"] + total["store_no_cookie"] == targeted >= 19
    assert total["store_stale_seq"] + total["store_no_cookie"] >= targeted
    reader, raddr = nodes[20]
    op = reader.get(victim.peer_id.dht_key, net.now)
    net.kick(raddr)
    assert net.wait(raddr, op).seq == 5


def test_put_of_an_invalid_record_is_refused_locally():
    a = core(1)
    op = a.put(b"not a record", NOW)
    assert a.next_event() == PutDone(op, b"", 0, "malformed")


def test_stale_after_repeated_failures_and_adaptive_timeouts():
    _rng, net, _ids, nodes = small_net(23, n=12)
    a, a_addr = nodes[0]
    victim_core, victim_addr = nodes[4]
    vid = victim_core.table.own_id
    contact = a.table.get(vid)
    assert contact is not None and contact.rtt.srtt is not None
    rto = contact.rtt.rto(1.0, 0.2, 5.0)
    assert rto < 1.0                                        # learned from ~50 ms RTTs
    net.crashed.add(victim_addr)
    for i in range(3):
        a._request(PING, victim_addr, net.now, expected=victim_core.peer_id, node_id=vid,
                   want_proof=False)
        deadline = a.next_timer()
        assert deadline - net.now <= rto + 1e-6
        net.kick(a_addr)
        net.run_for(6)
        assert (a.table.get(vid) is None) == (i == 2)      # one loss is not enough


def test_publisher_republishes_and_asks_for_a_fresh_signature():
    rng, net, ids, nodes = small_net(24, n=25, republish_interval=3600.0)
    pub, addr = nodes[2]
    op = pub.publish(announcement(ids[2], 1, net.now, rng), net.now)
    net.kick(addr)
    assert net.wait(addr, op).stored == 20
    sent = net.sent
    net.run_for(3600 * 13)
    assert net.sent > sent
    refresh = [e for e in net.events[addr] if isinstance(e, RecordRefreshDue)]
    assert refresh == [RecordRefreshDue(ids[2].peer_id.dht_key)]


def test_a_walk_asks_its_candidates_for_proofs_in_its_queries_not_in_pings():
    """Contacts named in a walk's answers wait for the walk to end: the ones it queries
    prove themselves in their answers (no PING of their own), the rest are challenged
    once it ends, so the table fills as before with fewer datagrams."""
    rng = random.Random(7)
    net = CoreNet(rng)
    nodes = [net.add(i, AnnouncementValidator()) for i in identities(rng, 61)]
    for c, addr in nodes[1:-1]:
        c.bootstrap([nodes[0][1]], net.now)
        net.kick(addr)
        net.run_for(0.5)
    net.run_for(10)
    joiner, joiner_addr = nodes[-1]
    asked: dict[int, set] = {FIND_NODE: set(), PING: set()}

    def tap(data, src, dst):
        msg = decode(data)
        if src == joiner_addr and isinstance(msg, Request) and (msg.want_proof
                                                                or msg.kind == FIND_NODE):
            asked.setdefault(msg.kind, set()).add(dst)

    net.taps.append(tap)
    op = joiner.bootstrap([nodes[0][1]], net.now)
    net.kick(joiner_addr)
    assert net.wait(joiner_addr, op).error is None
    net.run_for(10)
    queried = asked[FIND_NODE] - {nodes[0][1]}
    assert queried and asked[PING]               # it walked and it challenged
    assert not queried & asked[PING]             # nobody it queried was PINGed as well
    in_table = {c.addr for c in joiner.table}
    assert queried <= in_table                   # each answer's proof put its sender in
    per_bucket = Counter(joiner.table.bucket_index(c.table.own_id) for c, _ in nodes[:-1])
    assert len(in_table) == sum(min(n, 20) for n in per_bucket.values())  # every bucket full
