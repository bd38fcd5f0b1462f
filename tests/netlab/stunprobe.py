"""The lab's own minimal STUN check, run inside a lab namespace as a script.

It is deliberately independent of p2pstack's NAT detection so that the lab can be
validated on its own: when a ``p2pstack nat`` test fails, the probe tells whether the
router or the detector is wrong. Blocking sockets, aioice's STUN codec, nothing else.

    stunprobe.py ready HOST:PORT [--timeout S]   exit 0 once a binding request is answered
    stunprobe.py classify HOST:PORT              print JSON: public_address, nat, mapping,
                                                 filtering, hairpin (RFC 5780 sections 4.3-4.5)
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

from aioice import stun

RETRANSMIT = 0.1  # seconds between retransmissions of a request; the lab has no loss
CHANGE_IP, CHANGE_PORT = 0x4, 0x2


def request(change: int = 0) -> stun.Message:
    msg = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    if change:
        msg.attributes["CHANGE-REQUEST"] = change
    return msg


def transact(sock: socket.socket, msg: stun.Message, addr: tuple[str, int],
             timeout: float) -> tuple[stun.Message, tuple[str, int]] | None:
    """Send ``msg`` to ``addr`` (retransmitting) until a matching response or ``timeout``.

    Returns (response, source address), or None on timeout. A copy of the request itself
    arriving (hairpin) also counts as a match.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.sendto(bytes(msg), addr)
        resend = min(deadline, time.monotonic() + RETRANSMIT)
        while (left := resend - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, source = sock.recvfrom(2048)
            except TimeoutError:
                break
            try:
                reply = stun.parse_message(data)
            except ValueError:
                continue
            if reply.transaction_id == msg.transaction_id:
                return reply, source
    return None


def mapped(reply: stun.Message) -> tuple[str, int]:
    ip, port = reply.attributes["XOR-MAPPED-ADDRESS"]
    return ip, port


def new_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 0))
    return sock


def local_ip_towards(addr: tuple[str, int]) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(addr)  # no datagram is sent; only the route is looked up
        return sock.getsockname()[0]


def classify(server: tuple[str, int], timeout: float) -> dict[str, object]:
    # Mapping (RFC 5780 4.3): compare mapped addresses towards the server's addresses.
    with new_socket() as sock:
        first = transact(sock, request(), server, timeout)
        if first is None:
            return {"type": "udp-blocked"}
        reply, _ = first
        public = mapped(reply)
        other_ip, other_port = reply.attributes["OTHER-ADDRESS"]
        second = transact(sock, request(), (other_ip, server[1]), timeout)
        assert second is not None, "alternate address did not answer"
        if mapped(second[0]) == public:
            mapping = "endpoint-independent"
        else:
            third = transact(sock, request(), (other_ip, other_port), timeout)
            assert third is not None, "alternate address and port did not answer"
            mapping = ("address-dependent" if mapped(third[0]) == mapped(second[0])
                       else "address-and-port-dependent")
        # Hairpinning (4.5): our own request, sent to our public address, comes back.
        hairpin = transact(sock, request(), public, min(timeout, 0.5)) is not None
    # Filtering (4.4) on a fresh port: the mapping tests above left state in the NAT.
    negative = min(timeout, 0.5)
    with new_socket() as sock:
        assert transact(sock, request(), server, timeout) is not None
        if transact(sock, request(CHANGE_IP | CHANGE_PORT), server, negative):
            filtering = "endpoint-independent"
        elif transact(sock, request(CHANGE_PORT), server, negative):
            filtering = "address-dependent"
        else:
            filtering = "address-and-port-dependent"
    return {"public_address": f"{public[0]}:{public[1]}",
            "nat": public[0] != local_ip_towards(server),
            "mapping": mapping, "filtering": filtering, "hairpin": hairpin}


def parse_addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("ready", "classify"))
    parser.add_argument("server", type=parse_addr, help="HOST:PORT of the STUN server")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per test")
    args = parser.parse_args(argv)
    if args.action == "ready":
        with new_socket() as sock:
            answered = transact(sock, request(), args.server, args.timeout) is not None
        if not answered:
            print(f"no STUN answer from {args.server} in {args.timeout}s", file=sys.stderr)
        return 0 if answered else 1
    print(json.dumps(classify(args.server, args.timeout), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
