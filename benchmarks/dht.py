"""Benchmark: p2pstack's DHT against the PyPI ``kademlia`` package 2.2.3 (issue 5 section 5).

The same scenario (tests/discovery/dht_scenario.py) runs both on the same simulated network
and virtual clock (``simulations``): N nodes join through node 0 (0.5 s apart), every
node publishes its signed announcement (kademlia: ``set(peer-id bytes, record)``),
then 500 random lookups (kademlia: ``get``), then 60 idle simulated minutes. kademlia's
hourly refresh and republish (on the virtual clock) first come due about two hours into
the run: ``--idle 150`` reaches them, and then its STORE storm runs into
``--baseline-timeout``. Each run is a child process, so its
wall time and peak RSS are its own.

    python benchmarks/dht.py      # 500 nodes both; kademlia at 2,000 (bounded wall time);
                                  # ours at 2,000 and 10,000
    python benchmarks/dht.py --nodes 300 --baseline-also "" --ours-also ""

kademlia 2.2.3 does not get through the publish phase at 1,000 or 2,000 nodes here: when
every node publishes within 30 s, its ``welcome_if_new`` STORE pushes feed each other
(~12,000 datagrams per wall second while virtual time stands still), so its larger runs
are cut at ``--baseline-timeout`` and reported as not finished.

Targets: lookup success 100% (kademlia ~95%); datagrams per lookup <= 0.5x kademlia's;
less wall time than kademlia.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import queue as queue_module
import random
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "discovery")]

from dht_scenario import run_scenario  # noqa: E402


class _LoopTime:
    """Stands in for the ``time`` module inside kademlia: monotonic() = loop time."""

    @staticmethod
    def monotonic() -> float:
        return asyncio.get_event_loop().time()


class KademliaBackend:
    """The ``kademlia`` package, unchanged, binding through the virtual loop's
    ``create_datagram_endpoint`` onto the simulated host."""

    name = "kademlia 2.2.3"

    def __init__(self) -> None:
        import kademlia.routing
        import kademlia.storage
        from kademlia.network import Server

        # kademlia reads time.monotonic() for bucket ages (hourly refresh) and record ages
        # (hourly republish); give it the virtual clock, as ours gets it, or its periodic
        # work never comes due in simulated time. (Runs in the benchmark's child process.)
        kademlia.routing.time = kademlia.storage.time = _LoopTime
        self._server_class = Server
        self.servers = {}

    async def start(self, i, host, ip, identity, rng) -> None:
        server = self._server_class(ksize=20, alpha=3, node_id=rng.randbytes(20))
        await server.listen(4001, interface=ip)
        self.servers[i] = server

    async def bootstrap(self, i, addr) -> None:
        await self.servers[i].bootstrap([addr])

    async def publish(self, i, identity, record) -> int:
        ok = await self.servers[i].set(identity.peer_id.multihash, record)
        return 20 if ok else 0  # set() reports only success/failure

    async def resolve(self, i, identity, record) -> bool:
        return await self.servers[i].get(identity.peer_id.multihash) == record

    def close(self) -> None:
        for server in self.servers.values():
            server.stop()


def _child(which: str, nodes: int, lookups: int, idle: int, seed: int, queue) -> None:
    logging.disable(logging.CRITICAL)  # kademlia logs every RPC failure
    random.seed(seed)  # kademlia draws from the global RNG
    backend = KademliaBackend() if which == "kademlia" else None
    start = time.perf_counter()
    r = run_scenario(nodes, seed, lookups=lookups, idle_minutes=idle, backend=backend,
                     progress=True)
    wall = time.perf_counter() - start
    queue.put({
        "impl": which, "nodes": nodes, "lookups": r.lookups, "succeeded": r.succeeded,
        "median_ms": 1000 * r.median_latency, "p95_ms": 1000 * r.latency(0.95),
        "dgrams_per_lookup": r.datagrams_per_lookup, "idle_per_min": r.idle_per_minute,
        "idle_max_min": r.idle_max_minute, "join_dgrams": r.join_datagrams,
        "wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "failures": r.failures[:5], "failure_count": len(r.failures),
    })


def measure(which: str, nodes: int, lookups: int, idle: int, seed: int,
            timeout: float | None = None) -> dict:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(which, nodes, lookups, idle, seed, queue))
    proc.start()
    try:
        result = queue.get(timeout=timeout)
    except queue_module.Empty:
        proc.kill()
        result = {"impl": which, "nodes": nodes, "dnf": timeout}
    proc.join()
    return result


def row(r: dict) -> str:
    if "dnf" in r:
        return (f"| {r['impl']} | {r['nodes']} | did not finish in {r['dnf']:.0f} s wall "
                "| | | | | | |")
    return (f"| {r['impl']} | {r['nodes']} | {r['succeeded']}/{r['lookups']} "
            f"({100 * r['succeeded'] / r['lookups']:.1f}%) | {r['median_ms']:.0f} | "
            f"{r['p95_ms']:.0f} | {r['dgrams_per_lookup']:.1f} | {r['idle_per_min']:.0f} | "
            f"{r['wall_s']:.0f} | {r['peak_rss_mb']:.0f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=500,
                        help="size of the side-by-side run (both implementations)")
    parser.add_argument("--lookups", type=int, default=500)
    parser.add_argument("--baseline-also", default="2000",
                        help="more sizes for kademlia alone, with --baseline-timeout")
    parser.add_argument("--baseline-timeout", type=float, default=600.0)
    parser.add_argument("--ours-also", default="2000,10000", help="more sizes for ours alone")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--idle", type=int, default=60,
                        help="idle simulated minutes measured")
    args = parser.parse_args()
    sizes = lambda text: [int(x) for x in text.split(",") if x]  # noqa: E731
    results = []
    for which, nodes, idle, limit in (
            [("kademlia", args.nodes, args.idle, args.baseline_timeout),
             ("p2pstack", args.nodes, args.idle, None)]
            + [("kademlia", n, args.idle, args.baseline_timeout)
               for n in sizes(args.baseline_also)]
            + [("p2pstack", n, args.idle, None) for n in sizes(args.ours_also)]):
        results.append(measure(which, nodes, args.lookups, idle, args.seed, limit))
        print(json.dumps(results[-1]), flush=True)
    print("| impl | nodes | lookup success | median ms | p95 ms | datagrams/lookup | "
          "idle datagrams/min | wall s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(row(r))
    theirs, ours = results[0], results[1]
    if "dnf" in theirs:
        return 0
    print(f"side by side at {args.nodes} nodes, ours/kademlia: datagrams per lookup "
          f"{ours['dgrams_per_lookup'] / max(theirs['dgrams_per_lookup'], 1e-9):.2f}, "
          f"wall {ours['wall_s'] / theirs['wall_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
