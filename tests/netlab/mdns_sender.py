"""Hostile mDNS responses for the LAN tests, sent inside a lab namespace (a script, run
with ``ip netns exec``): ``python mdns_sender.py MODE [ARG]`` multicasts to
224.0.0.251:5353 from port 5353 and prints what it sent as one JSON line.

Modes: ``malformed`` (TXT rdata that runs past its end, non-UTF-8, dnsaddrs naming two
peer ids, no dnsaddr at all), ``oversized`` (a 4000-byte TXT record), ``flood N`` (N
responses, each a new instance claiming a new peer id), ``claim PEER_ID HOST`` (instance
``liar`` says PEER_ID is at HOST:39001: a spoof when someone else answers there).
zeroconf's DNSOutgoing builds the packets (the same codec the node uses, so the DNS
framing itself is valid; the hostile part is what the records say).
"""

from __future__ import annotations

import json
import os
import socket
import sys

from zeroconf._dns import DNSPointer, DNSText
from zeroconf._protocol.outgoing import DNSOutgoing
from zeroconf.const import _CLASS_IN, _FLAGS_AA, _FLAGS_QR_RESPONSE, _TYPE_PTR, _TYPE_TXT

sys.path.insert(0, os.getcwd())
from stack.base.identity import PeerId

SERVICE = "_p2p._udp.local."


def packet(instance: str, rdata: bytes) -> list[bytes]:
    out = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA)
    name = f"{instance}.{SERVICE}"
    out.add_answer_at_time(DNSPointer(SERVICE, _TYPE_PTR, _CLASS_IN, 360, name), 0)
    out.add_answer_at_time(DNSText(name, _TYPE_TXT, _CLASS_IN, 360, rdata), 0)
    return out.packets()  # a record too large to share a packet gets one of its own


def txt(*strings: bytes) -> bytes:
    return b"".join(bytes([len(s)]) + s for s in strings)


def quic(host: str, peer: PeerId) -> bytes:
    return f"dnsaddr=/ip4/{host}/udp/39001/quic-v1/p2p/{peer}".encode()


def main() -> None:
    mode = sys.argv[1]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
    sock.bind(("0.0.0.0", 5353))
    a, b = PeerId.from_public_key(b"\x01" * 32), PeerId.from_public_key(b"\x02" * 32)
    packets: list[bytes] = []
    if mode == "malformed":
        for instance, rdata in (("runs-past-end", b"\x40dnsaddr=/ip4/10.0.0.9"),
                                ("not-utf8", txt(b"dnsaddr=\xff\xfe")),
                                ("two-ids", txt(quic("10.1.0.9", a), quic("10.1.0.8", b))),
                                ("no-dnsaddr", txt(b"hello=world"))):
            packets += packet(instance, rdata)
    elif mode == "oversized":
        packets += packet("oversized", txt(*[quic("10.1.0.9", a)] * 50))
    elif mode == "claim":
        packets += packet("liar", txt(quic(sys.argv[3], PeerId.parse(sys.argv[2]))))
    elif mode == "flood":
        for i in range(int(sys.argv[2])):
            peer = PeerId.from_public_key(os.urandom(32))
            packets += packet(f"flood{i}", txt(quic(f"10.1.{i % 250}.{1 + i % 200}", peer)))
    for data in packets:
        sock.sendto(data, ("224.0.0.251", 5353))
    print(json.dumps({"mode": mode, "sent": len(packets),
                      "bytes": sum(len(p) for p in packets)}))


if __name__ == "__main__":
    main()
