"""Run a ``Scenario`` (``simulations.scenario``) on the simulator and measure it (issue 11).

``run_scenario(scenario, seed, progress=None) -> RunResult``
    Builds the network from the seed, runs the ``dht`` engine - the production DHT core and
    driver (``discovery.core.DhtCore`` behind ``discovery.driver.DhtDriver``, composed as
    ``open_dht`` does) on every simulated host - through the phases join, publish,
    workload (lookups, churn) and idle on the virtual clock (``run_virtual``), and returns
    what it measured. ``progress(Progress)`` is called about once per simulated second
    (wall time is the caller's business); it must not touch the simulation.

Reproducibility: every random choice - identities, the cores' draws, the network's jitter
and loss, the NAT mix, the lookups, churn - is drawn from ``random.Random(seed)`` in the
order the run makes them, nothing iterates a set or reads a wall clock, so the same
scenario and seed give the same ``RunResult`` (the report built from it is byte-identical).

Measured (all on the simulated clock, in ``bucket``-second buckets from the start):
- every lookup: start, outcome (``found``, ``stale`` = another record of that peer than
  the one it had published when the lookup started (older, or one published meanwhile),
  ``not_found``, ``timeout``, ``wrong`` = someone else's record; ``aborted`` when its
  source left or crashed before the answer: not counted in success rates), latency;
- every datagram sent, by message kind (``datagram_kind``: the first byte picks the
  protocol, the DHT's own header its message), counted where the drivers send, so the
  total equals ``SimNetwork.stats.sent``;
- routing-table health at each bucket boundary over the live server nodes: mean and
  minimum table size, fraction of entries pointing at a departed node, fraction verified;
- the partition (when it started and healed, how many nodes it cut off);
- the network's and the NAT boxes' counters, the DHT cores' ``stats`` summed, join and
  publish outcomes, churn events.

Extension point: ``ENGINES`` maps a scenario's ``engine`` to the coroutine that runs it:
``dht`` (here) and ``node`` (``simulations.node_engine``: full Nodes, for the NAT matrix
and mobility; it reuses ``_Measure`` and ``_TapEndpoint`` and fills ``RunResult.paths``,
``moves`` and ``node_stats``).
"""

from __future__ import annotations

import asyncio
import gc
import random
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, fields
from typing import Any

from discovery.announcements import AnnouncementValidator
from discovery.core import DhtConfig, DhtCore
from discovery.driver import DhtDriver
from discovery.errors import DhtTimeout, DiscoveryError, RecordNotFound
from discovery.wire import FIND_NODE, FIND_VALUE, PING, PROVE, REPLY_BIT, STORE
from simulations.nat import Nat
from simulations.network import SimHost, SimNetwork
from simulations.scenario import Scenario
from simulations.vtime import current_clock, run_virtual
from stack.base.identity import Identity
from stack.base.net import Address, DatagramEndpoint, EndpointStats
from stack.base.port import DHT_BYTE, P2P_FIRST_BYTES, PortDemux
from stack.base.records import sign_announcement

__all__ = ["run_scenario", "RunResult", "Progress", "LookupSample", "datagram_kind",
           "ENGINES", "DHT_PORT"]

DHT_PORT = 4001
_DHT_PREFIX = bytes([DHT_BYTE])
OUTCOMES = ("found", "stale", "not_found", "timeout", "wrong", "aborted")

_DHT_KINDS = {PING: "PING", FIND_NODE: "FIND_NODE", FIND_VALUE: "FIND_VALUE", STORE: "STORE",
              PROVE: "PROVE"}
_DHT_KINDS.update({k | REPLY_BIT: f"{v} reply" for k, v in _DHT_KINDS.items() if k != PROVE})


def datagram_kind(data: bytes) -> str:
    """The message kind of a datagram on a node's port (DESIGN.md section 3's demux):
    DHT messages by their kind (``FIND_NODE``, ``FIND_NODE reply``, ``PROVE``, ...), else
    ``STUN``, ``QUIC``, ``p2p 0xNN`` (another of our protocols) or ``other``."""
    if not data:
        return "other"
    first = data[0]
    if first == DHT_BYTE and len(data) > 2:
        # 0x04 || msgpack array header (one byte: fixarray) || kind (fixint, or 0xcc NN)
        kind = data[2]
        if kind == 0xCC and len(data) > 3:
            kind = data[3]
        return _DHT_KINDS.get(kind, "DHT other")
    if first in P2P_FIRST_BYTES:
        return f"p2p 0x{first:02x}"
    if first < 4 and data[4:8] == b"\x21\x12\xa4\x42":
        return "STUN"
    if first & 0x40:
        return "QUIC"
    return "other"


@dataclass(frozen=True, slots=True)
class Progress:
    """What the run reports as it goes (``progress`` callback)."""

    phase: str
    sim_time: float        # simulated seconds since the start
    planned: float         # simulated seconds the whole run is planned to take
    datagrams: int         # sent so far (the simulator's events)
    live_nodes: int


@dataclass(frozen=True, slots=True)
class LookupSample:
    start: float              # simulated seconds since the start of the run
    outcome: str              # one of OUTCOMES
    latency: float | None     # simulated seconds, for found/stale


@dataclass
class RunResult:
    """What one run measured (``simulations.report`` turns it into figures)."""

    scenario: Scenario
    seed: int
    net: SimNetwork
    # name, start, end (simulated seconds), datagrams sent during it
    phases: list[tuple[str, float, float, int]] = field(default_factory=list)
    lookups: list[LookupSample] = field(default_factory=list)
    # bucket index -> kind -> datagrams sent in that bucket
    datagrams: dict[int, Counter[str]] = field(default_factory=dict)
    datagrams_total: int = 0
    # one sample per bucket boundary: time, live servers, mean/min size, dead, verified
    routing: list[dict[str, float]] = field(default_factory=list)
    joins: Counter[str] = field(default_factory=Counter)       # ok / failed
    publishes: Counter[str] = field(default_factory=Counter)   # ok / failed
    replicas: list[int] = field(default_factory=list)          # per successful publish
    churn: Counter[str] = field(default_factory=Counter)       # join / leave / crash / rejoin
    # the partition: simulated start and end (None: not healed), nodes cut off
    partition: tuple[float, float | None, int] | None = None
    dht_stats: Counter[str] = field(default_factory=Counter)   # DhtCore.stats, summed
    nat_kinds: Counter[str] = field(default_factory=Counter)   # initial nodes per kind
    nat_stats: Counter[str] = field(default_factory=Counter)   # NatStats, summed
    endpoint_sent: int = 0        # EndpointStats.sent over every endpoint, for checking
    nodes_started: int = 0
    live_at_end: int = 0
    sim_time: float = 0.0
    # the node engine (simulations.node_engine): one entry per matrix connect (dialer and
    # target kind, path, times) and per move (how, kind, reconnect / found-again times)
    paths: list[dict[str, Any]] = field(default_factory=list)
    moves: list[dict[str, Any]] = field(default_factory=list)
    # the room (``[rooms]``): admissions, the rendezvous's crash, echoes after it
    room: dict[str, Any] = field(default_factory=dict)
    node_stats: Counter[str] = field(default_factory=Counter)  # migration, push, probes


class _TapEndpoint:
    """A ``DatagramEndpoint`` that counts what passes by kind and bucket, then sends."""

    __slots__ = ("_inner", "_measure", "stats")

    def __init__(self, inner: DatagramEndpoint, measure: _Measure) -> None:
        self._inner = inner
        self._measure = measure
        self.stats: EndpointStats = inner.stats

    @property
    def local_address(self) -> Address:
        return self._inner.local_address

    def send(self, data: bytes, addr: Address) -> None:
        self._measure.count(data)
        self._inner.send(data, addr)

    def close(self) -> None:
        self._inner.close()


class _Measure:
    """The counters every engine shares: datagrams by kind and bucket."""

    def __init__(self, result: RunResult, loop: asyncio.AbstractEventLoop,
                 bucket: float) -> None:
        self.result = result
        self._time = loop.time
        self._bucket = bucket
        self._kinds: dict[bytes, str] = {}  # a DHT datagram's first 4 bytes -> its kind

    def count(self, data: bytes) -> None:
        if data[:1] == _DHT_PREFIX:  # its kind is in the first 4 bytes: cache by them
            head = data[:4]
            kind = self._kinds.get(head)
            if kind is None:
                kind = self._kinds[head] = datagram_kind(data)
        else:
            kind = datagram_kind(data)
        index = int(self._time() // self._bucket)
        per = self.result.datagrams.get(index)
        if per is None:
            per = self.result.datagrams[index] = Counter()
        per[kind] += 1
        self.result.datagrams_total += 1


@dataclass
class _Peer:
    index: int
    identity: Identity
    host: SimHost
    ip: str              # the address it binds (private behind a NAT)
    public_ip: str       # where the world reaches it (its NAT box's address)
    kind: str            # NAT kind
    server: bool
    driver: DhtDriver | None = None
    tap: _TapEndpoint | None = None
    state: str = "new"   # new / live / left / crashed
    seq: int = 0
    record: bytes | None = None
    records: set[bytes] = field(default_factory=set)  # membership only, never iterated
    incarnation: int = 0


def _ip(i: int) -> str:
    """A public address per host (10.0.0.1 ...), enough for a million hosts."""
    return f"10.{i // 62500}.{(i // 250) % 250}.{i % 250 + 1}"


class _DhtEngine:
    """The ``dht`` engine: DHT core + driver per host (see the module docstring)."""

    def __init__(self, scenario: Scenario, seed: int,
                 progress: Callable[[Progress], None] | None) -> None:
        self.sc = scenario
        self.seed = seed
        self.rng = random.Random(seed)
        self.progress = progress
        net_spec = scenario.network
        self.net = SimNetwork(random.Random(self.rng.getrandbits(64)),
                              latency=net_spec.latency, jitter=net_spec.jitter,
                              loss=net_spec.loss)
        # One stream for every simulated node's own draws (txids, nonces, refresh
        # jitter), taken in event order, so a run is as reproducible as with one per
        # node: a Mersenne Twister each would be 2.5 KB per node and per incarnation.
        self.nodes_rng = random.Random(self.rng.getrandbits(64))
        self.clock = current_clock()
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self.result = RunResult(scenario, seed, self.net)
        self.measure = _Measure(self.result, self.loop, scenario.measure.bucket)
        self.validator = AnnouncementValidator()
        self.peers: list[_Peer] = []
        self.live: list[int] = []          # indexes of live peers, in order of going live
        self.live_pos: dict[int, int] = {}  # index -> position in self.live
        self.live_server_addrs: set[Address] = set()
        self.nats: list[Nat] = []
        self.taps: list[_TapEndpoint] = []  # every socket ever opened, for its counters
        self.phase = "setup"
        self.planned = 0.0
        self.end = 0.0  # when the workload phase ends
        self.background: list[asyncio.Future[None]] = []  # cancelled at the end of the run
        self.config = DhtConfig()
        self.client_config = DhtConfig(server=False)

    def now(self) -> float:
        return self.loop.time() - self.t0

    # ---- population ---------------------------------------------------------------------

    def _kinds_for(self, count: int) -> list[str]:
        """``count`` NAT kinds in the scenario's proportions (largest remainder), in a
        seeded order; node 0 is always public."""
        mix = self.sc.network.nat
        exact = {k: f * count for k, f in mix.items()}
        counts = {k: int(v) for k, v in exact.items()}
        short = count - sum(counts.values())
        for k in sorted(exact, key=lambda k: (counts[k] - exact[k], k))[:short]:
            counts[k] += 1
        kinds = [k for k in mix for _ in range(counts[k])]
        self.rng.shuffle(kinds)
        if kinds and kinds[0] != "none":
            if "none" in kinds:
                j = kinds.index("none")
                kinds[0], kinds[j] = kinds[j], kinds[0]
            else:
                kinds[0] = "none"  # the founder must be reachable
        return kinds

    def _add_peer(self, kind: str) -> _Peer:
        i = len(self.peers)
        public_ip = _ip(i)
        if kind == "none":
            host, ip = self.net.add_host(public_ip), public_ip
        else:
            site = self.net.add_nat_kind(public_ip, kind)
            assert isinstance(site, Nat)
            self.nats.append(site)
            ip = "192.168.1.2"
            host = site.add_host(ip)
        peer = _Peer(i, Identity.from_rng(self.rng), host, ip, public_ip, kind,
                     server=kind == "none")
        self.peers.append(peer)
        return peer

    async def _start(self, peer: _Peer) -> None:
        """A new process on ``peer``'s host: an empty DHT node (``open_dht``'s composition,
        with the tap between the driver and the socket)."""
        demux = PortDemux()
        endpoint = await peer.host.bind((peer.ip, DHT_PORT), demux)
        tap = _TapEndpoint(endpoint, self.measure)
        core = DhtCore(peer.identity, self.validator, self.nodes_rng,
                       self.config if peer.server else self.client_config)
        driver = DhtDriver(core, tap, self.clock)
        demux.register_p2p(DHT_BYTE, driver.receive_batch)
        peer.driver, peer.tap = driver, tap
        self.taps.append(tap)
        peer.incarnation += 1
        self.result.nodes_started += 1

    def _go_live(self, peer: _Peer) -> None:
        peer.state = "live"
        self.live_pos[peer.index] = len(self.live)
        self.live.append(peer.index)
        if peer.server:
            self.live_server_addrs.add((peer.public_ip, DHT_PORT))

    def _go_away(self, peer: _Peer, state: str) -> None:
        """Take ``peer`` out of the live set (O(1): the last live peer takes its place)."""
        pos = self.live_pos.pop(peer.index)
        last = self.live.pop()
        if last != peer.index:
            self.live[pos] = last
            self.live_pos[last] = pos
        peer.state = state
        self.live_server_addrs.discard((peer.public_ip, DHT_PORT))
        self._retire(peer)

    def _retire(self, peer: _Peer) -> None:
        """The process is gone: keep its counters, stop its timers."""
        if peer.driver is not None:
            self.result.dht_stats.update(peer.driver.core.stats)
            peer.driver.close()
            peer.driver = None

    async def _join(self, peer: _Peer) -> bool:
        assert peer.driver is not None
        if peer.index == 0:
            self._go_live(peer)
            self.result.joins["ok"] += 1
            return True
        try:
            await peer.driver.bootstrap([(self.peers[0].public_ip, DHT_PORT)], timeout=120)
        except DiscoveryError:
            self.result.joins["failed"] += 1
            return False
        self.result.joins["ok"] += 1
        self._go_live(peer)
        return True

    async def _publish(self, peer: _Peer) -> None:
        if peer.driver is None or peer.state != "live":
            return
        peer.seq += 1
        record = sign_announcement(peer.identity, peer.seq,
                                   [f"/ip4/{peer.public_ip}/udp/{DHT_PORT}/quic-v1"],
                                   self.clock.now(), nonce=self.nodes_rng.randbytes(16))
        peer.records.add(record)
        try:
            stored = await peer.driver.publish(record, timeout=120)
        except DiscoveryError:
            self.result.publishes["failed"] += 1
            return
        if peer.state == "live":  # it may have gone while the STOREs were out
            peer.record = record
        self.result.publishes["ok"] += 1
        self.result.replicas.append(stored)

    async def _join_and_publish(self, peer: _Peer) -> None:
        await self._start(peer)
        if await self._join(peer) and self.sc.workload.publish:
            await self._publish(peer)

    # ---- phases -------------------------------------------------------------------------

    async def _phase(self, name: str, work: Coroutine[Any, Any, Any]) -> None:
        self.phase = name
        start, sent = self.now(), self.net.stats.sent
        await work
        self.result.phases.append((name, start, self.now(), self.net.stats.sent - sent))

    async def run(self) -> RunResult:
        sc = self.sc
        n = sc.network.nodes
        join_time = max(0, n - 1) * sc.join.spacing + sc.join.settle
        publish_time = (sc.workload.publish_spread + sc.join.settle) if sc.workload.publish else 0
        self.planned = join_time + publish_time + sc.duration + sc.idle
        kinds = self._kinds_for(n)
        self.result.nat_kinds.update(kinds)
        initial = [self._add_peer(kind) for kind in kinds]
        self.background += [asyncio.ensure_future(self._tick()),
                            asyncio.ensure_future(self._sample_routing())]
        try:
            await self._phase("join", self._join_all(initial))
            if sc.workload.publish:
                await self._phase("publish", self._publish_all(initial))
            await self._phase("workload", self._workload())
            if sc.idle:
                await self._phase("idle", asyncio.sleep(sc.idle))
        finally:
            for task in self.background:
                task.cancel()
        self._finish()
        return self.result

    async def _join_all(self, peers: list[_Peer]) -> None:
        spacing = self.sc.join.spacing

        async def one(peer: _Peer) -> None:
            await asyncio.sleep(peer.index * spacing)
            await self._start(peer)
            await self._join(peer)

        await asyncio.gather(*(one(p) for p in peers))
        await asyncio.sleep(self.sc.join.settle)

    async def _publish_all(self, peers: list[_Peer]) -> None:
        spread = self.sc.workload.publish_spread
        delays = [self.rng.uniform(0, spread) for _ in peers]

        async def one(peer: _Peer, delay: float) -> None:
            await asyncio.sleep(delay)
            await self._publish(peer)

        await asyncio.gather(*(one(p, d) for p, d in zip(peers, delays, strict=True)))
        await asyncio.sleep(self.sc.join.settle)

    async def _workload(self) -> None:
        sc = self.sc
        end = self.end = self.now() + sc.duration
        tasks: list[asyncio.Future[None]] = []
        processes: list[tuple[float, Callable[[], None]]] = [
            (sc.workload.lookups_per_minute, lambda: tasks.append(
                asyncio.ensure_future(self._lookup()))),
            (sc.churn.joins_per_minute, lambda: tasks.append(
                asyncio.ensure_future(self._churn_join()))),
            (sc.churn.leaves_per_minute, lambda: self._depart("left", tasks)),
            (sc.churn.crashes_per_minute, lambda: self._depart("crashed", tasks)),
        ]

        async def poisson(rate: float, fire: Callable[[], None]) -> None:
            gen = random.Random(self.rng.getrandbits(64))  # one stream per process
            while True:
                gap = gen.expovariate(rate / 60.0)
                if self.now() + gap >= end:
                    return
                await asyncio.sleep(gap)
                fire()

        if sc.partition.fraction and sc.partition.at < sc.duration:
            # in the background: it may heal after the workload, in the idle phase
            self.background.append(asyncio.ensure_future(self._partition()))
        await asyncio.gather(*(poisson(rate, fire) for rate, fire in processes if rate > 0))
        await asyncio.sleep(max(0.0, end - self.now()))
        # lookups, joins and rejoins still out finish (or time out) here; a rejoin that
        # would come after the end is not planned
        pending = [t for t in tasks if not t.done()]
        if pending:
            await asyncio.gather(*pending)

    # ---- workload and churn -----------------------------------------------------------

    async def _partition(self) -> None:
        """Cut ``fraction`` of the live nodes (never node 0) off, then heal."""
        spec = self.sc.partition
        await asyncio.sleep(spec.at)
        candidates = [i for i in self.live if i != 0]
        cut = self.rng.sample(candidates, min(len(candidates),
                                              round(spec.fraction * len(self.live))))
        self.net.partition({self.peers[i].public_ip: 1 for i in cut})
        start = self.now()
        self.result.partition = (start, None, len(cut))
        if spec.heal_after:
            await asyncio.sleep(spec.heal_after)
            self.net.heal()
            self.result.partition = (start, self.now(), len(cut))

    def _random_live(self, *, exclude: int | None = None, published: bool = False,
                     churnable: bool = False) -> _Peer | None:
        live = self.live
        for _ in range(8):  # a few draws, then give up: the network is nearly empty
            if not live:
                return None
            peer = self.peers[live[self.rng.randrange(len(live))]]
            if peer.index == exclude or (published and peer.record is None) \
                    or (churnable and peer.index == 0):
                continue
            return peer
        return None

    async def _lookup(self) -> None:
        start = self.now()
        src = self._random_live()
        dst = self._random_live(exclude=None if src is None else src.index, published=True)
        if src is None or dst is None or src.driver is None:
            return
        incarnation = src.incarnation
        current = dst.record
        try:
            record = await src.driver.resolve(dst.identity.peer_id,
                                              timeout=self.sc.workload.lookup_timeout)
        except RecordNotFound:
            outcome, record = "not_found", None
        except DhtTimeout:
            outcome, record = "timeout", None
        else:
            outcome = ("found" if record == current else
                       "stale" if record in dst.records else "wrong")
        if src.incarnation != incarnation or src.state != "live":
            outcome = "aborted"
        latency = self.now() - start if record is not None and outcome != "aborted" else None
        self.result.lookups.append(LookupSample(start, outcome, latency))

    async def _churn_join(self) -> None:
        peer = self._add_peer(self._kinds_one())
        self.result.churn["join"] += 1
        await self._join_and_publish(peer)

    def _kinds_one(self) -> str:
        mix = self.sc.network.nat
        kinds = list(mix)
        return self.rng.choices(kinds, weights=[mix[k] for k in kinds])[0]

    def _depart(self, how: str, tasks: list[asyncio.Future[None]]) -> None:
        peer = self._random_live(churnable=True)
        if peer is None:
            return
        self.result.churn["leave" if how == "left" else "crash"] += 1
        if how == "crashed":
            peer.host.crash()   # drops everything from now on, in flight to it too
        self._go_away(peer, how)
        if how == "left" and peer.tap is not None:
            peer.tap.close()    # the process closed its socket
            peer.tap = None
        if self.sc.churn.rejoin_after and self.now() + self.sc.churn.rejoin_after < self.end:
            tasks.append(asyncio.ensure_future(self._rejoin(peer)))

    async def _rejoin(self, peer: _Peer) -> None:
        await asyncio.sleep(self.sc.churn.rejoin_after)
        if peer.tap is not None:
            peer.tap.close()
            peer.tap = None
        peer.host.restart()
        self.result.churn["rejoin"] += 1
        await self._join_and_publish(peer)

    # ---- measuring ----------------------------------------------------------------------

    async def _tick(self) -> None:
        if self.progress is None:
            return  # progress only reads: leaving it out changes no outcome
        while True:
            self.progress(Progress(self.phase, self.now(), self.planned, self.net.stats.sent,
                                   len(self.live)))
            await asyncio.sleep(1.0)

    async def _sample_routing(self) -> None:
        bucket = self.sc.measure.bucket
        while True:
            await asyncio.sleep(bucket)
            self.result.routing.append(self._routing_health())

    def _routing_health(self) -> dict[str, float]:
        sizes: list[int] = []
        dead = verified = entries = 0
        alive = self.live_server_addrs
        for index in self.live:
            peer = self.peers[index]
            if not peer.server or peer.driver is None:
                continue
            table = peer.driver.core.table
            sizes.append(len(table))
            for contact in table:
                entries += 1
                if contact.addr not in alive:
                    dead += 1
                if contact.verified:
                    verified += 1
        return {
            "time": round(self.now(), 9),
            "live_servers": len(sizes),
            "mean_size": sum(sizes) / len(sizes) if sizes else 0.0,
            "min_size": min(sizes) if sizes else 0,
            "dead_fraction": dead / entries if entries else 0.0,
            "verified_fraction": verified / entries if entries else 0.0,
        }

    def _finish(self) -> None:
        r = self.result
        for peer in self.peers:
            self._retire(peer)
        r.live_at_end = len(self.live)
        r.endpoint_sent = sum(tap.stats.sent for tap in self.taps)
        for tap in self.taps:  # the network no longer reaches the cores: they can go
            tap.close()
        for nat in self.nats:
            for f in fields(nat.stats):
                r.nat_stats[f.name] += getattr(nat.stats, f.name)
        r.sim_time = self.now()


async def _dht_engine(scenario: Scenario, seed: int,
                      progress: Callable[[Progress], None] | None) -> RunResult:
    return await _DhtEngine(scenario, seed, progress).run()


async def _node_engine(scenario: Scenario, seed: int,
                       progress: Callable[[Progress], None] | None) -> RunResult:
    # imported here: node_engine builds on this module, and a dht run needs no Node
    from simulations.node_engine import run_node_engine

    return await run_node_engine(scenario, seed, progress)


ENGINES: dict[str, Callable[[Scenario, int, Callable[[Progress], None] | None],
                            Coroutine[Any, Any, RunResult]]] = {"dht": _dht_engine,
                                                                "node": _node_engine}


def run_scenario(scenario: Scenario, seed: int | None = None,
                 progress: Callable[[Progress], None] | None = None) -> RunResult:
    """Run ``scenario`` with ``seed`` (default: the scenario's) on a fresh virtual loop."""
    engine = ENGINES[scenario.engine]
    result = run_virtual(engine(scenario, scenario.seed if seed is None else seed, progress))
    # The simulated nodes are unreachable now but held in reference cycles (operations
    # and their core): collect them before the caller builds a report, which then reuses
    # their memory rather than adding to the peak.
    gc.collect()
    return result

