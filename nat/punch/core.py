"""Hole punching, the sans-I/O part (libp2p ``relay/DCUtR.md`` semantics, our own wire).

Datagrams (first byte ``PUNCH_BYTE`` = 0x05 on the node's shared UDP port)::

    0x05 0x01 nonce(8) zeros(6)          REFLECT request: "what address do you see?"
    0x05 0x02 nonce(8) ipv4(4) port(2)   REFLECT reply: the request's source address
    0x05 0x03 token(8) random(6)         PUNCH: opens our NAT toward the peer; the token
                                         (agreed over the authenticated relayed
                                         connection) tells the peer whose it is

All three are 16 bytes, so a reflect reply is never larger than its request (no
amplification). Anything else with the first byte is a counted drop.

Messages over the relayed connection (``/p2pstack/dcutr/1``, msgpack maps, at most
``MAX_MESSAGE`` bytes), one round per attempt (``A`` dialed the relayed connection, ``B``
accepted it and drives the exchange)::

    B -> A  {"t": "connect", "addrs": [...], "token": bytes(8), "attempt": n}
    A -> B  {"t": "connect", "addrs": [...], "public": bool}    (B measures the RTT)
    B -> A  {"t": "sync"}                                       (B waits RTT / 2)
    ... A dials B's candidates (QUIC client) from its shared port at once; B sends PUNCH
        packets to A's candidates when its half round trip is up; each side also
        accepts what the other's packets reveal (a PUNCH from an address not among the
        candidates: the port a symmetric NAT chose toward us)
    A -> B  {"t": "result", "ok": bool, "reason": str}

With ``public`` (A's own address is what B's relay sees of it) B first dials A's
candidates directly (connection reversal) and punches only if that fails.

Trust: candidate addresses are claims of an authenticated peer (the relayed QUIC
connection is end to end); what a PUNCH packet's source says is a claim of whoever
knows the token, and the QUIC handshake that follows authenticates the peer anyway.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass
from typing import Any

import msgpack

from stack.base.net import Address
from stack.base.port import PUNCH_BYTE

__all__ = ["PROTO_DCUTR", "MAX_MESSAGE", "DATAGRAM_SIZE", "REFLECT_REQUEST",
           "REFLECT_REPLY", "PUNCH", "encode_reflect_request", "encode_reflect_reply",
           "encode_punch", "decode_datagram", "Datagram", "MalformedPunch",
           "encode_message", "decode_message", "Puncher", "PeerReflexive", "MAX_ATTEMPTS",
           "sync_delay"]

PROTO_DCUTR = b"/p2pstack/dcutr/1"
MAX_MESSAGE = 4096
DATAGRAM_SIZE = 16
REFLECT_REQUEST = 0x01
REFLECT_REPLY = 0x02
PUNCH = 0x03
MAX_ATTEMPTS = 3          # libp2p's DCUtR: up to 3 attempts, each with a fresh RTT
MAX_ADDRS = 8             # candidate addresses per side


class MalformedPunch(ValueError):
    """A punch datagram or coordination message that does not parse (remote garbage:
    callers count it, never raise it further)."""


@dataclass(frozen=True)
class Datagram:
    kind: int              # REFLECT_REQUEST, REFLECT_REPLY or PUNCH
    nonce: bytes           # the nonce (reflect) or token (punch), 8 bytes
    address: Address | None = None   # REFLECT_REPLY: the address the replier saw


def encode_reflect_request(nonce: bytes) -> bytes:
    return bytes([PUNCH_BYTE, REFLECT_REQUEST]) + _eight(nonce) + bytes(6)


def encode_reflect_reply(nonce: bytes, seen: Address) -> bytes:
    ip = ipaddress.IPv4Address(seen[0]).packed
    return bytes([PUNCH_BYTE, REFLECT_REPLY]) + _eight(nonce) + ip + seen[1].to_bytes(2, "big")


def encode_punch(token: bytes, rng: random.Random) -> bytes:
    return bytes([PUNCH_BYTE, PUNCH]) + _eight(token) + rng.randbytes(6)


def _eight(value: bytes) -> bytes:
    if len(value) != 8:
        raise ValueError("nonces and tokens are 8 bytes")
    return value


def decode_datagram(data: bytes) -> Datagram:
    if len(data) != DATAGRAM_SIZE or data[0] != PUNCH_BYTE:
        raise MalformedPunch(f"{len(data)}-byte datagram")
    kind, nonce = data[1], data[2:10]
    if kind == REFLECT_REPLY:
        port = int.from_bytes(data[14:16], "big")
        return Datagram(kind, nonce, (str(ipaddress.IPv4Address(data[10:14])), port))
    if kind in (REFLECT_REQUEST, PUNCH):
        return Datagram(kind, nonce)
    raise MalformedPunch(f"unknown punch datagram type {kind:#x}")


def encode_message(message: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb(message)
    if len(data) > MAX_MESSAGE:
        raise ValueError("dcutr message too large")
    return data


def decode_message(data: bytes, expected: str) -> dict[str, Any]:
    """The message of type ``expected``; ``MalformedPunch`` for anything else. Addresses
    are checked to be ``HOST:PORT`` strings (at most ``MAX_ADDRS`` of them)."""
    try:
        obj = msgpack.unpackb(data)
    except Exception as exc:  # msgpack raises several unrelated types
        raise MalformedPunch(f"undecodable message: {type(exc).__name__}") from None
    if not isinstance(obj, dict) or obj.get("t") != expected:
        raise MalformedPunch(f"expected {expected!r}, got {str(obj)[:40]!r}")
    if expected == "connect":
        addrs = obj.get("addrs")
        if not isinstance(addrs, list) or len(addrs) > MAX_ADDRS:
            raise MalformedPunch("connect without a list of addresses")
        obj["addrs"] = [_address(a) for a in addrs]
    return obj


def _address(text: object) -> Address:
    if not isinstance(text, str) or ":" not in text:
        raise MalformedPunch(f"not HOST:PORT: {str(text)[:40]!r}")
    host, _, port = text.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
        number = int(port)
    except ValueError:
        raise MalformedPunch(f"not IPv4:PORT: {text[:40]!r}") from None
    if not 0 < number < 65536:
        raise MalformedPunch(f"bad port in {text[:40]!r}")
    return host, number


def sync_delay(rtt: float) -> float:
    """How long B waits after sending SYNC before it punches: half the measured round
    trip, when A (who dials on receipt) has the SYNC."""
    return max(0.0, rtt / 2)


@dataclass(frozen=True)
class PeerReflexive:
    """A PUNCH with our token arrived from ``address``, which is not a candidate: the
    mapping the peer's NAT chose toward us (a symmetric NAT's new port)."""
    address: Address


class Puncher:
    """One attempt's punch traffic (the side that does not dial), and the recognition
    of the peer's punches (either side).

    ``start(now, targets, until)`` punches every ``interval`` seconds (jittered by the
    injected rng) to every target until ``until`` or ``stop()``; ``receive`` takes a
    decoded PUNCH and reports an unknown source once as ``PeerReflexive``."""

    def __init__(self, token: bytes, rng: random.Random, *, interval: float = 0.1) -> None:
        self.token = _eight(token)
        self._rng = rng
        self._interval = interval
        self._targets: list[Address] = []
        self._known: set[Address] = set()
        self._until = 0.0
        self._next: float | None = None
        self._out: list[tuple[bytes, Address]] = []
        self._events: list[PeerReflexive] = []
        self.sent = 0
        self.received = 0

    def expect(self, addrs: list[Address]) -> None:
        """The peer's candidates: punches from these are no news."""
        self._known.update(addrs)

    def start(self, now: float, targets: list[Address], until: float) -> None:
        self._targets = list(targets)
        self._known.update(targets)
        self._until = until
        self._next = now
        self.handle_timer(now)

    def stop(self) -> None:
        self._next = None
        self._targets = []

    def receive(self, datagram: Datagram, addr: Address, now: float) -> None:
        if datagram.kind != PUNCH or datagram.nonce != self.token:
            return
        self.received += 1
        if addr not in self._known:
            self._known.add(addr)
            self._events.append(PeerReflexive(addr))

    def outgoing(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def next_timer(self) -> float | None:
        return self._next

    def handle_timer(self, now: float) -> None:
        if self._next is None or now < self._next:
            return
        if now >= self._until:
            self.stop()
            return
        for target in self._targets:
            self._out.append((encode_punch(self.token, self._rng), target))
            self.sent += 1
        self._next = now + self._interval * (0.5 + self._rng.random())

    def next_event(self) -> PeerReflexive | None:
        return self._events.pop(0) if self._events else None
