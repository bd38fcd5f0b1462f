"""Benchmark: what a TURN path costs against the direct one and a circuit relay, same run.

On 127.0.0.1: coturn (a separate process, long-term credentials) and, in one process and
event loop, a circuit relay R (``relay_service="full"``, every cap lifted), a target A
holding a reservation on R and a TURN allocation on coturn, and a dialer B (no TURN
client) with three QUIC connections to A: direct, through R, and through coturn (QUIC
end to end to A's relayed address). Per round, rotating the order: the median round trip
of ``--pings`` pings and echo throughput (``--echoes`` 60 KB messages, both ways). The
baseline is the direct connection. Hole punching is off (it would upgrade the relayed
connection to a direct one and close it). No target: this records what each fallback costs.
coturn relays in its own process (C, on the other core); the circuit relay runs in
Python on the same loop as both ends.

    python benchmarks/turn.py [--rounds 5] [--pings 50] [--echoes 20]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402

from nat.relay.limits import RelayLimits  # noqa: E402
from stack.node import Node, TurnAllocationChanged  # noqa: E402
from stack.node.config import NodeConfig  # noqa: E402

MESSAGE = b"\xa5" * 60000
PATHS = ("direct", "relayed", "turn")


def start_coturn(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    base = random.Random().randrange(20000, 60000, 100)
    argv = ["turnserver", "-n", "--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1",
            "--listening-port", str(base), "--min-port", str(base + 10),
            "--max-port", str(base + 90), "--lt-cred-mech", "--user", "user:pass",
            "--realm", "bench.test", "--allow-loopback-peers", "--no-tls", "--no-dtls",
            "--no-tcp", "--no-tcp-relay", "--no-cli", "--relay-threads", "1",
            "--log-file", str(workdir / "turn.log"), "--simple-log", "--no-stdout-log",
            "--pidfile", str(workdir / "turn.pid"), "--db", str(workdir / "turndb")]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    request = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + os.urandom(12)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # until it answers
        sock.settimeout(0.05)
        for _ in range(100):
            sock.sendto(request, ("127.0.0.1", base))
            try:
                sock.recv(2048)
                return proc, base
            except TimeoutError:
                continue
    proc.kill()
    raise SystemExit("coturn did not start")


async def measure(b: Node, conn, pings: int, echoes: int) -> tuple[float, float]:
    rtts = [(await b.ping(conn))[1] for _ in range(pings)]
    start = time.perf_counter()
    for _ in range(echoes):
        _, reply, _ = await b.echo(conn, MESSAGE)
        assert reply == MESSAGE
    return statistics.median(rtts), 2 * len(MESSAGE) * echoes / (time.perf_counter() - start)


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp())
    proc, port = start_coturn(tmp)
    nodes: list[Node] = []

    async def make(**kw) -> Node:
        node = Node(NodeConfig(data_dir=tmp / str(len(nodes)), listen=("127.0.0.1", 0),
                               tls=False, dht=False, hole_punch=False, **kw))
        nodes.append(node)
        await node.start()
        return node

    try:
        r = await make(relay_service="full", relay_limits=RelayLimits(
            circuit_duration=0, circuit_data=0, circuit_rate=0))
        relay = f"/ip4/127.0.0.1/udp/{r.udp_address[1]}/quic-v1/p2p/{r.peer_id}"
        a = Node(NodeConfig(data_dir=tmp / "a", listen=("127.0.0.1", 0), tls=False,
                            dht=False, hole_punch=False, relays=(relay,),
                            turn=(f"turn:user:pass@127.0.0.1:{port}",),
                            turn_permit=("127.0.0.1",)))
        nodes.append(a)
        allocated = a.next_event(TurnAllocationChanged, held=True, timeout=10)
        await a.start()
        await allocated
        b = await make()
        while not a.relays.addrs():
            await asyncio.sleep(0.01)
        conns = {"direct": await b.connect(
                     f"/ip4/127.0.0.1/udp/{a.udp_address[1]}/quic-v1/p2p/{a.peer_id}"),
                 "relayed": await b.connect(a.relays.addrs()[0]),
                 "turn": await b.connect(a.turn.addrs()[0])}
        for name, conn in conns.items():
            assert str(conn.path.kind) == name, (name, conn.path)
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in PATHS}
        for i in range(args.rounds):
            order = PATHS[i % 3:] + PATHS[:i % 3]
            for name in order:
                results[name].append(await measure(b, conns[name], args.pings, args.echoes))
        print(f"{'path':8} {'ping rtt ms (rounds)':44} {'median':>7}   "
              f"{'echo MB/s (rounds)':40} {'median':>7}")
        med = {}
        for name, rows in results.items():
            rtt = [f"{x[0] * 1000:.2f}" for x in rows]
            bw = [f"{x[1] / 1e6:.2f}" for x in rows]
            med[name] = (statistics.median(x[0] for x in rows),
                         statistics.median(x[1] for x in rows))
            print(f"{name:8} {' '.join(rtt):44} {med[name][0] * 1000:7.2f}   "
                  f"{' '.join(bw):40} {med[name][1] / 1e6:7.2f}")
        for name in ("relayed", "turn"):
            print(f"ratio {name}/direct: rtt {med[name][0] / med['direct'][0]:.2f}x, "
                  f"echo throughput {med[name][1] / med['direct'][1]:.2f}x")
    finally:
        for node in nodes:
            await node.stop(0.1)
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pings", type=int, default=50)
    parser.add_argument("--echoes", type=int, default=20)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    asyncio.run(main(parser.parse_args()))
