"""Benchmark: what a relayed path costs against the direct one, in the same run.

Three nodes on 127.0.0.1: a relay R (``relay_service="full"`` with every cap lifted: no
duration, data or rate limit) in a process of its own, as it would be on its own host,
and in this process a target A holding a reservation on R and a dialer B with two QUIC
connections to A: one direct, one through R (QUIC end to end inside a circuit stream on
B-R and R-A). Per round, alternating direct and relayed: the median round trip of
``--pings`` pings, and echo throughput (``--echoes`` 60 KB messages on the echo protocol,
both ways, bytes carried per second). CPU: the relay process's user+system time per MiB
it carried (``/proc/PID/stat``), beside this process's (both ends: A and B) per MiB on
the direct connection. The baseline is the direct connection; the ratio is relayed /
direct. No target: this records what the relay costs.

    python benchmarks/relay.py [--rounds 5] [--pings 50] [--echoes 20]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
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
from stack.node import Node  # noqa: E402
from stack.node.config import NodeConfig  # noqa: E402

MESSAGE = b"\xa5" * 60000
MIB = 1 << 20
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def measure(b: Node, conn, pings: int, echoes: int,
                  relay_pid: int) -> tuple[float, float, float, float]:
    """Median ping RTT, echo bytes/s, and the CPU seconds per MiB of echo this process
    (both ends) and the relay process spent."""
    rtts = [(await b.ping(conn))[1] for _ in range(pings)]
    start, cpu, relay_cpu = time.perf_counter(), time.process_time(), cpu_seconds(relay_pid)
    for _ in range(echoes):
        _, reply, _ = await b.echo(conn, MESSAGE)
        assert reply == MESSAGE
    carried = 2 * len(MESSAGE) * echoes
    return (statistics.median(rtts), carried / (time.perf_counter() - start),
            (time.process_time() - cpu) / (carried / MIB),
            (cpu_seconds(relay_pid) - relay_cpu) / (carried / MIB))


async def serve_relay(data_dir: str) -> None:
    """The relay process: print its address, serve until stdin closes."""
    r = Node(NodeConfig(data_dir=Path(data_dir), listen=("127.0.0.1", 0), tls=False,
                        dht=False, hole_punch=False, relay_service="full",
                        relay_limits=RelayLimits(circuit_duration=0, circuit_data=0,
                                                 circuit_rate=0)))
    await r.start()
    print(f"/ip4/127.0.0.1/udp/{r.udp_address[1]}/quic-v1/p2p/{r.peer_id}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await r.stop(0.1)


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp())
    nodes: list[Node] = []

    # hole_punch off: on loopback every relayed connection would be upgraded to a direct
    # one and closed after its grace period, under the benchmark's feet.
    async def make(**kw) -> Node:
        node = Node(NodeConfig(data_dir=tmp / str(len(nodes)), listen=("127.0.0.1", 0),
                               tls=False, dht=False, hole_punch=False, **kw))
        await node.start()
        nodes.append(node)
        return node

    child = subprocess.Popen([sys.executable, __file__, "--serve-relay", str(tmp / "r")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        relay = await asyncio.get_running_loop().run_in_executor(None, child.stdout.readline)
        if not relay.strip():
            raise SystemExit("the relay process did not start")
        a = await make(relays=(relay.strip(),))
        b = await make()
        while not a.relays.addrs():
            await asyncio.sleep(0.01)
        conns = {"direct": await b.connect(
                     f"/ip4/127.0.0.1/udp/{a.udp_address[1]}/quic-v1/p2p/{a.peer_id}"),
                 "relayed": await b.connect(a.relays.addrs()[0])}
        assert str(conns["relayed"].path.kind) == "relayed"
        results: dict[str, list[tuple[float, float, float, float]]] = {
            "direct": [], "relayed": []}
        for i in range(args.rounds):
            order = ("direct", "relayed") if i % 2 == 0 else ("relayed", "direct")
            for name in order:
                results[name].append(await measure(b, conns[name], args.pings, args.echoes,
                                                   child.pid))
        print(f"{'path':8} {'ping rtt ms (rounds)':36} {'median':>7}   "
              f"{'echo MB/s (rounds)':32} {'median':>7}  {'ends CPU ms/MiB':>15}  "
              f"{'relay CPU ms/MiB':>16}")
        med = {}
        for name, rows in results.items():
            rtt = [f"{x[0] * 1000:.2f}" for x in rows]
            bw = [f"{x[1] / 1e6:.2f}" for x in rows]
            med[name] = tuple(statistics.median(x[k] for x in rows) for k in range(4))
            print(f"{name:8} {' '.join(rtt):36} {med[name][0] * 1000:7.2f}   "
                  f"{' '.join(bw):32} {med[name][1] / 1e6:7.2f}  {med[name][2] * 1000:15.1f}  "
                  f"{med[name][3] * 1000:16.1f}")
        print(f"ratio relayed/direct: rtt {med['relayed'][0] / med['direct'][0]:.2f}x, "
              f"echo throughput {med['relayed'][1] / med['direct'][1]:.2f}x; relay CPU per "
              f"MiB / both ends' CPU per MiB direct: "
              f"{med['relayed'][3] / med['direct'][2]:.2f}x")
    finally:
        for node in nodes:
            await node.stop(0.1)
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pings", type=int, default=50)
    parser.add_argument("--echoes", type=int, default=20)
    parser.add_argument("--serve-relay", metavar="DIR", help=argparse.SUPPRESS)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    args = parser.parse_args()
    asyncio.run(serve_relay(args.serve_relay) if args.serve_relay else main(args))
