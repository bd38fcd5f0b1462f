"""Demultiplexing the node's single UDP port (DESIGN.md section 3).

STUN, QUIC, the DHT and p2pstack's other datagram protocols share one socket, so the
NAT mapping STUN reports is the one the others use. The first byte decides (RFC 7983 /
RFC 9443 style):

    first byte   | protocol
    -------------+-----------------------------------------------------------------
    0x00 - 0x03  | STUN, if the magic cookie 0x2112A442 sits at offset 4
    0x04 - 0x0F  | p2pstack's own datagrams; the byte names the sub-protocol
    0x40 - 0x7F  | QUIC short header (fixed bit set)
    0xC0 - 0xFF  | QUIC long header
    anything else| counted and dropped

0x10-0x3F stays free (ZRTP, DTLS); 0x80-0xBF is QUIC with the fixed bit clear, which
RFC 9000 says to discard.
"""

from __future__ import annotations

from collections import Counter
from enum import Enum

from stack.base.net import Datagram, Receiver

__all__ = [
    "Kind",
    "classify",
    "PortDemux",
    "P2P_FIRST_BYTES",
    "DHT_BYTE",
    "PUNCH_BYTE",
    "RELAY_BYTE",
]

STUN_MAGIC_COOKIE = b"\x21\x12\xa4\x42"
P2P_FIRST_BYTES = range(0x04, 0x10)
DHT_BYTE = 0x04
PUNCH_BYTE = 0x05
RELAY_BYTE = 0x06


class Kind(Enum):
    STUN = "stun"
    QUIC = "quic"
    P2P = "p2p"
    UNKNOWN = "unknown"


def classify(data: bytes) -> Kind:
    if not data:
        return Kind.UNKNOWN
    first = data[0]
    if first <= 0x03:
        return Kind.STUN if data[4:8] == STUN_MAGIC_COOKIE else Kind.UNKNOWN
    if first < 0x10:
        return Kind.P2P
    if first & 0x40 and (first & 0x80 == 0 or first >= 0xC0):
        return Kind.QUIC
    return Kind.UNKNOWN


class PortDemux:
    """A ``Receiver`` that splits each batch by protocol and hands each handler its part.

    Handlers are themselves ``Receiver``s, so a driver still sees whole batches and can
    flush once per batch. Datagrams nobody handles are counted in ``dropped`` by reason.
    """

    def __init__(self) -> None:
        self._stun: Receiver | None = None
        self._quic: Receiver | None = None
        self._p2p: dict[int, Receiver] = {}
        self.dropped: Counter[str] = Counter()

    def register_stun(self, handler: Receiver) -> None:
        self._stun = handler

    def register_quic(self, handler: Receiver) -> None:
        self._quic = handler

    def register_p2p(self, first_byte: int, handler: Receiver) -> None:
        if first_byte not in P2P_FIRST_BYTES:
            raise ValueError(f"first byte {first_byte:#x} is outside p2pstack's range")
        self._p2p[first_byte] = handler

    def __call__(self, batch: list[Datagram]) -> None:
        if len(batch) == 1:
            # One datagram of a registered p2p protocol (the common batch on a quiet
            # socket, and every batch in a simulation): straight to its handler.
            data = batch[0][0]
            handler = self._p2p.get(data[0]) if data else None
            if handler is not None:  # registered bytes are all within P2P_FIRST_BYTES
                handler(batch)
                return
        stun: list[Datagram] = []
        quic: list[Datagram] = []
        p2p: dict[int, list[Datagram]] = {}
        for item in batch:
            kind = classify(item[0])
            if kind is Kind.STUN:
                stun.append(item)
            elif kind is Kind.QUIC:
                quic.append(item)
            elif kind is Kind.P2P:
                p2p.setdefault(item[0][0], []).append(item)
            else:
                self.dropped["unknown"] += 1
        self._deliver(self._stun, stun, "stun")
        self._deliver(self._quic, quic, "quic")
        for first_byte, items in p2p.items():
            self._deliver(self._p2p.get(first_byte), items, f"p2p-{first_byte:#04x}")

    def _deliver(self, handler: Receiver | None, items: list[Datagram], name: str) -> None:
        if not items:
            return
        if handler is None:
            self.dropped[f"no-handler-{name}"] += len(items)
            return
        handler(items)


