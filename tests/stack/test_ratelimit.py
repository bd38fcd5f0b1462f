"""The one token bucket (stack.base.ratelimit)."""

import pytest

from stack.base.ratelimit import TokenBuckets


def test_burst_then_rate() -> None:
    buckets = TokenBuckets(rate=2.0, burst=3)
    assert [buckets.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert buckets.allow("a", 0.5)          # one token earned in 0.5 s at 2/s
    assert not buckets.allow("a", 0.5)
    assert buckets.allow("b", 0.5)          # keys are independent


def test_a_clock_stepping_backwards_earns_nothing() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1)
    assert buckets.allow("a", 100.0)
    assert not buckets.allow("a", 50.0)
    assert not buckets.allow("a", 100.5)    # the refill still counts from 100.0


def test_the_table_is_bounded_and_forgets_the_least_recently_seen() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, max_keys=2)
    assert buckets.allow("a", 0.0) and buckets.allow("b", 0.0)
    assert not buckets.allow("a", 0.0)      # a is now the most recently seen
    assert buckets.allow("c", 0.0)          # evicts b, not a
    assert len(buckets) == 2
    assert not buckets.allow("a", 0.0)      # a kept its empty bucket
    assert buckets.allow("b", 0.0)          # b was forgotten: a full bucket again


@pytest.mark.parametrize("rate, burst, keys", [(0, 1, 1), (1, 0.5, 1), (1, 1, 0)])
def test_nonsense_limits_are_refused(rate, burst, keys) -> None:
    with pytest.raises(ValueError):
        TokenBuckets(rate, burst, keys)


def test_a_cost_spends_that_many_tokens() -> None:
    """A bucket of bytes (the relay's per-circuit rate): ``cost`` tokens per call."""
    buckets = TokenBuckets(rate=1000, burst=1000, max_keys=1)
    assert buckets.allow("c", 0.0, 600)
    assert not buckets.allow("c", 0.0, 600)   # 400 left: refused, nothing spent
    assert buckets.allow("c", 0.0, 400)
    assert buckets.allow("c", 0.5, 500)       # half a second earns 500


def test_buckets_that_filled_up_again_are_forgotten_and_no_answer_changes() -> None:
    """A node that hears from 1,000 peers once each keeps the buckets of the last second's
    peers, not 1,000; an emptied bucket that has not refilled yet is kept (its key is
    still limited)."""
    buckets = TokenBuckets(rate=1.0, burst=2, max_keys=8192)
    assert buckets.allow("hot", 0.0) and buckets.allow("hot", 0.0)
    assert not buckets.allow("hot", 0.0)
    for i in range(100):
        assert buckets.allow(f"early{i}", 0.005 * i)  # full again 1 s after its use
    assert not buckets.allow("hot", 0.5)             # still empty at 0.5 s: kept
    for i in range(1000):
        assert buckets.allow(f"peer{i}", 0.5 + 0.005 * i)
    assert len(buckets) <= 205, len(buckets)         # ~1 s of peers (200)
    assert "hot" not in buckets._buckets              # full since 2.5 s: forgotten
    assert buckets.allow("hot", 5.5) and buckets.allow("hot", 5.5)
    assert not buckets.allow("hot", 5.5)             # a full burst of 2, as before


def test_forgetting_gives_the_same_answers_as_a_table_that_forgets_nothing() -> None:
    import random
    rng = random.Random(7)
    small, big = TokenBuckets(3.0, 5), TokenBuckets(3.0, 5)
    big._forget_full = lambda now, most=2: None  # type: ignore[method-assign]
    now = 0.0
    for _ in range(20000):
        now += rng.random() * 0.05
        key, cost = rng.randrange(50), rng.choice((1.0, 1.0, 2.5))
        assert small.allow(key, now, cost) == big.allow(key, now, cost)
    assert len(small) < len(big)
