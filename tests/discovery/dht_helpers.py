"""Shared test helpers: deterministic identities and signed announcements."""

from __future__ import annotations

import random

from stack.base.identity import Identity
from stack.base.records import sign_announcement


def identities(rng: random.Random, count: int) -> list[Identity]:
    return [Identity.from_rng(rng) for _ in range(count)]


def announcement(identity: Identity, seq: int, now: float, rng: random.Random,
                 addrs: tuple[str, ...] = ("/ip4/10.0.0.1/udp/4001/quic-v1",)) -> bytes:
    return sign_announcement(identity, seq, list(addrs), now, nonce=rng.randbytes(16))
