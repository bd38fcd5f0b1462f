"""Benchmark: what an admission into a room costs, beside its baselines, in the same run.

1. Core (CPU): a full admission between ``NewcomerSession`` and ``InviterSession`` in one
   process (PAKE1..ADMIT: SPAKE2 both sides, key confirmation, two sealed boxes, the
   newcomer's signed proof, the signed admission and its checks), alternating with the
   bare SPAKE2 exchange of the ``spake2`` package (both sides' start + finish) as the
   baseline. Process CPU time; the ratio is what our exchange adds around SPAKE2.
2. 127.0.0.1 (wall): three nodes in one process (rendezvous R, inviter A, newcomer B);
   per round, A holds an invite slot on R and B joins through R on an open connection
   (the four messages cross R: two round trips B-R-A), alternating with the baseline of
   two echo round trips B-R on the same connection. The ratio is join / 2 x echo.

    python benchmarks/rooms.py [--rounds 7] [--admissions 50] [--joins 10]
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

import spake2  # noqa: E402
import structlog  # noqa: E402

from rooms.admission import InviterSession, NewcomerSession, ReplayGuard  # noqa: E402
from rooms.invites import InviteBook  # noqa: E402
from rooms.membership import sign_member  # noqa: E402
from rooms.names import room_id  # noqa: E402
from stack.base.identity import Identity  # noqa: E402
from stack.node import Node  # noqa: E402
from stack.node.config import NodeConfig  # noqa: E402
from stack.node.protocols.rendezvous import (announce, host_invite, join,  # noqa: E402
                                             serve_invite)

RID = room_id("bench")


def core_admissions(n: int, inviter: Identity, newcomer: Identity) -> float:
    book, guard = InviteBook(max_open=n + 1), ReplayGuard()
    start = time.process_time()
    for i in range(n):
        invite = book.create(RID, 1000.0 + i)
        nc = NewcomerSession(newcomer, RID, invite.code, 1000.0 + i)
        inv = InviterSession(inviter, book, guard, nc.outgoing()[0], 1000.0 + i)
        for _ in range(2):
            for m in inv.outgoing():
                nc.receive(m, 1000.0 + i)
            for m in nc.outgoing():
                inv.receive(m, 1000.0 + i)
        assert nc.done and inv.done and nc.result is not None
    return n / (time.process_time() - start)


def bare_spake2(n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        a, b = spake2.SPAKE2_A(b"1-acorn-acorn"), spake2.SPAKE2_B(b"1-acorn-acorn")
        ma, mb = a.start(), b.start()
        assert a.finish(mb) == b.finish(ma)
    return n / (time.process_time() - start)


async def network(rounds: int, joins: int) -> list[tuple[float, float]]:
    tmp = Path(tempfile.mkdtemp())
    nodes = []
    for name, extra in (("r", {"rendezvous": True}), ("a", {}), ("b", {})):
        node = Node(NodeConfig(data_dir=tmp / name, listen=("127.0.0.1", 0), tls=False,
                               dht=False, dial_back=False, **extra))
        await node.start()
        nodes.append(node)
    r, a, b = nodes
    rv = f"/ip4/127.0.0.1/udp/{r.udp_address[1]}/quic-v1/p2p/{r.peer_id}"
    try:
        a_conn, b_conn = await a.connect(rv), await b.connect(rv)
        await announce(a_conn, sign_member(a.identity, RID, [], a.clock.now()), 10)
        book, guard = InviteBook(max_open=rounds * joins + 1), ReplayGuard()
        out = []
        for _ in range(rounds):
            join_t, echo_t = [], []
            for _ in range(joins):
                hosted = await host_invite(a_conn, RID, 10)
                invite = book.create(RID, a.clock.now(), number=hosted.number)
                served = asyncio.ensure_future(serve_invite(
                    hosted, identity=a.identity, book=book, guard=guard, room_id=RID,
                    clock=a.clock))
                t0 = time.perf_counter()
                await join(b_conn, identity=b.identity, room_id=RID, code=invite.code,
                           clock=b.clock, timeout=10)
                join_t.append(time.perf_counter() - t0)
                await served
                t0 = time.perf_counter()
                for _ in range(2):
                    await b.echo(b_conn, b"x" * 64)
                echo_t.append(time.perf_counter() - t0)
            out.append((statistics.median(join_t), statistics.median(echo_t)))
        return out
    finally:
        for node in reversed(nodes):
            await node.stop(grace=0.1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--admissions", type=int, default=50)
    p.add_argument("--joins", type=int, default=10)
    args = p.parse_args()
    logging.disable(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    inviter, newcomer = Identity.generate(), Identity.generate()
    ours, base = [], []
    for _ in range(args.rounds):
        base.append(bare_spake2(args.admissions))
        ours.append(core_admissions(args.admissions, inviter, newcomer))
    print("core, exchanges/s (CPU time)")
    print(f"  bare SPAKE2 exchange : {' '.join(f'{x:.0f}' for x in base)}"
          f"  median {statistics.median(base):.0f}")
    print(f"  p2pstack admission   : {' '.join(f'{x:.0f}' for x in ours)}"
          f"  median {statistics.median(ours):.0f}")
    print(f"  ratio ours/bare      : {statistics.median(ours) / statistics.median(base):.2f}")
    rows = asyncio.run(network(args.rounds, args.joins))
    joins = [j * 1000 for j, _ in rows]
    echoes = [e * 1000 for _, e in rows]
    print("127.0.0.1, ms (wall, median per round)")
    print(f"  2 echo round trips B-R : {' '.join(f'{x:.1f}' for x in echoes)}"
          f"  median {statistics.median(echoes):.1f}")
    print(f"  join through R         : {' '.join(f'{x:.1f}' for x in joins)}"
          f"  median {statistics.median(joins):.1f}")
    print(f"  ratio join/echoes      : {statistics.median(joins) / statistics.median(echoes):.2f}")


if __name__ == "__main__":
    main()
