"""Benchmark: STUN Binding requests served per second by one node's port.

Claim (issue 3 section 6): our port -- ``UdpNetwork`` (add_reader + batch drain) ->
``PortDemux`` -> ``StunService`` -> ``StunServer`` core (decode, rate limit, encode) --
serves at least 2x what a plain ``asyncio.DatagramProtocol`` echo server answers, on the
same machine, in the same run, with the same client.

How: each server runs in its own subprocess on 127.0.0.1 (one at a time, alternating,
``--rounds`` each). The client (this process) blasts pre-built Binding requests from
``--sockets`` sockets with at most ``--window`` outstanding per socket, counts the
responses for ``--seconds``, and reports the medians and the ratio. Bounded in count
(``--max-requests``) and time; loopback only. The STUN server runs with its rate limit
*on* (set high) so the limiter's cost is measured.

    python benchmarks/stun.py [--rounds 3] [--seconds 2] [--sockets 4] [--window 32]
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import os
import selectors
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# What nat.detect sends: a Binding request with FINGERPRINT (28 bytes). Built from raw
# bytes so the client process imports nothing of ours.
_HEAD = bytes.fromhex("000100082112a442") + b"benchmark-tx"
REQUEST = _HEAD + bytes.fromhex("80280004") + (
    (binascii.crc32(_HEAD[:2] + b"\x00\x08" + _HEAD[4:]) ^ 0x5354554E).to_bytes(4, "big"))


# -- servers (subprocesses) ---------------------------------------------------------------

async def serve_stun() -> None:
    from nat.stun.server import ServerConfig, StunServer
    from nat.stun.service import StunService
    from stack.base.clock import SystemClock
    from stack.base.net import UdpNetwork
    from stack.base.port import PortDemux

    demux = PortDemux()
    ep = await UdpNetwork().bind(("127.0.0.1", 0), demux)
    service = StunService(StunServer(ServerConfig(primary=ep.local_address, rate=1e9,
                                                  burst=1e9)), SystemClock())
    service.add_endpoint(ep)
    demux.register_stun(service.receiver(ep.local_address))
    await _announce_and_wait(ep.local_address[1])


async def serve_echo() -> None:
    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data, addr)

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    await _announce_and_wait(transport.get_extra_info("sockname")[1])


async def _announce_and_wait(port: int) -> None:
    print(port, flush=True)
    # Run until the parent closes our stdin (or a hard cap, so nothing outlives the run).
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_reader(sys.stdin.fileno(), lambda: done.done() or done.set_result(None))
    await asyncio.wait_for(done, 600)


# -- client ---------------------------------------------------------------------------------

def blast(port: int, seconds: float, sockets: int, window: int,
          max_requests: int) -> tuple[float, float]:
    """(responses per second, fraction of requests unanswered) for 127.0.0.1:port."""
    dest = ("127.0.0.1", port)
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(sockets):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind(("127.0.0.1", 0))
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
    outstanding = {s: 0 for s in socks}
    last_reply = {s: 0.0 for s in socks}
    sent = received = 0
    try:
        # warm-up so the server's first-packet costs are not timed
        start = time.perf_counter()
        deadline = start + seconds
        counted_from = start + min(0.3, seconds / 4)
        counted = 0
        while True:
            now = time.perf_counter()
            if now >= deadline or sent >= max_requests:
                break
            for s in socks:
                # a lost datagram would shrink the window forever: reopen it after 50 ms
                if outstanding[s] and now - last_reply[s] > 0.05:
                    outstanding[s] = 0
                while outstanding[s] < window:
                    try:
                        s.sendto(REQUEST, dest)
                    except BlockingIOError:
                        break
                    outstanding[s] += 1
                    sent += 1
            for key, _ in sel.select(0.01):
                s = key.fileobj
                while True:
                    try:
                        s.recv(2048)
                    except BlockingIOError:
                        break
                    received += 1
                    if now >= counted_from:
                        counted += 1
                    outstanding[s] = max(0, outstanding[s] - 1)
                    last_reply[s] = now
        return counted / (time.perf_counter() - counted_from), 1 - received / max(sent, 1)
    finally:
        for s in socks:
            sel.unregister(s)
            s.close()
        sel.close()


def run_round(kind: str, args: argparse.Namespace) -> tuple[float, float]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        return blast(port, args.seconds, args.sockets, args.window, args.max_requests)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", choices=["stun", "echo"], help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--sockets", type=int, default=4)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--max-requests", type=int, default=2_000_000)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve_stun() if args.serve == "stun" else serve_echo())
        return 0
    rates: dict[str, list[float]] = {"echo": [], "stun": []}
    lost: dict[str, list[float]] = {"echo": [], "stun": []}
    for _ in range(args.rounds):
        for kind in ("echo", "stun"):  # alternate: both see the same machine noise
            rate, unanswered = run_round(kind, args)
            rates[kind].append(rate)
            lost[kind].append(unanswered)
    echo, stun = statistics.median(rates["echo"]), statistics.median(rates["stun"])
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"client: {args.sockets} sockets x window {args.window}, {args.seconds}s x "
          f"{args.rounds} rounds, alternating")
    for kind in ("echo", "stun"):
        print(f"  {kind:5s} " + "  ".join(f"{r:9.0f}" for r in rates[kind])
              + f"   median {statistics.median(rates[kind]):9.0f} /s"
              + f"   unanswered {100 * statistics.median(lost[kind]):.1f}%")
    print(f"STUN port (UdpNetwork+PortDemux+StunServer) / asyncio DatagramProtocol echo: "
          f"{stun / echo:.2f}x (target >= 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
