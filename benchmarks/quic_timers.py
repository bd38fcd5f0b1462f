"""Claim (issue "house", QUIC timers): re-arming the QUIC driver's timer costs about the
same at 256 connections as at 1, where the scan it replaced grew with the connection
count (3.9 us at 1 connection, 383 us at 256, measured before the change).

Workload: a real ``QuicTransport`` with N real, established QUIC connections (dialed in
memory to a second transport, handshakes complete, then idle); keep-alive is the
earliest deadline of each. One re-arm = one connection's keep-alive deadline moves (its
``last_activity`` is set to now, as a received datagram does) and the driver re-arms,
round-robin over the connections, so the moved one was always the earliest and the loop
timer is re-armed every time.
Ours: the driver's ``_rearm`` (heap with lazy deletion; recomputes only the connection
marked touched). Baseline: the previous algorithm, reimplemented below: every
connection's deadline, then their minimum. Both read deadlines through the same
``_next_deadline`` (aioquic's ``get_timer``) and arm the same kind of loop timer.
Batches of ours and the baseline alternate (flipping which goes first); we print the
median time per re-arm of each and the ratio. Times are this thread's CPU time
(``--wall`` for wall-clock time): the machine is shared.

Usage: python benchmarks/quic_timers.py [--sizes 1 16 256] [--rounds 21]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stack.base.clock import SystemClock
from stack.base.identity import Identity
from stack.transport.certs import make_certificate
from stack.transport.options import ConnectionLimits, Registry, TransportOptions
from stack.transport.quic import QuicConn, QuicTransport

# Idle and keep-alive far enough out that no timer fires during a run, keep-alive first.
OPTIONS = TransportOptions(idle_timeout=600.0, keep_alive=300.0,
                           limits=ConnectionLimits(max_connections=1024,
                                                   max_connections_per_peer=1024))
CLIENT, SERVER = ("10.0.0.1", 1), ("10.0.0.2", 2)


class ScanRearm:
    """The driver's re-arm before the heap: compute every connection's deadline, take the
    minimum, re-arm one loop timer if it moved."""

    def __init__(self, transport: QuicTransport) -> None:
        self._transport = transport
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    def __call__(self) -> None:
        t = self._transport
        deadlines = [d for c in t._conns if (d := t._next_deadline(c)) is not None]
        when = min(deadlines) if deadlines else None
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            self._timer = t._loop.call_later(max(1e-6, when - t._clock.monotonic()),
                                             lambda: None)


async def connected_pair(n: int) -> tuple[QuicTransport, QuicTransport, list[QuicConn]]:
    """Two transports joined by an in-memory link, with ``n`` connections from the
    first to the second."""
    loop = asyncio.get_running_loop()
    transports: dict[str, QuicTransport] = {}

    def link(src: tuple[str, int], dst: str):
        return lambda data, addr: loop.call_soon(transports[dst], [(data, src)])

    for name, src, dst in (("client", CLIENT, "server"), ("server", SERVER, "client")):
        transports[name] = QuicTransport(
            send=link(src, dst), clock=SystemClock(), options=OPTIONS,
            certified=make_certificate(Identity.generate(), time.time()),
            registry=Registry(OPTIONS.limits), on_connection=lambda conn: None)
    client, server = transports["client"], transports["server"]
    conns = [await client.dial(SERVER) for _ in range(n)]
    await asyncio.sleep(0.2)  # let the last ACKs and HANDSHAKE_DONEs settle
    return client, server, conns


async def measure(n: int, rounds: int, clock) -> tuple[float, float]:
    client, server, conns = await connected_pair(n)
    scan = ScanRearm(client)
    mono = client._clock.monotonic
    batch = 4000 // n + 20  # ~10-20 ms of the baseline per batch
    turn = 0

    def run(ours: bool) -> float:
        nonlocal turn
        rearm = client._rearm if ours else scan
        dirty = client._dirty
        start = clock()
        for _ in range(batch):
            conn = conns[turn % n]
            turn += 1
            conn.last_activity = mono()
            if ours:
                dirty[conn] = None  # what the driver's _flush records
            rearm()
        return (clock() - start) / batch

    for ours in (True, False):  # warm-up
        run(ours)
    t_ours, t_scan = [], []
    for i in range(rounds):
        for ours in ((True, False) if i % 2 == 0 else (False, True)):
            (t_ours if ours else t_scan).append(run(ours))
        await asyncio.sleep(0)  # let the loop drop the cancelled timer handles
    await client.close(0)
    await server.close(0)
    return statistics.median(t_ours), statistics.median(t_scan)


async def main_async(sizes: list[int], rounds: int, clock) -> list[tuple[int, float, float]]:
    return [(n, *await measure(n, rounds, clock)) for n in sizes]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 256])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--wall", action="store_true",
                        help="time with the wall clock instead of this thread's CPU time")
    args = parser.parse_args()
    # CPU time of this thread by default: the machine is shared, and time spent
    # descheduled belongs to neither side.
    clock = time.perf_counter if args.wall else time.thread_time
    results = asyncio.run(main_async(args.sizes, args.rounds, clock))
    print(f"quic_timers: one re-arm after one connection's deadline moved, median of "
          f"{args.rounds} alternating batches, {'wall' if args.wall else 'thread CPU'} time")
    print(f"  {'conns':>5}  {'scan (before)':>14}  {'heap (now)':>11}  {'scan / heap':>11}")
    for n, ours, scan in results:
        print(f"  {n:>5}  {scan * 1e6:>11.2f} us  {ours * 1e6:>8.2f} us  {scan / ours:>10.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
