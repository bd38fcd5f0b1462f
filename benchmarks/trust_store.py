"""Claim (issue 8, section 3): trust checks on the node's connection path no longer block
the event loop. With ``check_peer_async`` the loop's longest stall while N connections'
checks are stored is >= 10x shorter than with the synchronous ``check_peer`` (lock,
re-read, whole-file rewrite, fsync on the loop), and the checks are durable no later.

Workload: N new peers arrive one per loop iteration (as accepted connections do), in a
trust store that already holds P peers (the file is rewritten whole on every change).
Baseline: ``TrustStore.check_peer`` called on the loop for each (the node before this
change). Ours: ``check_peer_async`` for each, then all the futures awaited (the node
awaits each before serving its connection). A heartbeat task records the gaps between
its turns on the loop (stalls) and the run's wall time until every check is durable.
Both start from a parsed store (steady state). Each round runs both, alternating which
goes first, each on a fresh copy of the store; we print the medians and the ratios.

Usage: python benchmarks/trust_store.py [--arrivals N] [--peers P] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import structlog

from stack.base.identity import Identity
from stack.store.trust import TrustStore

TARGET = 10.0


def peers(first: int, count: int) -> list:
    return [Identity.from_seed(i.to_bytes(32, "big")).peer_id
            for i in range(first, first + count)]


async def heartbeat(stop: asyncio.Event, gaps: list[float]) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


async def run(store: TrustStore, arrivals: list,
              use_async: bool) -> tuple[float, float, float]:
    """(longest loop stall, total time in stalls over 1 ms, wall time until every check
    is durable), seconds."""
    store.entries()                         # parse once: steady state, both paths
    stop, gaps = asyncio.Event(), []
    beat = asyncio.create_task(heartbeat(stop, gaps))
    await asyncio.sleep(0)
    start = time.perf_counter()
    futures = []
    for pid in arrivals:
        if use_async:
            futures.append(store.check_peer_async(pid))
        else:
            store.check_peer(pid)
        await asyncio.sleep(0)              # the next datagram's turn
    for fut in futures:
        assert (await fut).allowed
    wall = time.perf_counter() - start
    stop.set()
    await beat
    store.close()
    return max(gaps), sum(g for g in gaps if g > 0.001), wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arrivals", type=int, default=100)
    ap.add_argument("--peers", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    base_dir = Path(tempfile.mkdtemp(prefix="trust-bench-"))
    try:
        seed_store = TrustStore(base_dir / "seed")
        for pid in peers(10_000, args.peers):
            seed_store.check_peer(pid)
        results: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
        for r in range(args.rounds):
            for use_async in ((False, True) if r % 2 == 0 else (True, False)):
                work = base_dir / f"r{r}-{use_async}"
                shutil.copytree(base_dir / "seed", work)
                arrivals = peers(100_000 + 1000 * r, args.arrivals)
                results[use_async].append(asyncio.run(run(TrustStore(work), arrivals,
                                                          use_async)))
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)

    def med(use_async: bool, i: int) -> float:
        return statistics.median(x[i] for x in results[use_async])

    print(f"{args.arrivals} new peers arriving, store of {args.peers} peers, "
          f"{args.rounds} rounds")
    print("| path | loop stalled > 1 ms, total (ms), per round | median | longest stall"
          " (ms), median | wall until durable (ms), median |")
    print("|---|---|---|---|---|")
    for use_async, name in ((False, "check_peer on the loop"), (True, "check_peer_async")):
        stalls = " ".join(f"{x[1] * 1000:.1f}" for x in results[use_async])
        print(f"| {name} | {stalls} | {med(use_async, 1) * 1000:.1f} | "
              f"{med(use_async, 0) * 1000:.2f} | {med(use_async, 2) * 1000:.1f} |")
    stall_ratio = med(False, 1) / max(med(True, 1), 1e-6)
    print(f"stalled-time ratio (sync / async): {stall_ratio:.1f}x (target >= {TARGET:g}x: "
          f"{'met' if stall_ratio >= TARGET else 'NOT met'}); longest-stall ratio: "
          f"{med(False, 0) / med(True, 0):.1f}x; wall ratio: {med(False, 2) / med(True, 2):.1f}x")


if __name__ == "__main__":
    main()
