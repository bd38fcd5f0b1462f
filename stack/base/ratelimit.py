"""The one token bucket (issue 8, section 6): per-key rate limits in bounded memory.

``TokenBuckets(rate, burst, max_keys)``: each key (a source IP, an address, a peer)
earns ``rate`` tokens per second up to ``burst``; ``allow(key, now)`` spends one or
says no (``allow(key, now, cost)`` spends ``cost``: a bucket of bytes, say). The table
keeps at most ``max_keys`` keys, forgetting the one seen least recently (O(1): an
insertion-ordered dict, moved to the end on use), so a flood from
many sources costs bounded memory and constant time per packet. A forgotten key starts
again with a full bucket: the bound is on memory, the rate holds for every key that is
still sending. A bucket that has filled up again is forgotten too (a few per call, from
the least recently used end): it is exactly what a new key gets, so forgetting it
changes no answer, and the table holds only the keys active in the last ``burst / rate``
seconds (a node that talks to thousands of peers, each now and then, keeps a handful of
buckets, not thousands). Time is a parameter (sans-I/O); a clock that steps backwards
earns nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["TokenBuckets"]


class TokenBuckets:
    def __init__(self, rate: float, burst: float, max_keys: int = 8192) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate > 0, burst >= 1 and max_keys >= 1 are required")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, list[float]] = OrderedDict()  # [tokens, at]

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens of ``key``'s bucket; False (and nothing spent) when it
        holds fewer."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = [self.burst, now]
        else:
            self._buckets.move_to_end(key)
            earned = (now - bucket[1]) * self.rate
            if earned > 0:
                bucket[0] = min(self.burst, bucket[0] + earned)
                bucket[1] = now
        self._forget_full(now)
        if bucket[0] < cost:
            return False
        bucket[0] -= cost
        return True

    def _forget_full(self, now: float, most: int = 2) -> None:
        """Drop up to ``most`` buckets that are full again, least recently used first
        (each insertion pays for at most the removals it makes possible)."""
        buckets = self._buckets
        for _ in range(most):
            if len(buckets) < 2:
                return
            key, (tokens, at) = next(iter(buckets.items()))
            if at + (self.burst - tokens) / self.rate > now:
                return
            del buckets[key]
