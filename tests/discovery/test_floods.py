"""Issue 14 section 1: state and work an unauthenticated sender can create in a DhtCore.

Cores are driven directly (sans-I/O, virtual time). Costs are asserted as table sizes and
entries touched, never as times (benchmarks/dht_floods.py measures the times).
"""

import random

from discovery.announcements import AnnouncementValidator
from discovery.core import DhtConfig, DhtCore
from discovery.wire import (FIND_NODE, FLAG_SERVER, FLAG_WANT_PROOF, PING, PROVE,
                            PROVE_DOMAIN, STORE, Request, decode, encode_request)
from stack.base.identity import Identity

NOW = 1_700_000_000.0
KEYLESS = bytes.fromhex("002408011220")  # identity-multihash prefix of an Ed25519 key


def core(seed: int, **cfg) -> DhtCore:
    rng = random.Random(seed)
    return DhtCore(Identity.from_rng(rng), AnnouncementValidator(), rng, DhtConfig(**cfg))


def request(kind: int, sender: bytes, flags: int = FLAG_SERVER, txid: bytes = b"12345678",
            cookie: bytes = b"") -> bytes:
    return encode_request(Request(kind, txid, sender, flags, cookie,
                                  bytes(32) if kind != PING else b""))


def replies_to(a: DhtCore, addr) -> list:
    return [decode(d) for d, dst in a.outgoing() if dst == addr]


# ---- counter-challenge tables ------------------------------------------------------------

def test_challenge_tables_stay_bounded_and_each_request_touches_o1_entries():
    """A flood of PINGs with the server flag from fresh keyless ids at distinct (spoofed)
    IPs, all inside one backoff period: every one is challenged (each IP is within its
    budget), but the tables hold at most ``max_challenges`` and the entries each request
    touches stay constant as the flood grows (the old table was rebuilt, every entry
    copied, on each insert past 4,096 live entries)."""
    a = core(1)
    rng = random.Random(2)
    bound = 4096  # DhtConfig.max_challenges

    def flood(start: int, count: int) -> None:
        for i in range(start, start + count):
            ip = f"10.{i // 62500}.{(i // 250) % 250}.{i % 250 + 1}"
            a.receive(request(PING, KEYLESS + rng.randbytes(32)), (ip, 666), NOW + i * 1e-3)
            a.outgoing()

    flood(0, 12_000)
    assert a.stats["challenge_sent"] == 12_000
    assert len(a._challenged) <= bound and len(a._pending_proves) <= bound
    # amortised per request: examine the head (1), evict one (1), nothing else
    assert a._challenged.touched <= 2 * 12_000 and a._pending_proves.touched <= 2 * 12_000
    # flat: with the tables full, 4,000 more requests cost what the first 4,000 did
    before = (a._challenged.touched, a._pending_proves.touched)
    flood(12_000, 4_000)
    assert a._challenged.touched - before[0] <= 2 * 4_000
    assert a._pending_proves.touched - before[1] <= 2 * 4_000
    assert len(a._challenged) <= bound and len(a._pending_proves) <= bound


def test_expired_challenges_leave_the_tables_without_a_scan():
    a = core(1, challenge_backoff=60.0, prove_window=10.0)
    rng = random.Random(3)
    for i in range(1000):
        a.receive(request(PING, KEYLESS + rng.randbytes(32)), (f"10.1.{i // 250}.{i % 250}", 1),
                  NOW)
    a.outgoing()
    assert len(a._challenged) == 1000 and len(a._pending_proves) == 1000
    before = a._challenged.touched
    a.receive(request(PING, KEYLESS + rng.randbytes(32)), ("10.2.0.1", 1), NOW + 61)
    # the thousand expired entries went in one pass, each touched once, and are gone
    assert len(a._challenged) == 1 and a._challenged.touched - before <= 1000 + 1
    assert len(a._pending_proves) == 1


def test_a_flood_from_one_ip_with_many_ports_cannot_exhaust_other_ips_budgets():
    """5,000 ports of one IP send PINGs (server flag, fresh keyless ids) and FIND_NODEs
    asking for our proof: the IP gets at most its burst of challenges and signatures.
    An honest peer at another IP, arriving in the same second, is challenged, proves
    itself and enters the table; a stranger at a third IP still gets our proof."""
    a = core(1)
    rng = random.Random(4)
    flood_ip = "66.6.6.6"
    burst = 200  # DhtConfig.stranger_burst
    for port in range(1, 5001):
        a.receive(request(PING, KEYLESS + rng.randbytes(32)), (flood_ip, port), NOW)
        a.receive(request(FIND_NODE, KEYLESS + rng.randbytes(32),
                          FLAG_SERVER | FLAG_WANT_PROOF), (flood_ip, port), NOW)
    out = a.outgoing()
    challenges = sum(1 for d, _ in out if decode(d).challenge)
    proofs = sum(1 for d, _ in out if decode(d).proof)
    assert challenges + proofs <= burst, (challenges, proofs)
    assert a.stats["work_limited"] >= 10_000 - burst
    assert len(a._challenged) <= burst and len(a._pending_proves) <= burst

    honest = Identity.from_rng(random.Random(5))
    pid, addr = honest.peer_id.multihash, ("10.0.0.7", 4001)
    a.receive(request(PING, pid), addr, NOW + 0.5)
    (reply,) = replies_to(a, addr)
    assert len(reply.challenge) == 8
    a.receive(encode_request(Request(PROVE, reply.challenge, pid, FLAG_SERVER,
                                     proof=honest.sign(PROVE_DOMAIN + reply.challenge))),
              addr, NOW + 0.6)
    assert a.table.get(int.from_bytes(honest.peer_id.dht_key, "big")) is not None

    other = ("10.0.0.8", 4001)
    a.receive(request(FIND_NODE, Identity.from_rng(random.Random(6)).peer_id.multihash,
                      FLAG_WANT_PROOF), other, NOW + 0.7)
    (reply,) = replies_to(a, other)
    assert len(reply.proof) == 64


def test_spoofing_an_ip_cannot_spend_its_budget_for_requests_with_our_cookie():
    """2,000 requests asking for our proof, spoofed from a victim's IP (any port, no
    cookie), use up that IP's budget for un-cookied work; the victim itself, echoing the
    cookie we gave it earlier, still gets its proof and a counter-challenge."""
    a = core(1)
    rng = random.Random(7)
    victim = ("10.0.0.7", 4001)
    honest = Identity.from_rng(random.Random(5))
    cookie = cookie_of(a, victim, NOW)
    for port in range(1, 2001):
        a.receive(request(FIND_NODE, KEYLESS + rng.randbytes(32), FLAG_SERVER | FLAG_WANT_PROOF),
                  ("10.0.0.7", port), NOW + 1)
    a.outgoing()
    assert a.stats["work_limited"] >= 2000 - 200
    a.receive(request(FIND_NODE, honest.peer_id.multihash, FLAG_SERVER | FLAG_WANT_PROOF,
                      cookie=cookie), victim, NOW + 1)
    (reply,) = replies_to(a, victim)
    assert len(reply.proof) == 64 and len(reply.challenge) == 8


# ---- dead Sybils: probation ---------------------------------------------------------------

def cookie_of(a: DhtCore, addr, now: float) -> bytes:
    a.receive(request(PING, Identity.from_rng(random.Random(77)).peer_id.multihash, 0), addr,
              now)
    (reply,) = replies_to(a, addr)
    return reply.cookie


def answer_contacts(a: DhtCore, target: bytes, now: float) -> set[bytes]:
    """The peers ``a`` hands a stranger (with a cookie, so nothing is trimmed) in a
    FIND_NODE answer for ``target``."""
    asker = ("10.200.0.1", 4001)
    cookie = cookie_of(a, asker, now)
    a.receive(encode_request(Request(FIND_NODE, b"87654321",
                                     Identity.from_rng(random.Random(78)).peer_id.multihash,
                                     0, cookie, target)), asker, now)
    (reply,) = replies_to(a, asker)
    return {c.peer_id for c in reply.contacts}


def shuttle(a: DhtCore, a_addr, b: DhtCore, b_addr, now: float) -> None:
    for _ in range(8):
        moved = False
        for data, dst in a.outgoing():
            if dst == b_addr:
                b.receive(data, a_addr, now)
                moved = True
        for data, dst in b.outgoing():
            if dst == a_addr:
                a.receive(data, b_addr, now)
                moved = True
        if not moved:
            return


def test_identities_that_prove_themselves_and_vanish_are_never_handed_out():
    """One honest peer joins through ``a`` (PROVE, then answers a's PING: verified). 100
    Sybils with real keys answer a's counter-challenge with a PROVE and vanish. a's
    FIND_NODE answers name only the honest peer; the Sybils' probation PINGs time out
    and they leave the table."""
    a, a_addr = core(1), ("10.0.0.1", 4001)
    b, b_addr = core(2), ("10.0.0.2", 4001)
    b.bootstrap([a_addr], NOW)
    shuttle(b, b_addr, a, a_addr, NOW)
    assert answer_contacts(a, bytes(32), NOW) == {b.peer_id}
    rng = random.Random(9)
    sybils = [Identity.from_rng(rng) for _ in range(100)]
    for i, s in enumerate(sybils):
        addr = (f"10.66.{i // 250}.{i % 250 + 1}", 4001)
        a.receive(request(PING, s.peer_id.multihash), addr, NOW + 1)
        (reply,) = replies_to(a, addr)
        a.receive(encode_request(Request(PROVE, reply.challenge, s.peer_id.multihash,
                                         FLAG_SERVER,
                                         proof=s.sign(PROVE_DOMAIN + reply.challenge))),
                  addr, NOW + 1.05)
    entered = len(a.table) - 1
    assert entered >= 40, entered          # they did get in (buckets with room)
    assert answer_contacts(a, bytes(32), NOW + 1.1) == {b.peer_id}
    now = NOW + 1.1
    while (t := a.next_timer()) is not None and t < NOW + 30:
        now = t
        a.handle_timer(now)
        a.outgoing()                       # the Sybils are gone: nothing answers
    assert len(a.table) == 1 and a.stats["timeout"] >= entered


def test_a_contact_that_times_out_in_a_lookup_is_no_longer_handed_out():
    from dht_corenet import CoreNet
    from dht_helpers import identities

    rng = random.Random(23)
    net = CoreNet(rng)
    nodes = [net.add(i, AnnouncementValidator()) for i in identities(rng, 12)]
    for c, addr in nodes[1:]:
        c.bootstrap([nodes[0][1]], net.now)
        net.kick(addr)
        net.run_for(1)
    net.run_for(10)
    a, a_addr = nodes[0]
    victim, victim_addr = nodes[4]
    vid = victim.table.own_id
    assert victim.peer_id in answer_contacts(a, victim.key, net.now)
    net.crashed.add(victim_addr)
    op = a.start_lookup(victim.key, net.now)
    net.kick(a_addr)
    net.wait(a_addr, op)
    # one failed lookup RPC: marked at once (not handed out), dropped after stale_failures
    assert a.table.get(vid) is not None and a.table.get(vid).failures == 1
    assert victim.peer_id not in answer_contacts(a, victim.key, net.now)


# ---- record store exhaustion ---------------------------------------------------------------

def flood_store(a: DhtCore, ip: str, ports: range, rng: random.Random, now: float,
                spacing: float = 0.0) -> list[str]:
    """Self-signed records of fresh identities, STOREd (with a cookie) from ``ip``, one
    per port, ``spacing`` seconds apart."""
    from dht_helpers import announcement

    results = []
    for i, port in enumerate(ports):
        addr, now = (ip, port), now + spacing * bool(i)
        cookie = cookie_of(a, addr, now)
        ident = Identity.from_rng(rng)
        a.receive(encode_request(Request(STORE, b"storeit!", ident.peer_id.multihash, 0,
                                         cookie, ident.peer_id.dht_key,
                                         announcement(ident, 1, now, rng))), addr, now)
        (reply,) = replies_to(a, addr)
        results.append(reply.result)
    return results


def test_a_store_flood_cannot_keep_an_honest_record_out():
    """The store (60 records here) is filled with self-signed records of fresh
    identities from three IPs; more from other IPs only displace the flood's own (the
    biggest sources give way). An honest publisher that proved itself to the node (it
    is in the routing table) still gets its record stored (a flood record is evicted),
    and the flood that follows cannot push it out again."""
    from dht_helpers import announcement

    from discovery.events import PutDone

    a, a_addr = core(1, max_records=60), ("10.0.0.1", 4001)
    b, b_addr = core(2), ("10.0.0.2", 4001)
    b.bootstrap([a_addr], NOW)
    shuttle(b, b_addr, a, a_addr, NOW)
    rng = random.Random(10)
    results = []
    for ip in ("66.6.6.1", "66.6.6.2", "66.6.6.3"):
        results += flood_store(a, ip, range(1000, 1020), rng, NOW + 1)
    assert results == ["stored"] * 60 and len(a.store) == 60
    # another flood IP gets in only at the expense of the biggest flood IPs (fairness)
    assert flood_store(a, "66.6.6.4", range(1000, 1005), rng, NOW + 2) == ["stored"] * 5
    assert a.store.evicted == 5 and len(a.store) == 60

    honest = Identity.from_rng(random.Random(2))           # b's identity (core(2))
    assert honest.peer_id.multihash == b.peer_id
    record = announcement(honest, 1, NOW + 3, rng)
    while b.next_event() is not None:
        pass
    op = b.put(record, NOW + 3)
    shuttle(b, b_addr, a, a_addr, NOW + 3)
    assert b.next_event() == PutDone(op, b.key, 1, None)
    assert a.store.get(b.key, NOW + 3) == record and len(a.store) == 60

    flood_store(a, "66.6.6.5", range(1000, 1040), rng, NOW + 4)
    assert a.store.get(b.key, NOW + 4) == record
    held = [a.store.held_by(f"66.6.6.{i}") for i in (1, 2, 3, 5)]  # .4 sent only 5
    assert max(held) - min(held) <= 1 and sum(held) + 5 == 59, held


def test_one_ip_with_many_ports_stops_at_its_quota():
    """300 self-signed records from one IP (a port each): 256 (the per-IP quota) are
    stored, the rest get ``over_quota`` before any signature check; another IP is not
    affected. (20 a second: below the IP's work budget, which would stop it too.)"""
    a = core(1, max_records=1000)
    rng = random.Random(11)
    results = flood_store(a, "66.6.6.6", range(1, 301), rng, NOW, spacing=0.05)
    assert results == ["stored"] * 256 + ["over_quota"] * 44
    assert a.stats["store_over_quota"] == 44
    assert flood_store(a, "10.0.0.9", range(1, 3), rng, NOW + 16) == ["stored"] * 2
