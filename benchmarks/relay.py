"""Benchmark: what a relayed path costs against the direct one, in the same run.

Three nodes on 127.0.0.1 in one process and event loop: a relay R (``relay_service="full"``
with every cap lifted: no duration, data or rate limit), a target A holding a reservation
on R, and a dialer B with two QUIC connections to A: one direct, one through R (QUIC end
to end inside a circuit stream on B-R and R-A). Per round, alternating direct and
relayed: the median round trip of ``--pings`` pings, and echo throughput (``--echoes``
60 KB messages on the echo protocol, both ways, bytes carried per second). The baseline
is the direct connection; the ratio is relayed / direct. No target: this records what the
relay costs (on one host the relay's work shares the one core the two ends use).

    python benchmarks/relay.py [--rounds 5] [--pings 50] [--echoes 20]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
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


async def measure(b: Node, conn, pings: int, echoes: int) -> tuple[float, float]:
    rtts = [(await b.ping(conn))[1] for _ in range(pings)]
    start = time.perf_counter()
    for _ in range(echoes):
        _, reply, _ = await b.echo(conn, MESSAGE)
        assert reply == MESSAGE
    return statistics.median(rtts), 2 * len(MESSAGE) * echoes / (time.perf_counter() - start)


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

    try:
        r = await make(relay_service="full", relay_limits=RelayLimits(
            circuit_duration=0, circuit_data=0, circuit_rate=0))
        relay = f"/ip4/127.0.0.1/udp/{r.udp_address[1]}/quic-v1/p2p/{r.peer_id}"
        a = await make(relays=(relay,))
        b = await make()
        while not a.relays.addrs():
            await asyncio.sleep(0.01)
        conns = {"direct": await b.connect(
                     f"/ip4/127.0.0.1/udp/{a.udp_address[1]}/quic-v1/p2p/{a.peer_id}"),
                 "relayed": await b.connect(a.relays.addrs()[0])}
        assert str(conns["relayed"].path.kind) == "relayed"
        results: dict[str, list[tuple[float, float]]] = {"direct": [], "relayed": []}
        for i in range(args.rounds):
            order = ("direct", "relayed") if i % 2 == 0 else ("relayed", "direct")
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
        print(f"ratio relayed/direct: rtt {med['relayed'][0] / med['direct'][0]:.2f}x, "
              f"echo throughput {med['relayed'][1] / med['direct'][1]:.2f}x")
    finally:
        for node in nodes:
            await node.stop(0.1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pings", type=int, default=50)
    parser.add_argument("--echoes", type=int, default=20)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    asyncio.run(main(parser.parse_args()))
