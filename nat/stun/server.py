"""Sans-I/O STUN server role (RFC 8489 section 6.3, RFC 5780 section 6).

Every p2pstack node answers Binding requests on its port. Rules, in the order applied:

    1. per-source-IP token bucket (``rate`` per second, ``burst``): over it -> dropped
       (``dropped["rate-limited"]``), checked before decoding so a flood costs little
    2. not well-formed (``nat.stun.codec`` table) -> dropped, counted by reason
       (a bad FINGERPRINT included: RFC 8489 section 7.3 says discard silently)
    3. not a request: indications are keep-alives, responses are not ours -> counted
    4. not Binding -> dropped ("unsupported-method")
    5. unknown comprehension-required attributes -> 420 error response with
       UNKNOWN-ATTRIBUTES (RFC 8489 section 6.3.1)
    6. CHANGE-REQUEST that this server cannot honour (no alternate ip/port) -> 420 listing
       CHANGE-REQUEST (RFC 5780 section 6.1)
    7. otherwise -> success with XOR-MAPPED-ADDRESS and MAPPED-ADDRESS (old clients); in
       the RFC 5780 role also RESPONSE-ORIGIN and OTHER-ADDRESS, sent from the endpoint
       that CHANGE-REQUEST names.

RFC 5780 role: the server owns up to four endpoints, (primary ip | alternate ip) x
(primary port | alternate port). A request that arrived on (ip, port) is answered from
(other ip if change-ip else ip, other port if change-port else port); OTHER-ADDRESS is
(other ip, other port) relative to where the request arrived. Without an alternate the
server is a plain RFC 8489 server (no RESPONSE-ORIGIN / OTHER-ADDRESS).

FINGERPRINT is added to a response when the request carried one. Outside the RFC 5780
role, a Binding request with no attribute but FINGERPRINT is answered without a full
decode (``codec.plain_binding_request``): the same answer, a third of the cost.
``outgoing()`` yields ``(data, destination, via)``: ``via`` is the local address of the
endpoint to send from.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from stack.base.net import Address
from stack.base.ratelimit import TokenBuckets

from nat.stun.codec import (
    CHANGE_IP,
    CHANGE_PORT,
    Class,
    Decoded,
    Message,
    Method,
    StunDecodeError,
    decode,
    encode,
    encode_binding_success,
    plain_binding_request,
)

__all__ = ["ServerConfig", "StunServer", "ATTR_CHANGE_REQUEST"]

ATTR_CHANGE_REQUEST = 0x0003


@dataclass(frozen=True)
class ServerConfig:
    """Server settings.

    ``primary``: the local (ip, port) requests normally arrive on. ``alternate_ip`` /
    ``alternate_port``: the RFC 5780 alternates (both None = plain server). ``rate``:
    tokens per second per source IP, ``burst``: bucket size; ``rate=None`` disables the
    limit. ``max_sources``: bound on the bucket table. ``software``: SOFTWARE attribute.
    """

    primary: Address
    alternate_ip: str | None = None
    alternate_port: int | None = None
    rate: float | None = 50.0
    burst: float = 100.0
    max_sources: int = 10_000
    software: str | None = None

    @property
    def rfc5780(self) -> bool:
        return self.alternate_ip is not None or self.alternate_port is not None

    def local_addresses(self) -> list[Address]:
        """Every endpoint this configuration answers on (1, 2 or 4)."""
        ips = [self.primary[0]] + ([self.alternate_ip] if self.alternate_ip else [])
        ports = [self.primary[1]] + ([self.alternate_port] if self.alternate_port else [])
        return [(ip, port) for ip in ips for port in ports]


class StunServer:
    """Answers Binding requests; sans-I/O (reads no clock, touches no socket)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._out: list[tuple[bytes, Address, Address]] = []
        self._buckets = (None if config.rate is None
                         else TokenBuckets(config.rate, config.burst, config.max_sources))
        self.dropped: Counter[str] = Counter()
        self.answered = 0
        self.errors_sent = 0

    def receive(self, data: bytes, addr: Address, now: float,
                local: Address | None = None) -> None:
        """Feed one datagram that arrived on ``local`` (default: the primary endpoint)."""
        if not self._admit(addr[0], now):
            self.dropped["rate-limited"] += 1
            return
        cfg = self.config
        if not cfg.rfc5780:
            plain = plain_binding_request(data)
            if plain is not None:  # the common case, without building a Message
                self._out.append((encode_binding_success(
                    plain[0], addr, software=cfg.software, fingerprint=plain[1]),
                    addr, local or cfg.primary))
                self.answered += 1
                return
        try:
            decoded = decode(data)
        except StunDecodeError as exc:
            self.dropped[exc.reason] += 1
            return
        self._answer(decoded, addr, local or self.config.primary)

    def receive_decoded(self, decoded: Decoded, addr: Address, now: float,
                        local: Address | None = None) -> None:
        """Like ``receive`` for a message the caller already decoded."""
        if not self._admit(addr[0], now):
            self.dropped["rate-limited"] += 1
            return
        self._answer(decoded, addr, local or self.config.primary)

    def outgoing(self) -> list[tuple[bytes, Address, Address]]:
        out, self._out = self._out, []
        return out

    def next_timer(self) -> float | None:
        return None  # stateless apart from the buckets, which refill lazily

    def handle_timer(self, now: float) -> None:
        return None

    # -- internals -----------------------------------------------------------------------

    def _answer(self, decoded: Decoded, addr: Address, local: Address) -> None:
        message = decoded.message
        if message.message_class != Class.REQUEST:
            self.dropped["indication" if message.message_class == Class.INDICATION
                         else "not-a-request"] += 1
            return
        if message.message_method != Method.BINDING:
            self.dropped["unsupported-method"] += 1
            return
        if decoded.unknown_required:
            self._error(decoded, addr, local, decoded.unknown_required)
            return
        change = message.attributes.get("CHANGE-REQUEST", 0)
        cfg = self.config
        if ((change & CHANGE_IP and cfg.alternate_ip is None)
                or (change & CHANGE_PORT and cfg.alternate_port is None)):
            self._error(decoded, addr, local, (ATTR_CHANGE_REQUEST,))
            return
        via = local
        origin = other = None
        if cfg.rfc5780:
            via = (self._other_ip(local[0]) if change & CHANGE_IP else local[0],
                   self._other_port(local[1]) if change & CHANGE_PORT else local[1])
            origin = via
            other = (self._other_ip(local[0]), self._other_port(local[1]))
        data = encode_binding_success(message.transaction_id, addr, response_origin=origin,
                                      other_address=other, software=cfg.software,
                                      fingerprint=decoded.fingerprint)
        self._out.append((data, addr, via))
        self.answered += 1

    def _error(self, decoded: Decoded, addr: Address, local: Address,
               unknown: tuple[int, ...]) -> None:
        attributes: dict[str, Any] = {"ERROR-CODE": (420, "Unknown Attribute")}
        response = Message(Method.BINDING, Class.ERROR, decoded.transaction_id, attributes)
        data = encode(response, fingerprint=decoded.fingerprint, unknown_attributes=unknown)
        self._out.append((data, addr, local))
        self.errors_sent += 1

    def _other_ip(self, ip: str) -> str:
        cfg = self.config
        if cfg.alternate_ip is None:
            return ip
        return cfg.alternate_ip if ip == cfg.primary[0] else cfg.primary[0]

    def _other_port(self, port: int) -> int:
        cfg = self.config
        if cfg.alternate_port is None:
            return port
        return cfg.alternate_port if port == cfg.primary[1] else cfg.primary[1]

    def _admit(self, ip: str, now: float) -> bool:
        """Token bucket per source IP (``config.rate`` None: no limit)."""
        return self._buckets is None or self._buckets.allow(ip, now)
