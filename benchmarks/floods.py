"""Benchmark: legitimate operations during floods, beside the unloaded figure (issue 14).

QUIC section (issue 14 section 2): a legitimate dialer's connect latency (dial to an
authenticated connection) to a node's QUIC transport, unloaded and while a separate
process floods that node with valid ClientHellos: pre-built Initials of aioquic client
connections that never continue, ``--rate`` per second (250, 300 KB/s, as in the issue)
over real UDP on 127.0.0.1. Each pre-built Initial is sent again only after
``handshake_timeout`` + 2 s, by which time the server has dropped the half-open
connection it made for it, so to the server every Initial is a new handshake.

Phases, one server transport each (so none inherits another's half-open state), in one
run, alternating over ``--rounds``: unloaded; flood from ``--ips`` source IPs (127.0.1.x,
so the per-IP cap alone does not stop it and the Retry threshold must); flood from one
IP (127.0.0.2, 8 ports: the per-IP cap's case). Then, unless ``--no-undefended``, the
many-IP flood against a server with the per-IP cap and the Retry threshold out of the way
(the behaviour before issue 14), whose dials may take up to their handshake timeout.
Each flood phase starts ``--warmup`` seconds after its flood, by when the half-open table
holds all it will.
The dialer is always 127.0.0.1, in the benchmark's own process and event loop beside
the server (as in ``transports.py``); dials are sequential, ``--gap`` apart.

DHT section (issue 14 section 1): a legitimate client's lookups (``resolve`` of a
published announcement: a GET walk) in a small DHT on 127.0.0.1 (the victim, which
everyone joined through, and ``--dht-nodes`` more), unloaded and while a separate
process floods the victim with PINGs carrying the server flag from fresh keyless ids
(``--dht-rate`` per second, 1,500 as in the issue, 62-byte datagrams) from many ports of
``--ips`` IPs. With so few nodes every GET asks the victim most of the time. Phases
alternate over ``--rounds``; each starts a fresh network.

Target (issue 14 section 4): every legitimate connect and lookup succeeds during the
floods and its median latency is within 2x of unloaded. There is no "before" row for the
DHT: the old tables are not in the tree (benchmarks/dht_floods.py measures them against
a reimplementation, per request).

    python benchmarks/floods.py [--dials 60] [--rounds 3] [--rate 250] [--ips 64]
                                [--warmup 3] [--undefended-dials 10] [--no-undefended]
                                [--only quic|dht] [--lookups 60] [--dht-rate 1500]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import signal
import socket
import ssl
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aioquic.quic.configuration import QuicConfiguration  # noqa: E402
from aioquic.quic.connection import QuicConnection  # noqa: E402

from discovery.announcements import AnnouncementValidator  # noqa: E402
from discovery.core import DhtConfig  # noqa: E402
from discovery.driver import DhtDriver, open_dht  # noqa: E402
from discovery.errors import DhtTimeout, RecordNotFound  # noqa: E402
from discovery.wire import FLAG_SERVER, PING, Request, encode_request  # noqa: E402
from stack.base.clock import SystemClock  # noqa: E402
from stack.base.identity import Identity  # noqa: E402
from stack.base.net import UdpNetwork  # noqa: E402
from stack.base.port import PortDemux  # noqa: E402
from stack.base.records import sign_announcement  # noqa: E402
from stack.transport.certs import make_certificate  # noqa: E402
from stack.transport.errors import TransportError  # noqa: E402
from stack.transport.options import ALPN, ConnectionLimits, Registry, TransportOptions  # noqa: E402
from stack.transport.quic import QuicTransport  # noqa: E402

HANDSHAKE_TIMEOUT = TransportOptions().handshake_timeout
KEYLESS = bytes.fromhex("002408011220")  # a peer-id prefix whose key was never shown
LOOKUP_TIMEOUT = 10.0
DEFENDED = ConnectionLimits()  # the defaults: Retry past 64 half open, 16 per IP
UNDEFENDED = ConnectionLimits(max_handshakes_per_ip=10**9, quic_retry_threshold=10**9)


# ------------------------------------------------------------------------ the flooder

def _initials(host: str, port: int, count: int) -> list[bytes]:
    config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN],
                               verify_mode=ssl.CERT_NONE)
    pool = []
    for _ in range(count):
        quic = QuicConnection(configuration=config)
        quic.connect((host, port), now=0.0)
        pool.append(quic.datagrams_to_send(now=0.0)[0][0])
    return pool


def _pings(count: int) -> list[bytes]:
    """PINGs with the server flag from fresh keyless ids (each asks for a challenge)."""
    rng = random.Random(14)
    return [encode_request(Request(PING, rng.randbytes(8), KEYLESS + rng.randbytes(32),
                                   FLAG_SERVER)) for _ in range(count)]


def flood_child(kind: str, host: str, port: int, rate: float, seconds: float,
                ips: list[str]) -> None:
    """Pre-build the datagrams (QUIC Initials or DHT PINGs), say "ready", then send
    ``rate`` per second round-robin from one socket per IP for at most ``seconds`` (or
    until terminated)."""
    if kind == "quic":
        pool = _initials(host, port, int(rate * (HANDSHAKE_TIMEOUT + 2.0)))
    else:
        pool = _pings(int(rate * 10))
    pool_size = len(pool)
    socks = []
    for ip in ips:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((ip, 0))
        socks.append(sock)
    sent = 0
    signal.signal(signal.SIGTERM, lambda *_: (_report(sent, start), os._exit(0)))
    print("ready", flush=True)
    start = time.monotonic()
    while True:
        due = start + sent / rate
        now = time.monotonic()
        if now - start > seconds:
            break
        if due > now:
            time.sleep(due - now)
        socks[sent % len(socks)].sendto(pool[sent % pool_size], (host, port))
        sent += 1
    _report(sent, start)


def _report(sent: int, start: float) -> None:
    print(f"sent {sent} {time.monotonic() - start:.3f}", flush=True)


class Flood:
    """The flooding child process, started and stopped by this script."""

    def __init__(self, address: tuple[str, int], rate: float, ips: list[str],
                 seconds: float, kind: str = "quic") -> None:
        self.args = [sys.executable, __file__, "--flood-child", kind, address[0],
                     str(address[1]), str(rate), str(seconds), *ips]
        self.proc: asyncio.subprocess.Process | None = None
        self.rate = 0.0

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, stdout=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"flooder did not start: {line!r}")

    async def stop(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        out = (await self.proc.stdout.read()).decode().split()
        await self.proc.wait()
        if len(out) == 3 and out[0] == "sent":
            self.rate = int(out[1]) / float(out[2])


# ------------------------------------------------------------------------ the node

class Node:
    """A QuicTransport on its own 127.0.0.x UDP port."""

    def __init__(self, host: str, limits: ConnectionLimits = DEFENDED) -> None:
        self.host = host
        self.options = TransportOptions(keep_alive=None, limits=limits)
        self.identity = Identity.generate()

    async def start(self) -> None:
        demux = PortDemux()
        self.endpoint = await UdpNetwork().bind((self.host, 0), demux)
        self.incoming: asyncio.Queue = asyncio.Queue()
        self.transport = QuicTransport(
            send=self.endpoint.send,
            certified=make_certificate(self.identity, time.time()), clock=SystemClock(),
            options=self.options, registry=Registry(self.options.limits),
            on_connection=self.incoming.put_nowait)
        demux.register_quic(self.transport)

    @property
    def address(self) -> tuple[str, int]:
        return self.endpoint.local_address

    async def stop(self) -> None:
        await self.transport.close(0)
        self.endpoint.close()


async def dials(dialer: Node, server: Node, count: int, gap: float) -> tuple[list, int]:
    """``count`` sequential dials ``gap`` apart: (latencies of those that connected,
    failures)."""
    latencies: list[float] = []
    failures = 0
    for _ in range(count):
        start = time.perf_counter()
        try:
            conn = await dialer.transport.dial(server.address, server.identity.peer_id)
        except TransportError:
            failures += 1
        else:
            latencies.append(time.perf_counter() - start)
            conn.abort()
            while not server.incoming.empty():
                server.incoming.get_nowait().abort()
        await asyncio.sleep(gap)
    return latencies, failures


async def phase(name: str, dialer: Node, count: int, gap: float, *,
                limits: ConnectionLimits = DEFENDED, flood_ips: tuple[str, ...] = (),
                rate: float = 0.0, warmup: float = 0.0) -> dict:
    server = Node("127.0.0.1", limits)
    await server.start()
    flood = None
    if flood_ips:
        seconds = warmup + count * (gap + HANDSHAKE_TIMEOUT) + 5  # bounded either way
        flood = Flood(server.address, rate, list(flood_ips), seconds)
        await flood.start()
        await asyncio.sleep(warmup)  # let the half-open table fill
    cpu, wall = time.process_time(), time.perf_counter()
    latencies, failures = await dials(dialer, server, count, gap)
    cpu = (time.process_time() - cpu) / (time.perf_counter() - wall)
    stats = dict(server.transport.stats)
    half_open = server.transport.half_open
    if flood is not None:
        await flood.stop()
    await server.stop()
    row = {"name": name, "latencies": latencies, "failures": failures, "count": count,
           "cpu": cpu, "stats": stats, "half_open": half_open,
           "rate": flood.rate if flood else 0.0}
    print(f"  {name}: {len(latencies)}/{count} ok, median "
          f"{_ms(statistics.median(latencies)) if latencies else '-'}", flush=True)
    return row


def _merge(into: dict | None, result: dict) -> dict:
    """Add one phase's result to a row of the table (a new row if ``into`` is None)."""
    if into is None:
        into = {"name": result["name"], "latencies": [], "failures": 0, "count": 0,
                "cpu": [], "stats": {}, "half_open": [], "rate": []}
    into["latencies"] += result["latencies"]
    into["failures"] += result["failures"]
    into["count"] += result["count"]
    into["cpu"].append(result["cpu"])
    into["half_open"].append(result["half_open"])
    into["rate"].append(result["rate"])
    for key, value in result["stats"].items():
        into["stats"][key] = into["stats"].get(key, 0) + value
    return into


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def main() -> None:
    args = _parser().parse_args()
    if args.only in (None, "quic"):
        await quic_main(args)
    if args.only in (None, "dht"):
        await dht_main(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dials", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--undefended-dials", type=int, default=10)
    parser.add_argument("--rate", type=float, default=250.0)
    parser.add_argument("--ips", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--gap", type=float, default=0.05)
    parser.add_argument("--no-undefended", action="store_true")
    parser.add_argument("--only", choices=["quic", "dht"])
    parser.add_argument("--lookups", type=int, default=60)
    parser.add_argument("--dht-rate", type=float, default=1500.0)
    parser.add_argument("--dht-nodes", type=int, default=3)
    return parser


async def quic_main(args: argparse.Namespace) -> None:
    # aioquic logs each connection a flood Initial's retransmission or probe closes
    logging.getLogger("quic").setLevel(logging.ERROR)
    many = [f"127.0.1.{i + 1}" for i in range(args.ips)]
    one = ["127.0.0.2"] * 8  # 8 ports of one IP

    dialer = Node("127.0.0.1")
    await dialer.start()
    print(f"QUIC: {args.dials} dials per phase in {args.rounds} rounds, flood "
          f"{args.rate:.0f} Initials/s", flush=True)
    await phase("warm-up (not counted)", dialer, 5, args.gap)  # first-use costs
    kinds = (("unloaded", ()), (f"flood from {args.ips} IPs", tuple(many)),
             ("flood from 1 IP", tuple(one)))
    merged: list[dict | None] = [None] * len(kinds)
    per_round = max(1, args.dials // args.rounds)
    for _ in range(args.rounds):  # alternating, so the machine's load drifts over all
        for i, (name, ips) in enumerate(kinds):
            merged[i] = _merge(merged[i], await phase(
                name, dialer, per_round, args.gap, flood_ips=ips, rate=args.rate,
                warmup=args.warmup))
    rows = [row for row in merged if row is not None]
    if not args.no_undefended:
        rows.append(_merge(None, await phase(
            f"flood from {args.ips} IPs, no Retry/cap (before)", dialer,
            args.undefended_dials, args.gap, limits=UNDEFENDED, flood_ips=tuple(many),
            rate=args.rate, warmup=args.warmup)))
    await dialer.stop()

    unloaded = statistics.median(rows[0]["latencies"])
    print()
    print("| phase | flood rate | connected | median | p90 | max | vs unloaded | "
          "process CPU | server counters |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        lat = row["latencies"]
        counters = ", ".join(f"{k} {v}" for k, v in sorted(row["stats"].items())) or "-"
        counters += f"; half open at the end {'/'.join(map(str, row['half_open']))}"
        median = statistics.median(lat) if lat else None
        rate = f"{statistics.mean(row['rate']):.0f}/s" if any(row["rate"]) else "-"
        print(f"| {row['name']} | {rate} | {len(lat)}/{row['count']} | "
              f"{_ms(median) if median else '-'} | {_ms(_pct(lat, 0.9)) if lat else '-'} | "
              f"{_ms(max(lat)) if lat else '-'} | "
              f"{f'{median / unloaded:.2f}x' if median else '-'} | "
              f"{statistics.mean(row['cpu']):.0%} | "
              f"{counters} |")
    defended = rows[1:3]
    ok = all(not r["failures"] for r in defended) and all(
        statistics.median(r["latencies"]) <= 2 * unloaded for r in defended)
    print(f"\nunloaded median {_ms(unloaded)}; target (every connect "
          f"succeeds, median <= 2x unloaded) during the floods: {'met' if ok else 'MISSED'}")


# ------------------------------------------------------------------------ the DHT

async def dht_phase(name: str, others: int, count: int, gap: float, *, ips: list[str],
                    rate: float, warmup: float, seed: int) -> dict:
    """A fresh network: victim, ``others`` publishers joined through it, a client in
    client mode; ``count`` resolves of the publishers' records, during a flood if
    ``rate``."""
    rng = random.Random(seed)
    net, clock = UdpNetwork(), SystemClock()

    async def node(server: bool) -> DhtDriver:
        ident = Identity.generate()
        return await open_dht(net, ("127.0.0.1", 0), ident, AnnouncementValidator(), clock,
                              random.Random(rng.random()), DhtConfig(server=server))

    victim = await node(True)
    publishers = [await node(True) for _ in range(others)]
    client = await node(False)
    drivers = [victim, *publishers, client]
    where = [victim.endpoint.local_address]
    for pub in publishers:
        await pub.bootstrap(where, LOOKUP_TIMEOUT)
        record = sign_announcement(pub.core.identity, 1, [], time.time())
        await pub.publish(record, LOOKUP_TIMEOUT)
    await client.bootstrap(where, LOOKUP_TIMEOUT)
    flood = None
    if rate:
        flood = Flood(where[0], rate, ips, warmup + count * (gap + LOOKUP_TIMEOUT) + 5,
                      kind="dht")
        await flood.start()
        await asyncio.sleep(warmup)
    before = victim.core.stats.copy()
    latencies: list[float] = []
    failures = 0
    for i in range(count):
        target = publishers[i % len(publishers)].core.identity.peer_id
        start = time.perf_counter()
        try:
            await client.resolve(target, LOOKUP_TIMEOUT)
        except (DhtTimeout, RecordNotFound):
            failures += 1
        else:
            latencies.append(time.perf_counter() - start)
        await asyncio.sleep(gap)
    stats = {k: v - before.get(k, 0) for k, v in victim.core.stats.items()
             if v - before.get(k, 0)}
    if flood is not None:
        await flood.stop()
    for driver in drivers:
        driver.close()
        driver.endpoint.close()
    print(f"  {name}: {len(latencies)}/{count} ok, median "
          f"{_ms(statistics.median(latencies)) if latencies else '-'}", flush=True)
    return {"name": name, "latencies": latencies, "failures": failures, "count": count,
            "cpu": 0.0, "stats": stats, "half_open": 0,
            "rate": flood.rate if flood else 0.0}


async def dht_main(args: argparse.Namespace) -> None:
    many = [f"127.0.2.{i + 1}" for i in range(args.ips)]
    print(f"DHT: {args.lookups} resolves per phase in {args.rounds} rounds, "
          f"{args.dht_nodes} publishers, flood {args.dht_rate:.0f} PINGs/s", flush=True)
    kinds = (("unloaded", 0.0), (f"PING flood from {args.ips} IPs", args.dht_rate))
    merged: list[dict | None] = [None] * len(kinds)
    per_round = max(1, args.lookups // args.rounds)
    for r in range(args.rounds):
        for i, (name, rate) in enumerate(kinds):
            merged[i] = _merge(merged[i], await dht_phase(
                name, args.dht_nodes, per_round, args.gap, ips=many, rate=rate,
                warmup=args.warmup, seed=r))
    rows = [row for row in merged if row is not None]
    unloaded = statistics.median(rows[0]["latencies"])
    print()
    print("| phase | flood rate | resolved | median | p90 | max | vs unloaded | "
          "victim's counters during the lookups |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        lat = row["latencies"]
        median = statistics.median(lat) if lat else None
        rate = f"{statistics.mean(row['rate']):.0f}/s" if any(row["rate"]) else "-"
        counters = ", ".join(f"{k} {v}" for k, v in sorted(row["stats"].items())) or "-"
        print(f"| {row['name']} | {rate} | {len(lat)}/{row['count']} | "
              f"{_ms(median) if median else '-'} | {_ms(_pct(lat, 0.9)) if lat else '-'} | "
              f"{_ms(max(lat)) if lat else '-'} | "
              f"{f'{median / unloaded:.2f}x' if median else '-'} | {counters} |")
    flooded = rows[1]
    ok = not flooded["failures"] and statistics.median(flooded["latencies"]) <= 2 * unloaded
    print(f"\nunloaded median {_ms(unloaded)}; target (every lookup succeeds, median <= "
          f"2x unloaded) during the flood: {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--flood-child":
        kind, host, port, rate, seconds, *ips = sys.argv[2:]
        flood_child(kind, host, int(port), float(rate), float(seconds), ips)
    else:
        asyncio.run(main())
