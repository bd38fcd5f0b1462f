"""Sans-I/O STUN client transactions over UDP (RFC 8489 section 6.2.1).

Schedule: the request is sent at t0, then again after RTO, 2*RTO, 4*RTO ... (the
interval doubles) until ``rc`` sends have gone out; ``rm * rto`` after the last send the
transaction times out. Defaults RTO = 0.5 s, Rc = 7, Rm = 16 give sends at 0, 0.5, 1.5,
3.5, 7.5, 15.5, 31.5 s and a timeout at 39.5 s. ``RetransmitConfig.timeout`` caps the
whole transaction (the CLI uses it for ``--timeout``).

A response is matched by transaction id *and* source address: the source must be the
address the request went to, or ``expect_from`` when the request asked the server to
answer from elsewhere (RFC 5780 CHANGE-REQUEST). Anything else is a counted drop in
``StunClient.dropped``. Responses carrying unknown comprehension-required attributes are
discarded (RFC 8489 section 6.3.3) and the transaction keeps retransmitting.

Core interface (DESIGN.md section 2): ``receive(data, addr, now)``, ``outgoing()``,
``next_timer()``, ``handle_timer(now)``, ``next_event()``. Times are seconds (floats)
on whatever clock the driver uses.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from dataclasses import dataclass

from stack.base.net import Address

from nat.stun.codec import (
    Class,
    Decoded,
    StunDecodeError,
    binding_request,
    decode,
    new_transaction_id,
)

__all__ = [
    "RetransmitConfig",
    "BindingSuccess",
    "BindingError",
    "TransactionTimeout",
    "StunEvent",
    "StunClient",
]


@dataclass(frozen=True)
class RetransmitConfig:
    """RFC 8489 section 6.2.1 parameters. ``timeout``: optional cap on one transaction (s)."""

    rto: float = 0.5
    rc: int = 7
    rm: int = 16
    timeout: float | None = None

    def __post_init__(self) -> None:
        if self.rto <= 0 or self.rc < 1 or self.rm < 0:
            raise ValueError("rto must be > 0, rc >= 1, rm >= 0")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError("timeout must be > 0")


@dataclass(frozen=True)
class BindingSuccess:
    """A Binding success response.

    ``server``: where the request was sent. ``source``: where the response came from.
    ``mapped_address``: XOR-MAPPED-ADDRESS (MAPPED-ADDRESS from old servers): our address
    as the server saw it. ``response_origin`` / ``other_address``: RFC 5780 attributes, or
    None. ``rtt``: seconds since the *first* send.
    """

    transaction_id: bytes
    server: Address
    source: Address
    mapped_address: Address
    response_origin: Address | None
    other_address: Address | None
    rtt: float


@dataclass(frozen=True)
class BindingError:
    """A Binding error response (ERROR-CODE ``code``, ``reason`` phrase)."""

    transaction_id: bytes
    server: Address
    source: Address
    code: int
    reason: str


@dataclass(frozen=True)
class TransactionTimeout:
    """No matching response within the schedule (or the cap); ``sends`` datagrams went out."""

    transaction_id: bytes
    server: Address
    sends: int


StunEvent = BindingSuccess | BindingError | TransactionTimeout


@dataclass
class _Transaction:
    request: bytes
    server: Address
    expect_from: Address
    started: float
    next_send: float
    interval: float
    sends: int
    deadline: float  # absolute: when it times out if nothing matched


class StunClient:
    """Binding transactions, many at once, sans-I/O.

    ``rng``: a ``random.Random`` for reproducible transaction ids (simulation); the
    default draws them from ``os.urandom``.
    """

    def __init__(self, config: RetransmitConfig | None = None,
                 rng: random.Random | None = None) -> None:
        self.config = config or RetransmitConfig()
        self._rng = rng
        self._pending: dict[bytes, _Transaction] = {}
        self._out: list[tuple[bytes, Address]] = []
        self._events: deque[StunEvent] = deque()
        self.dropped: Counter[str] = Counter()

    # -- API ---------------------------------------------------------------------------

    def request(self, server: Address, now: float, *, change_ip: bool = False,
                change_port: bool = False, expect_from: Address | None = None) -> bytes:
        """Start a Binding transaction to ``server``; returns its transaction id."""
        txid = new_transaction_id(self._rng)
        while txid in self._pending:  # 96 random bits: only a broken rng repeats
            txid = new_transaction_id(self._rng)
        data = binding_request(txid, change_ip=change_ip, change_port=change_port)
        cfg = self.config
        deadline = now + _schedule_length(cfg)
        if cfg.timeout is not None:
            deadline = min(deadline, now + cfg.timeout)
        self._pending[txid] = _Transaction(
            request=data, server=server, expect_from=expect_from or server, started=now,
            next_send=now, interval=cfg.rto, sends=0, deadline=deadline)
        self._send_due(now)
        return txid

    def cancel(self, transaction_id: bytes) -> None:
        """Forget a transaction (no event will come for it)."""
        self._pending.pop(transaction_id, None)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def owns(self, transaction_id: bytes) -> bool:
        return transaction_id in self._pending

    # -- core interface ------------------------------------------------------------------

    def receive(self, data: bytes, addr: Address, now: float) -> None:
        """Feed one datagram. Malformed or unmatched ones are counted in ``dropped``."""
        try:
            decoded = decode(data)
        except StunDecodeError as exc:
            self.dropped[exc.reason] += 1
            return
        self.receive_decoded(decoded, addr, now)

    def receive_decoded(self, decoded: Decoded, addr: Address, now: float) -> None:
        """Like ``receive`` for a message the caller already decoded."""
        message = decoded.message
        if message.message_class not in (Class.RESPONSE, Class.ERROR):
            self.dropped["not-a-response"] += 1
            return
        tx = self._pending.get(message.transaction_id)
        if tx is None:
            self.dropped["unknown-transaction"] += 1
            return
        if addr != tx.expect_from:
            self.dropped["wrong-source"] += 1
            return
        if decoded.unknown_required:
            self.dropped["unknown-attribute"] += 1
            return
        attrs = message.attributes
        if message.message_class == Class.ERROR:
            code, reason = attrs.get("ERROR-CODE", (0, ""))
            event: StunEvent = BindingError(message.transaction_id, tx.server, addr,
                                            code, reason)
        else:
            mapped = attrs.get("XOR-MAPPED-ADDRESS") or attrs.get("MAPPED-ADDRESS")
            if mapped is None:
                self.dropped["no-mapped-address"] += 1
                return
            event = BindingSuccess(
                transaction_id=message.transaction_id, server=tx.server, source=addr,
                mapped_address=mapped, response_origin=attrs.get("RESPONSE-ORIGIN"),
                other_address=attrs.get("OTHER-ADDRESS"), rtt=now - tx.started)
        del self._pending[message.transaction_id]
        self._events.append(event)

    def outgoing(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def next_timer(self) -> float | None:
        times = [min(tx.next_send, tx.deadline) for tx in self._pending.values()]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        for txid, tx in list(self._pending.items()):
            if now >= tx.deadline:
                del self._pending[txid]
                self._events.append(TransactionTimeout(txid, tx.server, tx.sends))
        self._send_due(now)

    def next_event(self) -> StunEvent | None:
        return self._events.popleft() if self._events else None

    # -- internals -----------------------------------------------------------------------

    def _send_due(self, now: float) -> None:
        rc = self.config.rc
        for tx in self._pending.values():
            if tx.sends < rc and now >= tx.next_send:
                self._out.append((tx.request, tx.server))
                tx.sends += 1
                if tx.sends < rc:
                    tx.next_send += tx.interval  # from the schedule, not from a late timer
                    tx.interval *= 2
                else:
                    tx.next_send = float("inf")


def _schedule_length(cfg: RetransmitConfig) -> float:
    """Seconds from the first send to the timeout: (2**(rc-1) - 1 + rm) * rto."""
    return float((2 ** (cfg.rc - 1)) - 1 + cfg.rm) * cfg.rto
