"""Lookup state machine: alpha in flight without rounds, exact k closest, failures."""

import random

from discovery.lookup import FAILED, SUCCEEDED, Lookup


class Graph:
    """A synthetic network: every node knows the k nodes closest to any target exactly."""

    def __init__(self, rng, n=300):
        self.nodes = [rng.getrandbits(64) for _ in range(n)]

    def closest(self, target, k):
        return sorted(self.nodes, key=lambda x: x ^ target)[:k]


def run(lookup, graph, k, dead=frozenset(), order=None):
    waiting = []
    max_in_flight = 0
    rounds = 0
    waiting.extend(lookup.next())
    while waiting and not lookup.done:
        max_in_flight = max(max_in_flight, lookup.in_flight)
        cand = waiting.pop(0 if order is None else order(len(waiting)))
        if cand.node_id in dead:
            lookup.failed(cand.node_id)
        else:
            for n in graph.closest(lookup.target, k + len(dead)):
                lookup.add(n.to_bytes(38, "big"), n, ("10.0.0.1", 1))
            lookup.succeeded(cand.node_id)
        waiting.extend(lookup.next())
        rounds += 1
    return max_in_flight


def test_finds_the_exact_k_closest_with_at_most_alpha_in_flight():
    rng = random.Random(3)
    graph = Graph(rng)
    for _ in range(20):
        target = rng.getrandbits(64)
        lookup = Lookup(target, k=20, alpha=3)
        for n in rng.sample(graph.nodes, 5):
            lookup.add(b"", n, ("10.0.0.1", 1))
        assert run(lookup, graph, 20) <= 3
        assert lookup.done
        assert [c.node_id for c in lookup.closest()] == graph.closest(target, 20)


def test_a_reply_releases_the_next_request_at_once():
    """No lockstep: when one of three in-flight RPCs answers, a new one starts while the
    other two are still outstanding."""
    lookup = Lookup(0, k=20, alpha=3)
    for n in range(1, 10):
        lookup.add(b"", n, ("10.0.0.1", 1))
    first = lookup.next()
    assert len(first) == 3 and lookup.in_flight == 3
    assert lookup.next() == []
    lookup.succeeded(first[0].node_id)
    more = lookup.next()
    assert len(more) == 1 and lookup.in_flight == 3


def test_dead_nodes_are_skipped_and_the_result_has_only_answering_ones():
    rng = random.Random(4)
    graph = Graph(rng)
    target = rng.getrandbits(64)
    dead = set(graph.closest(target, 5))
    lookup = Lookup(target, k=20, alpha=3)
    for n in rng.sample(graph.nodes, 5):
        lookup.add(b"", n, ("10.0.0.1", 1))
    run(lookup, graph, 20, dead=dead, order=lambda n: n - 1)
    got = [c.node_id for c in lookup.closest()]
    alive = [n for n in sorted(graph.nodes, key=lambda x: x ^ target) if n not in dead][:20]
    assert got == alive
    assert all(lookup.get(n).state == FAILED for n in dead)


def test_small_network_finishes_when_nothing_is_left():
    lookup = Lookup(0, k=20, alpha=3)
    lookup.add(b"", 7, ("10.0.0.1", 1))
    (only,) = lookup.next()
    assert not lookup.done
    lookup.failed(only.node_id)
    assert lookup.done and lookup.closest() == []


def test_empty_lookup_is_done_and_answered_seeds_count():
    assert Lookup(0).done
    lookup = Lookup(0, k=1)
    lookup.add(b"", 3, ("10.0.0.1", 1), SUCCEEDED)
    assert lookup.done and [c.node_id for c in lookup.closest()] == [3]
