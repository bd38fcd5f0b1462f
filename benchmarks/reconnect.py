"""Benchmark (issue 10 section 5): from an address change to the first byte on the new path.

Simulated network and virtual clock, seeded (``--seed``): the times are virtual seconds,
so they measure the protocol (poll interval, round trips, retransmissions), not this
machine. One world per cause: a mover M and ``--peers`` peers that dialed it (public
hosts, one-way latency ``--latency`` s with +-``--jitter`` s), then ``--moves`` moves,
each after a seeded random pause (so the move falls anywhere in the detector's poll
period), spaced past the per-peer push and redial limits:

- ``switch``: M's host changes IP (``SimHost.change_ip``; M is bound to the wildcard);
  the detector's interface poll notices. The peers dialed M, so M was the QUIC server
  of every connection and QUIC cannot move them: they are replaced (reconnect).
- ``migrate``: the same switch, but M dialed the peers (M is the QUIC client): the
  connections migrate (RFC 9000 section 9). ``migrated`` = M has the peer's
  acknowledgement from the new path (``connection.migrated``); ``first byte`` = an echo
  M sends then over the same connection has its reply.
- ``rebinding``: an observer reports a new mapped port (``Node.report_mapped_address``,
  as a STUN answer or keepalive would); M's listen address stays valid, so nothing
  redials: the figure is the push being verified at the peer.
- ``sleep_wake``: M's host is gone ``--sleep`` s and its monotonic clock stood still
  (the connections die of their idle timeout meanwhile); the clock jump is noticed.

Per move and peer, from the change (the wake for sleep/wake): ``push`` = the peer has
verified M's pushed announcement; ``first byte`` = the first byte from M arrives at the
peer over the connection the peer redialed on the new path (an echo reply on it).
Seed 004 quotes 2-5 s to reconnect after a network switch and 3-10 s after sleep/wake.

    python benchmarks/reconnect.py [--moves 50] [--peers 2] [--seed 1] [--causes ...]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402

from simulations.network import SimNetwork  # noqa: E402
from simulations.vtime import current_clock, run_virtual  # noqa: E402
from stack.base.identity import Identity  # noqa: E402
from stack.node import ConnectionOpened, Node  # noqa: E402
from stack.node.config import NodeConfig  # noqa: E402
from stack.node.events import (AnnouncementReceived, ConnectionMigrated,  # noqa: E402
                               DialbackResult)
from stack.store.stores import Stores  # noqa: E402

PORT = 39001
SPACING = 15.0  # s between moves: past the redial limit (10 s) and the push bucket
CAUSES = ("switch", "migrate", "rebinding", "sleep_wake")


class SleepyClock:
    """Virtual time whose monotonic reading stands still while the host sleeps."""

    def __init__(self, base) -> None:
        self.base = base
        self.slept = 0.0

    def now(self) -> float:
        return self.base.now()

    def monotonic(self) -> float:
        return self.base.monotonic() - self.slept


async def world(cause: str, args: argparse.Namespace, seed: int) -> dict[str, list[float]]:
    rng = random.Random(seed)
    net = SimNetwork(rng, latency=args.latency, jitter=args.jitter)
    vclock = current_clock()
    tmp = Path(tempfile.gettempdir()) / "p2pstack-bench-reconnect"
    nodes: list[Node] = []
    hosts = {}

    async def add(ip: str, wildcard: bool = False, clock=None) -> Node:
        host = net.add_host(ip)
        node = Node(NodeConfig(data_dir=tmp / str(len(nodes)),
                               listen=("0.0.0.0" if wildcard else ip, PORT), tls=False,
                               dht=False, identity=Identity.from_rng(rng),
                               rng_seed=rng.getrandbits(64), dial_back_timeout=3.0,
                               stores=Stores.memory()),
                    network=host, clock=clock or vclock)
        nodes.append(node)
        hosts[node] = host
        await node.start()
        return node

    out: dict[str, list[float]] = {"push": [], "migrated": [], "first byte": []}
    sleepy = SleepyClock(vclock)
    try:
        mover = await add("198.51.100.10", wildcard=True, clock=sleepy)
        peers = [await add(f"198.51.100.{20 + i}") for i in range(args.peers)]
        for p in peers:
            if cause == "migrate":  # M dials: it is the client of every connection
                verdict = mover.next_event(DialbackResult, role="dialer", timeout=20)
                await mover.connect(f"{p.udp_address[0]}:{PORT}")
            else:
                verdict = p.next_event(DialbackResult, role="dialer", timeout=20)
                await p.connect(f"198.51.100.10:{PORT}")
            await verdict
        if cause == "rebinding":
            mover.report_mapped_address(("198.51.100.10", 40000), "stun")
        host = hosts[mover]
        for k in range(args.moves):
            await asyncio.sleep(SPACING + rng.random())
            if cause == "sleep_wake":
                host.crash()
                await asyncio.sleep(args.sleep)
            got = [asyncio.ensure_future(p.next_event(
                AnnouncementReceived, peer_id=mover.peer_id, result="valid", timeout=30))
                for p in peers]
            redials = [asyncio.ensure_future(p.next_event(
                ConnectionOpened, peer_id=mover.peer_id, inbound=False, timeout=30))
                for p in peers]
            migrated = [asyncio.ensure_future(mover.next_event(
                ConnectionMigrated, peer_id=p.peer_id, role="client", timeout=30))
                for p in peers] if cause == "migrate" else []
            if cause in ("switch", "migrate"):
                host.change_ip(f"203.0.{113 + k // 250}.{1 + k % 250}")
            elif cause == "rebinding":
                mover.report_mapped_address(("198.51.100.10", 40001 + k), "stun")
            else:
                host.restart()
                sleepy.slept += args.sleep
            t0 = vclock.monotonic()

            async def migrated_first_byte(p: Node, m: asyncio.Future, t0: float) -> None:
                await m
                out["migrated"].append(vclock.monotonic() - t0)
                conn = next(c for c in mover.connections
                            if c.peer_id == p.peer_id and c.is_client and not c.closed)
                _, reply, _ = await mover.echo(conn, b"x")
                assert reply == b"x"
                out["first byte"].append(vclock.monotonic() - t0)

            async def pushed_first_byte(p: Node, g: asyncio.Future, r: asyncio.Future,
                                        t0: float, k: int) -> None:
                try:
                    await g
                except TimeoutError:
                    raise SystemExit(f"{cause} move {k}: no valid push at a peer; "
                                     f"pushes: {mover.mobility.last_push}, "
                                     f"peer stats: {dict(p.announce_push.stats)}") from None
                out["push"].append(vclock.monotonic() - t0)
                if cause in ("rebinding", "migrate"):
                    r.cancel()
                    return
                await r
                conn = next(c for c in p.connections
                            if c.peer_id == mover.peer_id and c.is_client and not c.closed)
                _, reply, _ = await p.echo(conn, b"x")
                assert reply == b"x"
                out["first byte"].append(vclock.monotonic() - t0)

            # every peer at once: one peer's echo does not delay the next one's figure
            await asyncio.gather(*(migrated_first_byte(p, m, t0)
                                   for p, m in zip(peers, migrated, strict=False)),
                                 *(pushed_first_byte(p, g, r, t0, k)
                                   for p, g, r in zip(peers, got, redials, strict=True)))
    finally:
        await asyncio.gather(*(n.stop(0.1) for n in nodes), return_exceptions=True)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=50, help="moves per cause")
    parser.add_argument("--peers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency", type=float, default=0.02, help="one-way, seconds")
    parser.add_argument("--jitter", type=float, default=0.005)
    parser.add_argument("--sleep", type=float, default=120.0, help="sleep_wake: seconds")
    parser.add_argument("--causes", nargs="+", default=list(CAUSES), choices=CAUSES)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    print(f"reconnect after a move: {args.moves} moves per cause x {args.peers} peers, "
          f"seed {args.seed}, simulated RTT {2000 * args.latency:.0f} ms "
          f"(+-{2000 * args.jitter:.0f}), virtual seconds")
    print(f"{'cause':<11} {'measure':<11} {'n':>5} {'p50 s':>7} {'p99 s':>7} {'max s':>7}  "
          "seed 004")
    quoted = {"switch": "2-5 s", "migrate": "2-5 s", "rebinding": "2-5 s",
              "sleep_wake": "3-10 s"}
    for i, cause in enumerate(args.causes):
        start = time.perf_counter()
        out = run_virtual(world(cause, args, args.seed * 1000 + i))
        for measure, values in out.items():
            if not values:
                continue
            print(f"{cause:<11} {measure:<11} {len(values):>5} {pct(values, 0.5):>7.3f} "
                  f"{pct(values, 0.99):>7.3f} {max(values):>7.3f}  {quoted[cause]}")
        print(f"{'':<11} (wall {time.perf_counter() - start:.1f} s; mean push "
              f"{statistics.fmean(out['push']):.3f} s)")


if __name__ == "__main__":
    main()
