"""Iterative lookup state machine (Kademlia section 2.3, without lockstep rounds).

Rules (after rust-libp2p ``kad/query/peers/closest.rs``):
- Candidates are kept sorted by XOR distance to the target; each is NEW, WAITING,
  SUCCEEDED or FAILED.
- At most ``alpha`` RPCs are in flight. As soon as one finishes, the next NEW candidate
  among the ``k`` closest non-failed ones is queried (no waiting for a round).
- The lookup is finished when the ``k`` closest non-failed candidates have all answered,
  or when none of them is NEW and nothing is in flight (the network is smaller than k or
  every other candidate failed).
- The result is the exact ``k`` closest candidates that answered.

The machine does no I/O and knows no time: the caller sends the requests ``next()``
returns and reports each outcome with ``succeeded`` / ``failed``.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterator
from dataclasses import dataclass

from stack.base.net import Address

__all__ = ["Lookup", "Candidate", "NEW", "WAITING", "SUCCEEDED", "FAILED"]

NEW, WAITING, SUCCEEDED, FAILED = range(4)


@dataclass(slots=True)
class Candidate:
    peer_id: bytes
    node_id: int
    addr: Address
    state: int = NEW


class Lookup:
    def __init__(self, target: int, k: int = 20, alpha: int = 3) -> None:
        self.target = target
        self.k = k
        self.alpha = alpha
        self.in_flight = 0
        self._peers: dict[int, Candidate] = {}
        self._order: list[tuple[int, int]] = []

    def add(self, peer_id: bytes, node_id: int, addr: Address, state: int = NEW) -> None:
        """Add a candidate (``state=SUCCEEDED`` for a peer that already answered)."""
        if node_id in self._peers:
            return
        self._peers[node_id] = Candidate(peer_id, node_id, addr, state)
        insort(self._order, (node_id ^ self.target, node_id))

    def get(self, node_id: int) -> Candidate | None:
        return self._peers.get(node_id)

    def _window(self) -> Iterator[Candidate]:
        """The k closest candidates that have not failed, closest first."""
        seen = 0
        peers = self._peers
        for _, node_id in self._order:
            cand = peers[node_id]
            if cand.state == FAILED:
                continue
            yield cand
            seen += 1
            if seen >= self.k:
                return

    def next(self) -> list[Candidate]:
        """Candidates to query now (marked WAITING)."""
        out: list[Candidate] = []
        if self.in_flight >= self.alpha:
            return out
        for cand in self._window():
            if cand.state == NEW:
                cand.state = WAITING
                self.in_flight += 1
                out.append(cand)
                if self.in_flight >= self.alpha:
                    break
        return out

    def succeeded(self, node_id: int) -> None:
        self._finish(node_id, SUCCEEDED)

    def failed(self, node_id: int) -> None:
        self._finish(node_id, FAILED)

    def _finish(self, node_id: int, state: int) -> None:
        cand = self._peers.get(node_id)
        if cand is None or cand.state != WAITING:
            return
        cand.state = state
        self.in_flight -= 1

    @property
    def done(self) -> bool:
        all_answered = True
        for cand in self._window():
            if cand.state != SUCCEEDED:
                all_answered = False
                if cand.state == NEW:
                    return False
        return all_answered or self.in_flight == 0

    def unqueried(self) -> list[Candidate]:
        """Candidates never asked (still NEW), in the order they were added."""
        return [c for c in self._peers.values() if c.state == NEW]

    def closest(self, count: int | None = None) -> list[Candidate]:
        """The closest candidates that answered, closest first."""
        count = self.k if count is None else count
        out = []
        for _, node_id in self._order:
            cand = self._peers[node_id]
            if cand.state == SUCCEEDED:
                out.append(cand)
                if len(out) >= count:
                    break
        return out
