"""Benchmark: a room's shared document between members: the core in one process, and
(``--network``) the sync protocol between real nodes on 127.0.0.1.

Per round, alternating:

1. Core: ``--members`` ``RoomDoc``s; member i sets a key (``RoomDoc.set``, which returns
   its update) and every other member applies it (``RoomDoc.apply``), round-robin over
   the members, ``--updates`` updates. Updates/s counts set + its N-1 applies; bytes per
   update is the mean update size.
2. Baseline: bare pycrdt, the same shape: ``Map[key] = value`` + ``get_update(before)``
   on one ``Doc`` and ``apply_update`` on the N-1 others.
3. With ``--network``: ``--members`` nodes in this process on 127.0.0.1 (QUIC), admitted
   to one room through a rendezvous (seed 002's way: the admin invites each, the others
   verify it and connect), in-memory stores (no state file: its fsync is not what this
   measures). Member i runs ``room set`` round-robin (``roomsync.set``), in two modes:
   *burst* (every set, then the loop runs the pushes: they batch up to 256 updates) and
   *paced* (the loop runs after each set, so pushes go out as the members keep setting);
   the clock stops when every member holds every update (counted from
   ``RoomStateChanged`` events); rates in wall time and per CPU second of the process
   (the core and the baseline are CPU-bound loops timed in CPU time). Updates/s as
   above; bytes per update is what the pushes carried per update and receiver; pushes
   per update shows the batching. While the room fills, each join is timed from the
   code typed to the newcomer admitted and to the newcomer holding the room's state (a
   key the admin set first: issue 13's "admission time"). All nodes and the pycrdt
   baseline share one process (and 2 cores with whatever else runs): read the ratio.

    python benchmarks/roomstate.py [--rounds 5] [--members 10] [--updates 2000] [--network]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402
from pycrdt import Doc, Map  # noqa: E402

from rooms.names import room_id  # noqa: E402
from rooms.state import RoomDoc  # noqa: E402


def key(n: int, unique: bool) -> str:
    """The key of update ``n``: 50 keys overwritten in turn, or one key per update (the
    network mode counts arrivals, and concurrent writes to one key may hide one)."""
    return f"k{n}" if unique else f"k{n % 50}"


def core(members: int, updates: int, unique: bool = False) -> tuple[float, float]:
    docs = [RoomDoc(room_id("bench")) for _ in range(members)]
    size = 0
    start = time.process_time()   # CPU time: the machine is shared
    for n in range(updates):
        i = n % members
        update = docs[i].set(key(n, unique), f"value {n}")
        size += len(update)
        for j, doc in enumerate(docs):
            if j != i:
                doc.apply(update)
    elapsed = time.process_time() - start
    assert all(d.items() == docs[0].items() for d in docs)
    return updates / elapsed, size / updates


def baseline(members: int, updates: int, unique: bool = False) -> tuple[float, float]:
    docs: list[Doc[Any]] = [Doc() for _ in range(members)]
    maps: list[Map[Any]] = [d.get("state", type=Map) for d in docs]
    size = 0
    start = time.process_time()
    for n in range(updates):
        i = n % members
        before = docs[i].get_state()
        maps[i][key(n, unique)] = f"value {n}"
        update = docs[i].get_update(before)
        size += len(update)
        for j, doc in enumerate(docs):
            if j != i:
                doc.apply_update(update)
    elapsed = time.process_time() - start
    return updates / elapsed, size / updates


class Room:
    """``members`` started nodes in one room (the first its admin), plus the rendezvous."""

    async def start(self, members: int, work: Path) -> None:
        from stack.base.identity import Identity
        from stack.node import Node, RoomAdmitted
        from stack.node.config import NodeConfig
        from stack.node.events import RoomMemberVerified, RoomStateChanged
        from stack.store.stores import Stores

        def node(name: str, **extra: Any) -> Node:
            return Node(NodeConfig(data_dir=work / name, listen=("127.0.0.1", 0), tls=False,
                                   dht=False, dial_back=False, identity=Identity.generate(),
                                   stores=Stores.memory(), **extra))

        # NodeRooms dials the rendezvous afresh for every invite and keeps each
        # connection: the admin of a room of 10 holds more than the default 8 to it
        self.rendezvous = node("r", rendezvous=True, max_connections_per_peer=64)
        self.nodes = [node(f"m{i}", max_connections_per_peer=64) for i in range(members)]
        for n in (self.rendezvous, *self.nodes):
            await n.start()
        rv = f"/ip4/127.0.0.1/udp/{self.rendezvous.udp_address[1]}/quic-v1/p2p/" \
             f"{self.rendezvous.peer_id}"
        admin = self.nodes[0]
        await admin.rooms.create("bench", rv)
        await admin.roomsync.set("bench", "topic", "set before anyone joined")
        self.joins: list[tuple[float, float]] = []   # (admitted, state synced) seconds
        for i, newcomer in enumerate(self.nodes[1:], 1):
            code = (await admin.rooms.invite("bench"))["code"]
            waiters = [admin.next_event(RoomAdmitted, role="inviter", timeout=30),
                       newcomer.next_event(RoomMemberVerified, peer_id=admin.peer_id,
                                           via="inviter", timeout=30)]
            waiters += [m.next_event(RoomMemberVerified, peer_id=newcomer.peer_id,
                                     via="introduced", timeout=30) for m in self.nodes[1:i]]
            synced = newcomer.next_event(RoomStateChanged, key="topic", timeout=30)
            start = time.perf_counter()   # the code is typed
            await newcomer.rooms.join("bench", code, rv)
            admitted = time.perf_counter() - start
            await synced
            self.joins.append((admitted, time.perf_counter() - start))
            for w in waiters:
                await w
        self.rounds = 0

    async def measure(self, updates: int, paced: bool) -> tuple[float, float, float, float]:
        """One round: (updates/s, per CPU second, bytes per update and receiver, pushes
        per update).
        ``paced``: the loop runs after every set (the pushes compete with the members'
        sets for this one process); else a burst: every set, then the sync."""
        from stack.node.events import RoomStateChanged

        members = len(self.nodes)
        self.rounds += 1
        prefix = f"r{self.rounds}-"
        before = [dict(n.roomsync.stats) for n in self.nodes]

        async def arrivals(index: int) -> None:
            want = sum(1 for n in range(updates) if n % members != index)
            queue = self.nodes[index].events.subscribe()
            got = 0
            while got < want:
                event = await queue.get()
                if isinstance(event, RoomStateChanged) and event.origin is not None \
                        and event.key.startswith(prefix):
                    got += 1
            self.nodes[index].events.unsubscribe(queue)

        counting = [asyncio.ensure_future(arrivals(i)) for i in range(members)]
        await asyncio.sleep(0)   # the counters subscribe before the first set
        start, cpu = time.perf_counter(), time.process_time()
        for n in range(updates):
            await self.nodes[n % members].roomsync.set("bench", prefix + key(n, True),
                                                       f"value {n}")
            if paced:
                await asyncio.sleep(0)   # the pushes run while members keep setting
        async with asyncio.timeout(120):
            await asyncio.gather(*counting)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu

        def sent(what: str) -> int:
            return sum(n.roomsync.stats[what] - b.get(what, 0)
                       for n, b in zip(self.nodes, before, strict=True))

        receivers = updates * (members - 1)
        return (updates / elapsed, updates / cpu, sent("update_bytes_sent") / receivers,
                sent("pushes") / updates)

    async def stop(self) -> None:
        for n in (*self.nodes, self.rendezvous):
            await n.stop(grace=0.1)


def network(args: argparse.Namespace) -> None:
    import tempfile
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors

    async def run() -> None:
        modes: dict[str, list[tuple[float, float, float, float]]] = {"burst": [], "paced": []}
        base, ours = [], []
        room = Room()
        with tempfile.TemporaryDirectory() as work:
            await room.start(args.members, Path(work))
            try:
                for _ in range(args.rounds):
                    for mode, got in modes.items():
                        got.append(await room.measure(args.updates, mode == "paced"))
                    base.append(baseline(args.members, args.updates, unique=True)[0])
                    ours.append(core(args.members, args.updates, unique=True)[0])
            finally:
                await room.stop()
        bmed, cmed = statistics.median(base), statistics.median(ours)
        print(f"{args.members} members on 127.0.0.1, {args.updates} updates x {args.rounds} "
              "rounds (one key per update)")
        for mode, got in modes.items():
            rates = [g[0] for g in got]
            med = statistics.median(rates)
            cpu = statistics.median(g[1] for g in got)
            print(f"room sync, {mode:5} : {med:9.0f} updates/s (each reached "
                  f"{args.members - 1}; rounds " + " ".join(f"{r:.0f}" for r in rates)
                  + f"), {cpu:.0f} per CPU second, "
                  f"{statistics.median(g[2] for g in got):.1f} bytes/update/receiver, "
                  f"{statistics.median(g[3] for g in got):.2f} pushes/update; "
                  f"CPU rate / pycrdt {cpu / bmed:.3f}")
        ms = [(1e3 * a, 1e3 * b) for a, b in room.joins]
        print(f"joins            : code typed -> admitted {statistics.median(a for a, _ in ms):.0f}"
              f" ms, -> the room's state synced {statistics.median(b for _, b in ms):.0f} ms "
              f"(median of {len(ms)}, members 2..{args.members})")
        print(f"rooms.state core : {cmed:9.0f} updates/s (same shape, in process)")
        print(f"bare pycrdt      : {bmed:9.0f} updates/s (same shape, in process)")
        print(f"core / pycrdt    : {cmed / bmed:.2f}")

    asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--network", action="store_true",
                        help="also sync between real nodes on 127.0.0.1 (QUIC)")
    args = parser.parse_args()
    if args.network:
        network(args)
        return
    ours, base, sizes = [], [], []
    for _ in range(args.rounds):
        rate, size = core(args.members, args.updates)
        ours.append(rate)
        sizes.append(size)
        base.append(baseline(args.members, args.updates)[0])
    med, bmed = statistics.median(ours), statistics.median(base)
    print(f"{args.members} members, {args.updates} updates x {args.rounds} rounds")
    print(f"rooms.state core : {med:9.0f} updates/s (each applied by {args.members - 1}), "
          f"{statistics.median(sizes):.1f} bytes/update")
    print(f"bare pycrdt      : {bmed:9.0f} updates/s (same shape)")
    print(f"core / pycrdt    : {med / bmed:.2f}")


if __name__ == "__main__":
    main()
