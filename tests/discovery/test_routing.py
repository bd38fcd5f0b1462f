"""Routing table rules: buckets, exact closest, replacement cache, staleness, addresses."""

import random

from discovery.routing import RoutingTable, RttEstimator

OWN = 0


def ids(rng, count, bits=256):
    return [rng.getrandbits(bits) | 1 for _ in range(count)]


def pid(node_id: int) -> bytes:
    return node_id.to_bytes(38, "big")


def test_bucket_index_is_the_distance_bit_length():
    table = RoutingTable(OWN)
    assert table.bucket_index(1) == 0
    assert table.bucket_index(1 << 255) == 255
    assert table.bucket_index(0b1011) == 3


def test_closest_is_exact_against_brute_force():
    rng = random.Random(1)
    table = RoutingTable(rng.getrandbits(256), k=20)
    nodes = ids(rng, 400)
    for n in nodes:
        table.add_proven(pid(n), n, ("10.0.0.1", 1))
    present = [c.node_id for c in table]
    for _ in range(50):
        target = rng.choice([rng.getrandbits(256), rng.choice(present), table.own_id])
        want = sorted(present, key=lambda n: n ^ target)[:20]
        assert [c.node_id for c in table.closest(target, 20)] == want


def test_closest_and_bucket_listing_are_exact_with_buckets_at_every_depth():
    """Contacts in low, middle and top buckets (only those that have held one are
    stored): closest is still the brute-force order, listings go by index."""
    rng = random.Random(2)
    table = RoutingTable(OWN, k=4)
    nodes = [rng.getrandbits(bits) | (1 << (bits - 1)) for bits in (1, 3, 9, 40, 200, 256)
             for _ in range(6)]
    for n in nodes:
        table.add_proven(pid(n), n, ("10.0.0.1", 1))
    present = sorted(c.node_id for c in table)
    assert table.nonempty_buckets() == sorted({n.bit_length() - 1 for n in present})
    sizes = table.buckets_sizes()
    assert len(sizes) == 256 and sum(sizes) == len(present) and sizes[0] == 1
    for target in nodes + [rng.getrandbits(bits) for bits in (2, 10, 100, 256)] + [OWN]:
        for count in (1, 5, 30):
            want = sorted(present, key=lambda n: n ^ target)[:count]
            assert [c.node_id for c in table.closest(target, count)] == want


def test_full_bucket_keeps_old_contacts_and_caches_newcomers():
    table = RoutingTable(OWN, k=2)
    far = [(1 << 255) | i for i in range(1, 5)]
    assert table.add_proven(pid(far[0]), far[0], ("1.1.1.1", 1))
    assert table.add_proven(pid(far[1]), far[1], ("1.1.1.2", 1))
    assert not table.wants(far[2], ("1.1.1.3", 1))         # no room: no proof wanted
    assert not table.add_proven(pid(far[2]), far[2], ("1.1.1.3", 1))
    assert [c.node_id for c in table.bucket(255)] == far[:2]


def test_one_failure_is_not_stale_three_are_and_a_replacement_is_offered():
    table = RoutingTable(OWN, k=2, stale_failures=3)
    far = [(1 << 255) | i for i in range(1, 5)]
    for n in far[:2]:  # both answered a request of ours (past probation)
        table.add_proven(pid(n), n, ("1.1.1.1", n & 0xFF), answered=True)
    table.add_candidate(pid(far[2]), far[2], ("1.1.1.3", 3))
    assert table.record_failure(far[0]) is None
    assert table.get(far[0]) is not None
    table.record_success(far[0])                          # an answer resets the count
    assert table.record_failure(far[0]) is None
    assert table.record_failure(far[0]) is None
    replacement = table.record_failure(far[0])
    assert table.get(far[0]) is None
    assert replacement == (pid(far[2]), far[2], ("1.1.1.3", 3))
    assert table.get(far[2]) is None                      # only after its proof
    assert table.wants(far[2], ("1.1.1.3", 3))


def test_address_changes_only_through_add_proven():
    table = RoutingTable(OWN)
    n = 1 << 200
    table.add_proven(pid(n), n, ("1.1.1.1", 1))
    table.add_candidate(pid(n), n, ("6.6.6.6", 6))        # a hint never moves a contact
    assert table.get(n).addr == ("1.1.1.1", 1)
    assert table.wants(n, ("2.2.2.2", 2))                  # a new address needs a proof
    assert not table.wants(n, ("1.1.1.1", 1))
    table.add_proven(pid(n), n, ("2.2.2.2", 2))
    assert table.get(n).addr == ("2.2.2.2", 2)
    assert len(table) == 1


def test_own_id_never_enters():
    table = RoutingTable(5)
    assert not table.wants(5, ("1.1.1.1", 1))
    assert not table.add_proven(pid(5), 5, ("1.1.1.1", 1))
    assert len(table) == 0


def test_rtt_estimator_follows_rfc6298():
    est = RttEstimator()
    assert est.rto(1.0, 0.2, 5.0) == 1.0                  # no sample yet
    est.sample(0.1)
    assert est.srtt == 0.1 and est.rttvar == 0.05
    assert abs(est.rto(1.0, 0.2, 5.0) - 0.3) < 1e-9
    for _ in range(50):
        est.sample(0.01)
    assert est.rto(1.0, 0.2, 5.0) == 0.2                  # clamped at the floor


def test_rtt_estimator_state_is_exactly_the_two_float_recurrence():
    """The packed state gives the same doubles as srtt/rttvar kept as two floats."""
    est = RttEstimator()
    srtt = rttvar = 0.0
    for i, rtt in enumerate([0.08, 0.3, 0.011, 1e-7, 2.5, 0.1, 0.1, 0.7]):
        est.sample(rtt)
        if i == 0:
            srtt, rttvar = rtt, rtt / 2
        else:
            rttvar = 0.75 * rttvar + 0.25 * abs(srtt - rtt)
            srtt = 0.875 * srtt + 0.125 * rtt
        assert (est.srtt, est.rttvar) == (srtt, rttvar)
        assert est.rto(1.0, 0.0, 99.0) == srtt + 4 * rttvar


def test_probation_unverified_contacts_are_not_handed_out_and_go_at_their_first_failure():
    table = RoutingTable(OWN, k=20, stale_failures=3)
    far = [(1 << 255) | i for i in range(1, 6)]
    table.add_proven(pid(far[0]), far[0], ("1.1.1.1", 1), answered=True)   # answered us
    for n in far[1:]:
        table.add_proven(pid(n), n, ("1.1.1.2", n & 0xFF))                 # one-way PROVE
    assert [c.node_id for c in table.closest(far[0], 20, verified_only=True)] == [far[0]]
    assert len(table.closest(far[0], 20)) == 5                             # our own lookups
    table.touch(far[1])                                                    # a request: no
    assert len(table.closest(far[0], 20, verified_only=True)) == 1
    table.record_success(far[1])                                           # an answer: yes
    assert len(table.closest(far[0], 20, verified_only=True)) == 2
    table.record_failure(far[2])                                           # never answered
    assert table.get(far[2]) is None
    table.record_failure(far[0])                     # verified: hidden at once, kept
    assert table.get(far[0]) is not None
    assert [c.node_id for c in table.closest(far[0], 20, verified_only=True)] == [far[1]]
    table.record_success(far[0])
    assert len(table.closest(far[0], 20, verified_only=True)) == 2
    table.add_proven(pid(far[0]), far[0], ("9.9.9.9", 9))     # moved by a PROVE: probation
    assert [c.node_id for c in table.closest(far[0], 20, verified_only=True)] == [far[1]]
