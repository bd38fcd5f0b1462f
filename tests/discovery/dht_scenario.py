"""The DHT scenario of issue 5 (sections 4 and 5) on the simulated network and virtual clock.

``n`` nodes join one after another through node 0, every node publishes its signed
announcement, then ``lookups`` random resolves run (spread over a minute of simulated
time, from random live nodes, for random published peers). Optionally the loss rate is
raised and a fraction of the nodes crash half-way through the lookups. Finally the
network idles and the datagrams per idle minute are counted.

It runs ``discovery.driver`` over ``simulations.network.SimNetwork`` in
``simulations.vtime.run_virtual``: the production code on virtual time. The benchmark
(benchmarks/dht.py) reuses it for its "ours" column.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from dataclasses import dataclass, field

from discovery.announcements import AnnouncementValidator
from discovery.core import DhtConfig
from discovery.driver import DhtDriver, open_dht
from simulations.network import SimNetwork
from simulations.vtime import current_clock, run_virtual
from stack.base.identity import Identity
from stack.base.records import sign_announcement


@dataclass
class ScenarioResult:
    nodes: int
    lookups: int
    succeeded: int
    latencies: list[float] = field(default_factory=list)  # simulated seconds
    lookup_datagrams: int = 0
    idle_per_minute: float = 0.0
    idle_max_minute: int = 0
    join_datagrams: int = 0
    publish_replicas_min: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return self.succeeded / self.lookups if self.lookups else 1.0

    @property
    def datagrams_per_lookup(self) -> float:
        return self.lookup_datagrams / self.lookups if self.lookups else 0.0

    def latency(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def median_latency(self) -> float:
        return statistics.median(self.latencies) if self.latencies else float("nan")


def host_ip(i: int) -> str:
    return f"10.{i // 62500}.{(i // 250) % 250}.{i % 250 + 1}"


class OursBackend:
    """p2pstack's DHT: ``discovery.driver`` on each simulated host."""

    name = "p2pstack"

    def __init__(self, config: DhtConfig = DhtConfig()) -> None:
        self.config = config
        self.drivers: dict[int, DhtDriver] = {}
        self.validator = AnnouncementValidator()

    async def start(self, i: int, host, ip: str, identity: Identity, rng: random.Random) -> None:
        self.drivers[i] = await open_dht(host, (ip, 4001), identity, self.validator,
                                         current_clock(), random.Random(rng.random()),
                                         self.config)

    async def bootstrap(self, i: int, addr: tuple[str, int]) -> None:
        await self.drivers[i].bootstrap([addr], timeout=120)

    async def publish(self, i: int, identity: Identity, record: bytes) -> int:
        return await self.drivers[i].publish(record, timeout=120)

    async def resolve(self, i: int, identity: Identity, record: bytes) -> bool:
        return await self.drivers[i].resolve(identity.peer_id, timeout=60) == record

    def close(self) -> None:
        for d in self.drivers.values():
            d.close()
            d.endpoint.close()


async def _scenario(backend, n: int, seed: int, lookups: int, loss: float,
                    crash_fraction: float, idle_minutes: int, join_spacing: float,
                    progress: bool) -> ScenarioResult:
    rng = random.Random(seed)
    net = SimNetwork(random.Random(seed + 1), latency=0.025, jitter=0.010)
    clock = current_clock()
    wall0 = time.perf_counter()

    def phase(name: str) -> None:
        if progress:
            print(f"[{backend.name} n={n}] {name}: wall {time.perf_counter() - wall0:.0f} s, "
                  f"datagrams {net.stats.sent}", file=sys.stderr, flush=True)

    async def ticker() -> None:  # virtual-time progress, for runs that crawl
        while True:
            await asyncio.sleep(10)
            phase(f"virtual {clock.now() - start:.0f} s")

    start = clock.now()
    ticking = asyncio.ensure_future(ticker()) if progress else None
    identities = [Identity.from_rng(rng) for _ in range(n)]
    hosts = []
    for i, ident in enumerate(identities):
        host = net.add_host(host_ip(i))
        hosts.append(host)
        await backend.start(i, host, host_ip(i), ident, rng)
    result = ScenarioResult(n, lookups, 0)
    seed_addr = (host_ip(0), 4001)

    async def join(i: int) -> None:
        await asyncio.sleep(i * join_spacing)
        try:
            await backend.bootstrap(i, seed_addr)
        except Exception as exc:  # a baseline may fail in its own way; count, go on
            result.failures.append(f"join {i}: {exc!r}")

    await asyncio.gather(*(join(i) for i in range(1, n)))
    await asyncio.sleep(5)
    result.join_datagrams = net.stats.sent
    phase("joined")

    records = [sign_announcement(ident, 1, [f"/ip4/{host_ip(i)}/udp/4001/quic-v1"],
                                 clock.now(), nonce=rng.randbytes(16))
               for i, ident in enumerate(identities)]

    async def publish(i: int) -> int:
        await asyncio.sleep(rng.uniform(0, 30))
        try:
            return await backend.publish(i, identities[i], records[i])
        except Exception as exc:
            result.failures.append(f"publish {i}: {exc!r}")
            return 0

    replicas = await asyncio.gather(*(publish(i) for i in range(n)))
    result.publish_replicas_min = min(replicas)
    await asyncio.sleep(5)
    phase("published")

    net.loss = loss
    crashed: set[int] = set()
    sent_before = net.stats.sent
    plan = [(rng.uniform(0, 60), rng.randrange(n), rng.randrange(n)) for _ in range(lookups)]

    async def crash() -> None:
        await asyncio.sleep(30.0)  # half-way through the lookups
        for i in rng.sample(range(1, n), int(crash_fraction * n)):
            crashed.add(i)
            hosts[i].crash()

    async def lookup(at: float, src: int, dst: int) -> None:
        await asyncio.sleep(at)
        while src in crashed:
            src = (src + 1) % n
        start = clock.now()
        try:
            ok = await backend.resolve(src, identities[dst], records[dst])
        except Exception as exc:
            result.failures.append(f"lookup {src}->{dst}: {exc!r}")
            return
        if ok:
            result.succeeded += 1
            result.latencies.append(clock.now() - start)
        else:
            result.failures.append(f"lookup {src}->{dst}: wrong or no value")

    await asyncio.gather(crash(), *(lookup(*p) for p in plan))
    result.lookup_datagrams = net.stats.sent - sent_before
    net.loss = 0.0
    phase("looked up")

    per_minute = []
    for _ in range(idle_minutes):
        before = net.stats.sent
        await asyncio.sleep(60)
        per_minute.append(net.stats.sent - before)
        if len(per_minute) % 10 == 0:
            phase(f"idle minute {len(per_minute)}")
    if per_minute:
        result.idle_per_minute = sum(per_minute) / len(per_minute)
        result.idle_max_minute = max(per_minute)
    if ticking is not None:
        ticking.cancel()
    backend.close()
    return result


def run_scenario(n: int, seed: int = 1, *, lookups: int = 500, loss: float = 0.0,
                 crash_fraction: float = 0.0, idle_minutes: int = 0,
                 join_spacing: float = 0.5, backend=None,
                 progress: bool = False) -> ScenarioResult:
    """Run the scenario with ``backend`` (default: ours) and return what it measured;
    ``progress`` prints each phase's wall time to stderr."""
    backend = OursBackend() if backend is None else backend
    return run_virtual(_scenario(backend, n, seed, lookups, loss, crash_fraction,
                                 idle_minutes, join_spacing, progress))
